#!/usr/bin/env bash
# GPU call 12-01y: ncu of the SSD prefill's chunk_out at 16K, main's build (`cheems_base`) against 12-01x's experiment
# (`cheems`: state pieces, C, B and X asked for before the decay matrix), to see why loading earlier is slower.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$'
M+=',smsp__issue_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,smsp__warps_active.avg.per_cycle_active'
M+=',smsp__inst_executed.sum,sm__cycles_elapsed.avg,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum'
M+=',dram__throughput.avg.pct_of_peak_sustained_elapsed,l1tex__throughput.avg.pct_of_peak_sustained_active'
M+=',lts__t_sector_hit_rate.pct,l1tex__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed'
M+=',l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum'
M+=',smsp__warp_issue_stalled_long_scoreboard_per_warp_active.pct,sm__warps_active.avg.pct_of_peak_sustained_active'
for b in cheems_base cheems; do
  timeout 150 ncu --metrics "$M" -k regex:'ssd_chunk_out' -c 2 --page raw \
    .gpu/bin/$b bench-kernels --kernel ssd_prefill --lengths 16384 --runs 1 > $L/ncu_$b.txt 2>&1
  echo "ncu $b rc=$? t=$(( $(date +%s) - T0 ))"
done
python3 - $L/ncu_cheems_base.txt $L/ncu_cheems.txt <<'PY'
import re, sys
rows = {}
for k, f in enumerate(sys.argv[1:]):
    seen = set()
    for l in open(f):
        m = re.match(r"\s+(\S+)\s+(\S+)?\s+([0-9.,]+)\s*$", l)
        if m and "__" in m.group(1) and m.group(1) not in seen:
            seen.add(m.group(1)); rows.setdefault(m.group(1), ["", ""])[k] = m.group(3)
for name, (a, b) in sorted(rows.items()):
    if ".max" in name or ".min" in name: continue
    try:
        if max(float(a.replace(",", "") or 0), float(b.replace(",", "") or 0)) < 0.05: continue
    except ValueError:
        pass
    print(f"{name:90s} {a:>14s} {b:>14s}")
PY
echo "end t=$(( $(date +%s) - T0 ))"
