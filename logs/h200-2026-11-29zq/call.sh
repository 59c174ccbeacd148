#!/usr/bin/env bash
# GPU call zq: the warpgroup attention prefill with its products no longer serialized by ptxas (no product on a
# branch): timing against the mma kernels, the masked-attention GPU tests, attention prefill against SDPA, memcheck and
# racecheck of the tensor-core prefill tests (which run the warpgroup kernel too).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -30; echo "t=$(( $(date +%s) - T0 ))"
timeout 150 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep -v w2048 | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -60; echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 120 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
W=tensor_core_prefill_edge,tensor_core_prefill_rows,tensor_core_prefill_large,long_tensor_core_prefill
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W --shard tensor_core_prefill_edge=4 \
  --jobs 8 --timeout 200 --out /tmp/mc > $L/memcheck_tc.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck_tc.txt
tail -12 $L/memcheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W --shard tensor_core_prefill_edge=4 \
  --jobs 8 --timeout 200 --out /tmp/rc > $L/racecheck_tc.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck_tc.txt
tail -12 $L/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
