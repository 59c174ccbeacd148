#!/usr/bin/env bash
# GPU call zh, build of 5078bbc: the masked-attention tests (keep-window helpers renamed, launch shapes from a closure);
# warp stall reasons and the hottest instructions of the SSD launches at 16K.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T masked_attention --test-threads=4 > $L/tests.log 2>&1; echo "attention tests rc=$?"; grep -E "test result|FAILED|panicked" $L/tests.log
echo "t=$(( $(date +%s) - T0 ))"
timeout 200 ncu --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,sm__inst_executed_pipe_tensor_op_hmma.sum \
  -k regex:ssd_chunk --launch-count 2 .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 16384 --runs 1 > $L/ncu-ssd-stalls.txt 2>&1
echo "ncu rc=$?"
timeout 200 ncu --section SourceCounters --section WarpStateStats -k regex:ssd_chunk_out --launch-count 1 .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 16384 --runs 1 > $L/ncu-ssd-source.txt 2>&1
echo "ncu rc=$?"; echo "t=$(( $(date +%s) - T0 ))"
grep -E "stalled|inst_executed|ssd_" $L/ncu-ssd-stalls.txt | awk '$NF+0 > 0.3 || /ssd_|inst/' | head -60
