#!/usr/bin/env bash
# GPU call 12-01k: the build to land (the Dh 64 warpgroup prefill kernel waits for P·V of a tile with the next tile's
# scores, 4 stages): memcheck and racecheck on the tests that run the Dh 64 warpgroup kernel, the CUDA executor tests with
# poisoned buffers (every fixture, f32 and bf16), and ncu of the Dh 64 kernel at 4K, causal and additive, for this
# build and a40229b's (`cheems_base`).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
W=tensor_core_prefill,tensor_core_keep_window_ties
timeout 200 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
  --shard edge_shapes=3 --jobs 8 --timeout 180 --out /tmp/mc > /tmp/memcheck_tc.txt 2>&1
echo "memcheck rc=$?" >> /tmp/memcheck_tc.txt; tail -4 /tmp/memcheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
timeout 260 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
  --shard edge_shapes=4 --jobs 12 --timeout 240 --out /tmp/rc > /tmp/racecheck_tc.txt 2>&1
echo "racecheck rc=$?" >> /tmp/racecheck_tc.txt; tail -4 /tmp/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
cat /tmp/memcheck_tc.txt /tmp/racecheck_tc.txt > $L/sanitizers.txt
LEFT=$(( 430 - ($(date +%s) - T0) ))
CHEEMS_CUDA_POISON=1 timeout $LEFT $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
for b in cheems_base cheems; do
  LEFT=$(( 560 - ($(date +%s) - T0) )); [ $LEFT -lt 30 ] && break
  timeout $LEFT ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats -k regex:'prefill_wgmma_d64_k64$' \
    -c 8 --page details .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --runs 1 > $L/ncu_$b.txt 2>&1
  echo "ncu $b rc=$?"; grep -E "^  masked|Duration|Issue Slots Busy|Warp Cycles Per Issued" $L/ncu_$b.txt | head -40
done
echo "end t=$(( $(date +%s) - T0 ))"
