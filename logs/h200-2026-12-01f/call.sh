#!/usr/bin/env bash
# GPU call 12-01f: the bf16 GQA decode at Dh 128 with 256 threads a block (8 warps), so that one block step covers a
# 64-key slice and the whole slice loads before the grid's wait, against c9d346b's build (cheems_prev, 128 threads,
# two steps). The masked-attention tests; every CUDA executor test; memcheck of the GQA decode tests and racecheck of
# the absent-slot test. End to end Doge-320M at batch 1 after 4096 alternating three times, at batch 16 after 1024
# once each; Cheems-350M (Dh 64, unchanged kernels) once each; Doge-320M traced.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T masked_attention --test-threads=6 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 200 $TC --test-threads=1 > $L/tests_cuda.log 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
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
  run prev cheems_prev doge-320m b1 X=1 --prompt 4096 --runs 3
  run new cheems doge-320m b1 X=1 --prompt 4096 --runs 3
done
run prev cheems_prev cheems-350m b1 X=1 --prompt 4096 --runs 3
run new cheems cheems-350m b1 X=1 --prompt 4096 --runs 3
run prev cheems_prev doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
run new cheems doge-320m b16 X=1 --batch 16 --prompt 1024 --runs 2
run traced cheems doge-320m b1 CHEEMS_CUDA_TRACE=1 --prompt 4096 --runs 3
echo "t=$(( $(date +%s) - T0 ))"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only gqa_decode,decode_kernels_leave_out_absent_slots --jobs 2 --timeout 90 --out /tmp/mc > $L/memcheck.log 2>&1
echo "memcheck rc=$?" >> $L/memcheck.log; grep -E "job|rc=|FAILED|ERROR" $L/memcheck.log | cut -c1-200
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only decode_kernels_leave_out_absent_slots --jobs 1 --timeout 90 --out /tmp/rc > $L/racecheck.log 2>&1
echo "racecheck rc=$?" >> $L/racecheck.log; grep -E "job|rc=|FAILED|HAZARD" $L/racecheck.log | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
