#!/usr/bin/env bash
# GPU call o: the tensor-core prefill with 32 query rows per warp (MT = 2, 128 queries per block): its tests, memcheck,
# every tensor-core variant timed at the Doge-320M attention shape, and the attention prefill against SDPA.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 100 $T masked_attention::tests::gpu::time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | sed 's/masked_attention bf16 prefill //; s/ H=8 G=4 Dh=128//; s/(causal FLOPs.*//'
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --budget 120 --no-compile \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; cat $L/bench_kernels.md | head -30
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only tensor_core,long_tensor --jobs 6 --timeout 200 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 200 $T masked_attention --test-threads=4; echo "ops rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20
wait
tail -6 $L/memcheck.txt
tar czf $L/mc.tgz -C /tmp mc
