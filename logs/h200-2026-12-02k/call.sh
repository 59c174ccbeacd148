#!/usr/bin/env bash
# GPU call 12-02k: the final build's correctness. Every ops GPU test (each kernel against its CPU reference on edge
# and random shapes), every CUDA executor test with poisoned buffers (every fixture, f32 and bf16), the compiled
# artifact tests, memcheck of every kernel test (proptest suites included), and racecheck of every non-proptest
# kernel test as far as the call's time allows (the slow suites split into shards).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
SH=tensor_core_prefill_edge=4,edge_shapes_match_the_cpu_kernel_prefill=3,edge_shapes_match_the_cpu_kernel_decode=2,gpu::decode_over_long_caches=2,prefill_after_a_cached_prefix=4,chunk_scan_edge=3,keep_window_ties_keep_the_lower_index=2,long_tensor_core=3,long_prefill_with=3,left_padded=3,rows_are_uniform_when_fully=3,linears_match_the_cpu=3
( timeout 500 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --jobs 10 --timeout 470 --shard $SH --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 80 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 330 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --jobs 6 --timeout 300 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt
grep -vE "^job .*passed, finished after" $L/memcheck.txt | head -20; grep -c "ERROR SUMMARY 0" $L/memcheck.txt; echo "t=$(( $(date +%s) - T0 ))"
wait
grep -vE "^job .*passed, finished after" $L/racecheck.txt | head -40; grep -c "RACECHECK SUMMARY 0" $L/racecheck.txt
tar czf $L/sanitizers.tgz -C /tmp rc mc
echo "end t=$(( $(date +%s) - T0 ))"
