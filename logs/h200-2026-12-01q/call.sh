#!/usr/bin/env bash
# GPU call 12-01q: ncu of the Dh 64 attention prefill at 4K (one causal launch, H16): stall reasons, pipe utilisation
# and issue activity of 4e40d97's kernel (`cheems_base`, two warpgroups a block, two blocks a multiprocessor) and of
# 12-01p's three-warpgroup block with two key tiles in flight (`cheems_3wg`), to see where each one's cycles go.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$'
M+=',regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active$'
M+=',regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$'
M+=',smsp__issue_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,smsp__warps_active.avg.per_cycle_active'
M+=',smsp__inst_executed.sum,sm__cycles_elapsed.avg'
for b in cheems_base cheems_3wg; do
  timeout 200 ncu --metrics "$M" -k regex:'prefill_wgmma_d64_k64$' -c 1 --page raw \
    .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --runs 1 > $L/ncu_$b.txt 2>&1
  echo "ncu $b rc=$? t=$(( $(date +%s) - T0 ))"
done
python3 - $L/ncu_cheems_base.txt $L/ncu_cheems_3wg.txt <<'PY'
import re, sys
rows = {}
for k, f in enumerate(sys.argv[1:]):
    for l in open(f):
        m = re.match(r"\s+(\S+)\s+(\S+)?\s+([0-9.,]+)\s*$", l)
        if m and ("__" in m.group(1)):
            rows.setdefault(m.group(1), ["", ""])[k] = m.group(3)
for name, (a, b) in sorted(rows.items()):
    try:
        if max(float(a.replace(",", "") or 0), float(b.replace(",", "") or 0)) < 0.05: continue
    except ValueError:
        pass
    print(f"{name:90s} {a:>14s} {b:>14s}")
PY
echo "end t=$(( $(date +%s) - T0 ))"
