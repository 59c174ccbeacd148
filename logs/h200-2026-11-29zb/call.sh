#!/usr/bin/env bash
# GPU call zb: SSD chunk_out copying its first tile of C, B and the previous state before the decay sums; keep_until
# back to eight segments. Every kernel test; ncu of the SSD launches at 16K; the SSD prefill and the attention prefill
# against their peers in one command; memcheck and racecheck of the SSD tests; racecheck of the GQA decode and
# expert-mix edge shapes for the time left.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 ncu --cache-control none --clock-control none -k regex:ssd_ --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active --csv \
  .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 16384 --runs 3 > $L/ncu-ssd-16k.csv 2> $L/ncu-ssd.err
echo "ncu ssd rc=$?"
python3 - $L/ncu-ssd-16k.csv <<'PY'
import csv, io, sys
for path in sys.argv[1:]:
    text = open(path).read(); i = text.find('"ID"')
    rows = list(csv.DictReader(io.StringIO(text[i:]))) if i >= 0 else []
    by = {}
    for r in rows:
        by.setdefault(int(r["ID"]), {"k": r["Kernel Name"].split("(")[0]})[r["Metric Name"]] = r["Metric Value"]
    seq = [by[k] for k in sorted(by)][-6:]
    print(path.split("/")[-1], " | ".join(f'{d["k"]} {float(d["gpu__time_duration.sum"].replace(",", "")) / 1000:.1f} µs'
          f' {d["launch__registers_per_thread"]} regs {d["sm__warps_active.avg.pct_of_peak_sustained_active"]} %' for d in seq))
PY
timeout 200 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill,attn_prefill --no-compile --budget 150 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-250 | head -30; echo "t=$(( $(date +%s) - T0 ))"
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 8 --timeout 120 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1
echo "memcheck rc=$?"; grep -vE "^\s*$" $L/memcheck_ssd.txt | tail -3
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=6 --jobs 8 --timeout 110 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1
echo "racecheck ssd rc=$?"; grep -vE "^\s*$" $L/racecheck_ssd.txt | tail -3; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 570 - ($(date +%s) - T0) ))
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only gqa_decode_edge_shapes,expert_mix::tests::gpu::edge_shapes \
  --shard gqa_decode_edge_shapes=2,expert_mix::tests::gpu::edge_shapes=3 --jobs 5 --timeout $LEFT --out /tmp/rc2 > $L/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -vE "^\s*$" $L/racecheck.txt | tail -6
cd $L && tar czf raw.tgz ncu-* bench_kernels.log -C /tmp rc mc rc2 && rm ncu-* bench_kernels.log
echo "t=$(( $(date +%s) - T0 ))"
