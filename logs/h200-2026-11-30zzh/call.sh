#!/usr/bin/env bash
# GPU call 30zzh: 30zzg's change again, the keep-window segment reading only the mask values, the attention mask and the
# position, and the rule in separate `_lag` kernels (the other GQA decode kernels are 33b3409's SASS). Every masked-attention kernel test; every CUDA executor
# test; memcheck and racecheck of the carried keep-window and GQA decode tests; end to end, alternating 33b3409
# (cheems_prev, the seventeenth build), this build (cheems) and this build with CHEEMS_CUDA_LAG_KEEP=0: Doge-320M batch
# 1 after 4096 three times, batch 16 after 1024 once, Cheems-350M batch 1 once.
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
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 240 $T masked_attention:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2 3; do
  run prev cheems_prev doge-320m b1 X=1 --prompt 4096 --runs 3
  run new cheems doge-320m b1 X=1 --prompt 4096 --runs 3
  run lag_off cheems doge-320m b1 CHEEMS_CUDA_LAG_KEEP=0 --prompt 4096 --runs 3
done
run prev cheems_prev doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
run new cheems doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
run prev cheems_prev cheems-350m b1 X=1 --prompt 4096 --runs 3
run new cheems cheems-350m b1 X=1 --prompt 4096 --runs 3
echo "t=$(( $(date +%s) - T0 ))"
S="gqa_decode_fully_masked,keep_window_carried,gqa_decode_edge"; R="gqa_decode_fully_masked,keep_window_carried"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $S --jobs 8 --timeout 90 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt
timeout 120 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $R --jobs 8 --timeout 110 --out /tmp/rc >> $L/sanitizers.txt 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
