#!/usr/bin/env bash
# GPU call 30zzz: does L2 keep more of what a step reuses when the data read once a step is marked first to leave?
# One experiment binary (308f4df plus `experiment.diff`: CHEEMS_X_DEFINES adds NVRTC defines; X_EVICT loads the
# GEMVs' weights with an evict-first L2 policy and no L1 allocation; X_EVICT_KV the GQA decode's keys and values
# likewise). Alternating: no defines (the landed kernels), X_EVICT, X_EVICT X_EVICT_KV; Doge-320M and Cheems-350M at
# batch 1 after 4096, twice each.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for d in "" "X_EVICT" "X_EVICT X_EVICT_KV"; do for p in doge-320m cheems-350m; do
  CHEEMS_X_DEFINES="$d" timeout 200 .gpu/bin/cheems_x bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label model defines args...
  local label=$1 p=$2 d=$3; shift 3
  CHEEMS_X_DEFINES="$d" timeout 60 .gpu/bin/cheems_x bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'prefill ms', round(d.get('prefill_seconds_median', 0) * 1e3, 3), file=sys.stderr)
" >> $L/e2e_b1.jsonl
}
for r in 1 2; do for p in doge-320m cheems-350m; do
  run base $p "" --prompt 4096 --runs 3
  run evict $p "X_EVICT" --prompt 4096 --runs 3
  run evict_kv $p "X_EVICT X_EVICT_KV" --prompt 4096 --runs 3
done; done
echo "end t=$(( $(date +%s) - T0 ))"
