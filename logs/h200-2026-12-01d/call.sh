#!/usr/bin/env bash
# GPU call 12-01d: the product-key top-k with its loops over a key's elements and over the keys it ranks against kept
# rolled (`#pragma unroll 1`; pk_topk_row_bf16_wide 4,040 → 2,904 SASS instructions), against d724bba (cheems_prev):
# whether the code's size, fetched once a step, sets part of the row-form top-k's 7 µs. The pk_topk and expert_mix
# tests; end to end Cheems-350M at batch 1 after 4096, alternating three times; then both traced.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 > /dev/null &
timeout 240 $T pk_topk expert_mix --test-threads=4 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 150 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'prefill ms', round(d['prefill_seconds_median'] * 1e3, 3), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2 3; do
  run prev cheems_prev cheems-350m b1 X=1 --prompt 4096 --runs 3
  run new cheems cheems-350m b1 X=1 --prompt 4096 --runs 3
done
run traced_prev cheems_prev cheems-350m b1 CHEEMS_CUDA_TRACE=1 --prompt 4096 --runs 3
run traced cheems cheems-350m b1 CHEEMS_CUDA_TRACE=1 --prompt 4096 --runs 3
echo "end t=$(( $(date +%s) - T0 ))"
