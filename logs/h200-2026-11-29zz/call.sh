#!/usr/bin/env bash
# GPU call zz: ncu of one causal S=T=16K launch (Doge-320M heads) of the warpgroup kernel and of the warp-specialized
# kernel with the consumers' turns, from the timing test.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
# 25 launches a case; the causal 16K case of Dh 128 follows seven cases of the plain kernel (1K: three, 4K and 8K: causal
# and additive).
for k in ws_d128 wgmma_d128_k128; do
  timeout 150 ncu --cache-control none --clock-control none -k regex:"prefill_${k}\$" --launch-skip 175 --launch-count 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/ncu_$k.txt 2>&1
  echo "ncu $k rc=$?"; grep -E "S=T=16384 H=8 G=4 Dh=128" $L/ncu_$k.txt | head -3 | cut -c1-120
  grep -E "Duration|Throughput|Stall|Issue|Pipe|Registers|Achieved|Warp Cycles|Eligible|Busy|L2 Hit|Bandwidth" $L/ncu_$k.txt | head -40
  echo "t=$(( $(date +%s) - T0 ))"
done
