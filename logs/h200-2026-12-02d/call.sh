#!/usr/bin/env bash
# GPU call 12-02d: ncu of the Dh 64 warpgroup prefill kernel of the landed build (`cheems`, 159b769) at 4K (H 16),
# causal and additive: launches 21-30 of the kernel are the causal case's timed ones and 51-60 the additive case's
# (bench-kernels under ncu: 10 warm-up, 10 estimate and 10 timed launches a case with --runs 1).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
xz -d -f .gpu/bin/cheems.xz; chmod +x .gpu/bin/cheems
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
timeout 150 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1
echo "warm t=$(( $(date +%s) - T0 ))"
timeout 400 ncu --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section InstructionStats \
  -k regex:'prefill_wgmma_d64_k64$' -c 60 --page details \
  .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 1 --json > $L/ncu.txt 2>&1
echo "ncu rc=$?"
python3 - $L/ncu.txt <<'PY'
import re, sys
blocks = re.split(r"\n  masked_attention_bf16_prefill_wgmma_d64_k64", open(sys.argv[1]).read())[1:]
keys = ["Duration", "Executed Instructions", "Issue Slots Busy", "Warp Cycles Per Issued Instruction", "No Eligible",
        "Stall Barrier", "Compute (SM) Throughput"]
print("launches", len(blocks))
for name, lo, hi in [("causal", 20, 30), ("additive", 50, 60)]:
    for b in blocks[lo:hi][:3]:
        vals = []
        for k in keys:
            m = re.search(r"\n\s+" + re.escape(k) + r"\s+(\S+)\s+([\d.,]+)", b)
            if m: vals.append(f"{k}={m.group(2)} {m.group(1)}")
        print(name, "; ".join(vals))
PY
echo "end t=$(( $(date +%s) - T0 ))"
