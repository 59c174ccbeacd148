#!/usr/bin/env bash
# GPU call 30zy: upper bounds of two fusions. The binary was built from efe1590 with two switches that skip kernels
# (not committed; see README.md): the step without the expert weigh kernels, without the residual norm kernels.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in cheems-350m doge-320m; do timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1; done
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
  run base cheems-350m X=1
  run no_weigh cheems-350m CHEEMS_X_SKIP_WEIGH=1
  run no_resnorm cheems-350m CHEEMS_X_SKIP_RESNORM=1
  run base doge-320m X=1
  run no_resnorm doge-320m CHEEMS_X_SKIP_RESNORM=1
done
tail -3 $L/e2e.err
