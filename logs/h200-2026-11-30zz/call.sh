#!/usr/bin/env bash
# GPU call 30zz: a recorded decode step's product-key top-k weighs the experts of the mix that reads it (the mix then
# only sums). The pk_topk and expert_mix kernel tests; every CUDA executor test; memcheck and racecheck of those
# kernel tests; end to end, alternating f62c1fb (cheems_prev, the sixteenth build), this build (cheems) and this build
# with CHEEMS_CUDA_WEIGHED_ROUTES=0 (the row form alone): Cheems-350M batch 1 after 4096 three times, batch 16 after
# 1024 twice.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 > /dev/null &
timeout 200 $T pk_topk:: expert_mix:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2 3; do
  run prev cheems_prev cheems-350m b1 X=1 --prompt 4096 --runs 3
  run new cheems cheems-350m b1 X=1 --prompt 4096 --runs 3
  run row_form_only cheems cheems-350m b1 CHEEMS_CUDA_WEIGHED_ROUTES=0 --prompt 4096 --runs 3
done
for r in 1 2; do
  run prev cheems_prev cheems-350m b16 X=1 --batch 16 --prompt 1024 --runs 2
  run new cheems cheems-350m b16 X=1 --batch 16 --prompt 1024 --runs 2
  run row_form_only cheems cheems-350m b16 CHEEMS_CUDA_WEIGHED_ROUTES=0 --batch 16 --prompt 1024 --runs 2
done
echo "t=$(( $(date +%s) - T0 ))"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only pk_topk,expert_mix --jobs 8 --timeout 90 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt
timeout 120 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only pk_topk,expert_mix --jobs 8 --timeout 110 --out /tmp/rc >> $L/sanitizers.txt 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
