#!/usr/bin/env bash
# GPU call 30zzj: what a kernel costs a recorded decode step on and off its longest path. The binary was built from
# 33b3409 with one switch added for this call only (not committed; see README.md): CHEEMS_X_EXTRA=off:N issues N
# small kernels (elementwise add of 256 floats) in segments of their own that nothing waits for, on:N a chain of N such
# kernels after every other node of the step. Doge-320M and Cheems-350M, batch 1 after 4096 tokens, two rounds.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in doge-320m cheems-350m; do timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 & done
wait
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
  for p in doge-320m cheems-350m; do
    run base $p X=1
    run off64 $p CHEEMS_X_EXTRA=off:64
    run on64 $p CHEEMS_X_EXTRA=on:64
  done
done
grep -v "^$" $L/e2e.err | tail -12
