#!/usr/bin/env bash
# GPU call 12-01zh: ncu of the Dh 64 warpgroup prefill kernel at causal 4K (H 16), the landed build (`cheems`,
# 10fe48e) and the one before (`cheems_base`, 6e8d15d): speed of light, warp states, scheduler and instruction counts.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for b in cheems_base cheems; do
  timeout 200 ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats \
    --section ComputeWorkloadAnalysis -k regex:'prefill_wgmma_d64_k64$' -c 4 --page details \
    .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --runs 1 > $L/ncu_$b.txt 2>&1
  echo "ncu $b rc=$?"
  grep -E "^  masked|Duration|Issue Slots Busy|Warp Cycles Per Issued|Executed Instructions  |No Eligible|Issued Warp" $L/ncu_$b.txt | head -24
done
echo "end t=$(( $(date +%s) - T0 ))"
