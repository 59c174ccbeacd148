#!/usr/bin/env bash
# GPU call v (commit 5a246ff): keep-window ranks from sorted chunks (keep_sort, keep_rank). The masked-attention
# tests; the duration of every masked-attention launch at 4K and 16K under ncu; the attention prefill against SDPA, one
# command.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 220 $T masked_attention --test-threads=4; echo "attention tests rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
for n in 4096 16384; do
  timeout 80 ncu --cache-control none --clock-control none -k regex:masked_attention --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths $n --runs 3 > $L/ncu-attn-$n.csv 2> $L/ncu-attn-$n.err
  echo "ncu $n rc=$?"
done
python3 - $L/ncu-attn-4096.csv $L/ncu-attn-16384.csv <<'PY'
import csv, io, sys, collections
for path in sys.argv[1:]:
    text = open(path).read(); i = text.find('"ID"')
    t = collections.defaultdict(list)
    for r in (csv.DictReader(io.StringIO(text[i:])) if i >= 0 else []):
        t[r["Kernel Name"].split("(")[0]].append(float(r["Metric Value"].replace(",", "")))
    for n, v in t.items():
        v.sort(); print(path.split("/")[-1], n, "launches", len(v), "min", v[0], "median", v[len(v) // 2], "max", v[-1], "ns")
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 150 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -40; echo "t=$(( $(date +%s) - T0 ))"
cd $L && tar czf raw.tgz ncu-attn-* bench_kernels.log && rm ncu-attn-* bench_kernels.log
