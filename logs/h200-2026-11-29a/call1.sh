#!/usr/bin/env bash
# GPU call 1 (build fe4f535): kernel, executor and artifact tests; memcheck of every non-proptest kernel test;
# racecheck of the ten tests the previous racecheck runs left unfinished, in three processes.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/mc /tmp/rc
{ nvidia-smi -L; date -u; compute-sanitizer --version | tail -1; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
only=keep_window_ties_keep_the_lower_index,left_padded_rows_are_uniform_over_all_keys,long_prefill_with_the_default_keep_window,prefill_after_a_cached_prefix,rows_of_probabilities_sum_to_one,tensor_core_prefill_edge_shapes_match_the_cpu_kernel,chunk_scan_edge_shapes_match_the_cpu_scan,ssd_scan::tests::gpu::bad_sizes_are_refused,linears_match_the_cpu
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $only --jobs 3 --timeout 520 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --jobs 5 --timeout 420 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 $(ls .gpu/tests/cuda-*); echo "cuda rc=$?"
  CHEEMS_BIN=$PWD/.gpu/bin/cheems timeout 100 $(ls .gpu/tests/artifact-*); echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log
wait
tar czf $L/sanitizers.tgz -C /tmp mc rc
tail -25 $L/memcheck.txt; tail -15 $L/racecheck.txt
