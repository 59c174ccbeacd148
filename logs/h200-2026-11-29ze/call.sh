#!/usr/bin/env bash
# GPU call ze, build of be530b7 (the previous session's final kernels): ncu sections of the SSD prefill launches at
# 16K and of the attention decode launches (keep window, split-key GQA decode, combine) at 4096 keys.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz 2>/dev/null; chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
SEC="--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis"
timeout 200 ncu $SEC -k regex:ssd_ --launch-count 3 .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 16384 --runs 1 > $L/ncu-ssd-16k.txt 2>&1
echo "ncu ssd rc=$?"
timeout 200 ncu $SEC -k regex:"keep_window|decode_gqa|combine" --launch-count 9 .gpu/bin/cheems bench-kernels --kernel attn_decode --runs 1 > $L/ncu-attn-decode.txt 2>&1
echo "ncu attn rc=$?"
grep -E "^  [a-z_]+.*\(|Duration|Registers Per|Achieved Occupancy|Memory Throughput|Stall|Warp Cycles Per Issued" $L/ncu-ssd-16k.txt | head -60
