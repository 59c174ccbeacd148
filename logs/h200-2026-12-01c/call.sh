#!/usr/bin/env bash
# GPU call 12-01c: the norm GEMV with its first norm weights and scales loaded before grid_entry() (this build)
# against d6717f5 (cheems_prev,
# no NormLinear). The matmul tests; every CUDA executor test. End to end, the two alternating: both models at
# batch 1 after 4096, twice each; Doge-320M at batch 16 after 1024 twice (prev and this build).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 240 $T matmul --test-threads=4 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.log 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 150 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2; do for p in doge-320m cheems-350m; do
  run prev cheems_prev $p b1 X=1 --prompt 4096 --runs 3

  run new cheems $p b1 X=1 --prompt 4096 --runs 3
done; done
for r in 1 2; do
  run prev cheems_prev doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
  run new cheems doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
done
echo "end t=$(( $(date +%s) - T0 ))"
