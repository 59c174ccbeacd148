#!/usr/bin/env bash
# GPU call 30zzk: what the kernels beside a Doge-320M layer's chain cost. The binary was built from 33b3409 with two
# switches added for this call only (not committed; see README.md) that skip launches in decode steps:
# CHEEMS_X_SKIP_QROPE the queries' norm and rotation (a sibling of the keys' and of the mask GEMV), and
# CHEEMS_X_SKIP_MASKGEMV the mask GEMV into the cache (a link before the keep window). Batch 1 after 4096, two rounds.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null
timeout 200 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1
run() {  # label model envs...
  local label=$1 p=$2; shift 2
  env "$@" timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --runs 3 --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'], 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e.jsonl
}
for r in 1 2; do
  run base doge-320m X=1
  run no_qrope doge-320m CHEEMS_X_SKIP_QROPE=1
  run no_maskgemv doge-320m CHEEMS_X_SKIP_MASKGEMV=1
done
grep -v "^$" $L/e2e.err | tail -8
