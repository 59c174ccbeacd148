#!/usr/bin/env bash
# GPU call zf, build of the chunk groups (chunk_state carrying the state over groups of chunks): SSD prefill before
# (fixed groups of 1, as before) and after; against fla; ncu of the new launches at 16K; every GPU test;
# memcheck and racecheck of the SSD tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
for b in cheems cheems; do
  echo "== $b"; G=""; [ $b = cheems ] && G="--ssd-groups 1,2,4,7,8,16"
  timeout 60 .gpu/bin/$b bench-kernels --kernel ssd_prefill $G 2>&1 | grep -E "ssd_prefill"
done | tee $L/ab.txt
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 100 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-250 | head -12; echo "t=$(( $(date +%s) - T0 ))"
timeout 100 ncu --cache-control none --clock-control none -k regex:ssd_ --metrics gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,sm__warps_active.avg.pct_of_peak_sustained_active --csv \
  .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 4096,16384 --runs 3 > $L/ncu-ssd.csv 2>&1
echo "ncu rc=$?"; echo "t=$(( $(date +%s) - T0 ))"
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=4 --jobs 5 --timeout 150 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck_ssd.txt
  python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 6 --timeout 120 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck_ssd.txt ) &
SAN=$!
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; tail -12 $L/racecheck_ssd.txt; tail -8 $L/memcheck_ssd.txt
cd $L && tar czf raw.tgz bench_kernels.log -C /tmp rc mc && rm bench_kernels.log
echo "t=$(( $(date +%s) - T0 ))"
