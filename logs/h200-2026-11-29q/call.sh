#!/usr/bin/env bash
# GPU call q, the final kernels: the tensor-core prefill variants timed alone first; then, side by side, every GPU test
# (kernels, CUDA executor with poisoned buffers, compiled artifacts), memcheck of every kernel test and racecheck of
# every non-proptest kernel test, the long ones split into shards (tools/sanitize_kernels.py --shard).
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | sed 's/masked_attention bf16 prefill //; s/(causal FLOPs.*//; s/test .* \.\.\. //' | grep -E "S=T=(4096|8192|16384)"
SH=tensor_core_prefill_edge=4,edge_shapes_match_the_cpu_kernel_prefill=3,edge_shapes_match_the_cpu_kernel_decode=2,gpu::decode_over_long_caches=2,prefill_after_a_cached_prefix=4,chunk_scan_edge=3,keep_window_ties_keep_the_lower_index=2,long_tensor_core=3,long_prefill_with=3,left_padded=3,rows_are_uniform_when_fully=3,linears_match_the_cpu=3
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --jobs 10 --timeout 440 --shard $SH --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 80 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --jobs 4 --timeout 200 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt
grep -vE "^job .*passed, finished after" $L/memcheck.txt | head -20; grep -c "ERROR SUMMARY 0" $L/memcheck.txt
wait
grep -vE "^job .*passed, finished after" $L/racecheck.txt | head -40; grep -c "RACECHECK SUMMARY 0" $L/racecheck.txt
tar czf $L/logs.tgz -C /tmp rc mc tests.log
