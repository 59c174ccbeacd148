#!/usr/bin/env bash
# GPU call zzl: one output store for both warpgroup forms (the Dh 64 kernel now stages through wg_store, 64 dims at a
# time, as the pipelined kernel does; the pipelined kernels' SASS is unchanged): the masked-attention GPU tests with
# memcheck and racecheck of the tensor-core tests, timing, the CUDA executor tests with poisoned buffers.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
W=tensor_core_prefill_edge,tensor_core_prefill_rows,tensor_core_prefill_large,tensor_core_keep_window_ties
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4 --jobs 6 --timeout 150 --out /tmp/mc > /tmp/memcheck_tc.txt 2>&1
  echo "memcheck rc=$?" >> /tmp/memcheck_tc.txt
  python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4 --jobs 10 --timeout 150 --out /tmp/rc > /tmp/racecheck_tc.txt 2>&1
  echo "racecheck rc=$?" >> /tmp/racecheck_tc.txt ) &
SAN=$!
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; cat /tmp/memcheck_tc.txt /tmp/racecheck_tc.txt > $L/sanitizers.txt; tail -3 /tmp/memcheck_tc.txt; tail -3 /tmp/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep Wgmma | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
CHEEMS_CUDA_POISON=1 timeout 120 $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
