#!/usr/bin/env bash
# GPU call zv: the warp-specialized attention prefill (a producer warpgroup, two consumers taking turns): the
# masked-attention GPU tests, timing against the warpgroup and mma kernels, attention prefill against SDPA.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 200 $T masked_attention --test-threads=6 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 100 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep "Dh=128" | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 80 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; tail -3 /tmp/bench_kernels.log; echo "t=$(( $(date +%s) - T0 ))"
