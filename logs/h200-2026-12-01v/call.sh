#!/usr/bin/env bash
# GPU call 12-01v: where the SSD prefill stands against flash-linear-attention today (main's kernels, ec67e42's
# sources), and an ncu profile of its launches at 16K.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch, fla; print('torch', torch.__version__, 'fla', fla.__version__)"; } > $L/device.txt 2>&1
cat $L/device.txt
for r in 1 2; do
  timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 100 \
    --out $L/bench_ssd_$r.json --markdown $L/bench_ssd_$r.md > $L/bench_ssd_$r.log 2>&1
  echo "bench $r rc=$?"; grep -E "^\| " $L/bench_ssd_$r.md | cut -c1-260 | head -8; echo "t=$(( $(date +%s) - T0 ))"
done
timeout 60 .gpu/bin/cheems bench-kernels --kernel ssd_prefill --ssd-groups 1,2,4,8,16 --json > $L/ssd_groups.json 2> $L/ssd_groups.err
echo "groups rc=$?"
M='regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$'
M+=',regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active$'
M+=',smsp__issue_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,smsp__warps_active.avg.per_cycle_active'
M+=',smsp__inst_executed.sum,sm__cycles_elapsed.avg,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum'
M+=',dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed'
M+=',launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,launch__grid_size'
timeout 240 ncu --metrics "$M" -k regex:'ssd_' -c 6 --page raw \
  .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 16384 --runs 1 > $L/ncu_ssd.txt 2>&1
echo "ncu rc=$? t=$(( $(date +%s) - T0 ))"
grep -E "^\s+[a-z_]+_bf16|  [A-Za-z_]+\(|gpu__time_duration.sum|dram__bytes|lts__t_bytes|dram__throughput|warps_active|issue_active|long_scoreboard|barrier_per|short_scoreboard|stalled_wait|mio_throttle|registers_per|grid_size|pipe_tensor_cycles" $L/ncu_ssd.txt | head -90
echo "end t=$(( $(date +%s) - T0 ))"
