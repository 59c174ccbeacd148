#!/usr/bin/env bash
# GPU call 30zzc: a recorded decode step's residual norms run inside the GEMV of the linear that reads them first
# (norm_gemv). The matmul and rms_norm kernel tests; every CUDA executor test; memcheck and racecheck of the normed
# GEMV test; end to end, alternating this build (cheems) and this build with CHEEMS_CUDA_NORMED_LINEARS=0 (the
# norms' own kernels): Doge-320M and Cheems-350M batch 1 after 4096, three rounds.
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
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T matmul:: rms_norm:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -14; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label model batch environment args...
  local label=$1 p=$2 bt=$3 e=$4; shift 4
  env $e timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for p in doge-320m cheems-350m; do for r in 1 2 3; do
  run norms_apart $p b1 CHEEMS_CUDA_NORMED_LINEARS=0 --prompt 4096 --runs 3
  run normed $p b1 X=1 --prompt 4096 --runs 3
done; done
echo "t=$(( $(date +%s) - T0 ))"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only norm_gemv --jobs 2 --timeout 90 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt
timeout 150 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only norm_gemv --jobs 2 --timeout 140 --out /tmp/rc >> $L/sanitizers.txt 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
