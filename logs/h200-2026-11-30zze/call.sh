#!/usr/bin/env bash
# GPU call 30zze: upper bounds for taking the keep window and the split combine off a Doge-320M decode step. The
# binary was built from 33b3409 with two switches that skip launches (not committed; see README.md).
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
  run no_keep doge-320m CHEEMS_X_SKIP_KEEP=1
  run no_combine doge-320m CHEEMS_X_SKIP_COMBINE=1
  run no_keep_no_combine doge-320m CHEEMS_X_SKIP_KEEP=1 CHEEMS_X_SKIP_COMBINE=1
done
cat $L/e2e.err | grep -v "^$" | tail -12
