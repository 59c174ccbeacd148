#!/usr/bin/env bash
# GPU call 30zv: a0f95b6 (the mask GEMV and the rotations into a cache load the step's position before the grid's
# wait). The matmul, dynamic-mask, rope and norm-rope kernel tests; every CUDA executor test; end to end, alternating:
# a3e642d (cheems_prev, the fifteenth build), a0f95b6 (cheems) and a0f95b6 with `--disable-rule mask_values_linear`:
# Doge-320M and Cheems-350M batch 1 after 4096 three times each, Doge-320M batch 16 after 1024 twice (the first two);
# memcheck of the kernel tests and racecheck of the mask GEMV and cache tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T matmul:: dynamic_mask:: rope:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 240 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch args...
  local label=$1 b=$2 p=$3 bt=$4; shift 4
  timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for p in doge-320m cheems-350m; do for r in 1 2 3; do
  run prev cheems_prev $p b1 --prompt 4096 --runs 3
  run new cheems $p b1 --prompt 4096 --runs 3
  run new_unfused_mask cheems $p b1 --prompt 4096 --runs 3 --disable-rule mask_values_linear
done; done
for r in 1 2; do
  run prev cheems_prev doge-320m b16 --batch 16 --prompt 1024 --runs 2
  run new cheems doge-320m b16 --batch 16 --prompt 1024 --runs 2
done
echo "t=$(( $(date +%s) - T0 ))"
timeout 120 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only gemv,mask,rope --jobs 6 --timeout 110 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only mask_gemv,rows_written_into_a_cache --jobs 4 --timeout 90 --out /tmp/rc >> $L/sanitizers.txt 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
