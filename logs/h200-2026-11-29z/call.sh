#!/usr/bin/env bash
# GPU call z: counting keep window with per-part counts (the W-th beater rescanned in one part of a segment). The
# masked-attention tests; ncu of every masked-attention launch at 4K; ncu warp states of the tensor-core kernel in
# each mode at 4K; the attention prefill against SDPA; racecheck of the scalar prefill and decode edge shapes.
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
timeout 60 ncu --cache-control none --clock-control none -k regex:masked_attention --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 3 > $L/ncu-attn-4096.csv 2> $L/ncu-attn.err
echo "ncu durations rc=$?"
python3 - $L/ncu-attn-4096.csv <<'PY'
import csv, io, sys
text = open(sys.argv[1]).read(); i = text.find('"ID"')
seq = sorted((int(r["ID"]), r["Kernel Name"].split("(")[0].replace("masked_attention_", ""), float(r["Metric Value"].replace(",", "")))
             for r in (csv.DictReader(io.StringIO(text[i:])) if i >= 0 else []))
print("launches (µs):", " | ".join(f"{k} {v / 1000:.1f}" for _, k, v in seq[-24:]))
PY
timeout 150 ncu --cache-control all --clock-control base -k regex:prefill_mma --section WarpStateStats --section Occupancy \
  --section ComputeWorkloadAnalysis --section SpeedOfLight --section InstructionStats --section LaunchStats --csv --page details \
  .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 3 > $L/ncu-mma-4096.csv 2> $L/ncu-mma.err
echo "ncu sections rc=$?"; echo "t=$(( $(date +%s) - T0 ))"
timeout 90 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --lengths 4096,16384 --no-compile \
  --budget 60 --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-230 | head -20; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 560 - ($(date +%s) - T0) ))
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random \
  --only edge_shapes_match_the_cpu_kernel_decode_bf16,edge_shapes_match_the_cpu_kernel_decode_f32 \
  --shard edge_shapes_match_the_cpu_kernel_decode_bf16=2,edge_shapes_match_the_cpu_kernel_decode_f32=2 \
  --jobs 4 --timeout $LEFT --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -vE "^\s*$" $L/racecheck.txt | tail -6
cd $L && tar czf raw.tgz ncu-attn-4096.csv ncu-*.err bench_kernels.log -C /tmp rc && rm ncu-attn-4096.csv ncu-*.err bench_kernels.log
echo "t=$(( $(date +%s) - T0 ))"
