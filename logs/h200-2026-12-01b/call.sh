#!/usr/bin/env bash
# GPU call 12-01b: the norm GEMV normalising its rows once a block into shared memory (the build after 12-01a,
# where each warp normalised them itself). The matmul and rms_norm tests (the norm GEMV against the norm and GEMV kernels and
# the CPU); every CUDA executor test (every fixture in f32 and bf16); memcheck of the norm GEMV test. End to end,
# alternating cheems_prev (d6717f5) and cheems (this build): both models at batch 1 after 4096, twice each, and at
# batch 16 after 1024 once each (the norm kernels then cuBLAS); then both traced.
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
timeout 240 $T matmul rms_norm --test-threads=4 > $L/tests_ops.log 2>&1
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
for p in doge-320m cheems-350m; do
  run prev cheems_prev $p b16 X=1 --batch 16 --prompt 1024 --runs 2
  run new cheems $p b16 X=1 --batch 16 --prompt 1024 --runs 2
done
for p in doge-320m cheems-350m; do run traced cheems $p b1 "CHEEMS_CUDA_TRACE=1" --prompt 4096 --runs 3; done
echo "t=$(( $(date +%s) - T0 ))"
for tool in memcheck racecheck; do
  timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool $tool --skip-random --only norm_gemv_matches --jobs 2 --timeout 90 --out /tmp/$tool > $L/$tool.log 2>&1
  echo "$tool rc=$?" >> $L/$tool.log; grep -E "job|rc=|FAILED|ERROR|HAZARD" $L/$tool.log | cut -c1-200
done
echo "end t=$(( $(date +%s) - T0 ))"
