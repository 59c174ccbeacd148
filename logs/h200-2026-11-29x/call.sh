#!/usr/bin/env bash
# GPU call x (commit 6b3fa37): counting up to 4096 keys, tiles within the window without the keep
# test. The masked-attention tests; ncu of the ranked-against-counting test (both kernels at every size); every
# masked-attention launch at 4K and 16K; the attention prefill against SDPA in one command; memcheck and racecheck of
# the keep-window tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 150 $T masked_attention --test-threads=4; echo "attention tests rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 ncu --cache-control none --clock-control none -k regex:keep_ --metrics gpu__time_duration.sum --csv \
  $T ranked_keep_until_matches > $L/ncu-until.csv 2> $L/ncu-until.err
echo "ncu until rc=$?"
for n in 4096 16384; do
  timeout 60 ncu --cache-control none --clock-control none -k regex:masked_attention --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths $n --runs 3 > $L/ncu-attn-$n.csv 2> $L/ncu-attn-$n.err
  echo "ncu $n rc=$?"
done
python3 - $L/ncu-until.csv $L/ncu-attn-4096.csv $L/ncu-attn-16384.csv <<'PY'
import csv, io, sys
for n, path in enumerate(sys.argv[1:]):
    text = open(path).read(); i = text.find('"ID"')
    seq = sorted((int(r["ID"]), r["Kernel Name"].split("(")[0].replace("masked_attention_", ""), float(r["Metric Value"].replace(",", "")))
                 for r in (csv.DictReader(io.StringIO(text[i:])) if i >= 0 else []))
    last = seq if n == 0 else seq[-7:]
    print(path.split("/")[-1], "launches (µs):", " ".join(f"{k} {v / 1000:.1f}" for _, k, v in last))
PY
timeout 100 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 90 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -40; echo "t=$(( $(date +%s) - T0 ))"
W=ranked_keep_until,keep_lists_hold,tensor_core_keep_window,rows_are_uniform_when_fully,long_tensor_core_prefill,prefill_after_a_cached_prefix
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W --shard ranked_keep_until=4,prefill_after_a_cached_prefix=4 \
  --jobs 10 --timeout 110 --out /tmp/mc > $L/memcheck.txt 2>&1
echo "memcheck rc=$?"; grep -vE "^\s*$" $L/memcheck.txt | tail -4; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 430 - ($(date +%s) - T0) ))
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only keep_lists_hold,tensor_core_keep_window,rows_are_uniform_when_fully,long_tensor_core_prefill \
  --shard rows_are_uniform_when_fully=3,tensor_core_keep_window=4,long_tensor_core=3 \
  --jobs 12 --timeout $LEFT --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -vE "^\s*$" $L/racecheck.txt | tail -4
cd $L && tar czf raw.tgz ncu-* bench_kernels.log -C /tmp mc rc && rm ncu-* bench_kernels.log
echo "t=$(( $(date +%s) - T0 ))"
