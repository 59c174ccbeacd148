#!/usr/bin/env bash
# GPU call p: the tensor-core prefill's row sums on the tensor cores (P times a column of ones) against the previous
# commit's binary (cheems-prev, f417ff2: row sums added from the rounded probabilities), alternating; every
# tensor-core variant timed at both model shapes; the masked-attention tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 120 $T masked_attention --test-threads=4; echo "ops rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20
for b in cheems-prev cheems cheems-prev cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel attn_prefill 2>>$L/kernels.err
done > $L/ab.txt
grep -E "==|attn_prefill" $L/ab.txt | awk '{print $1, $2, $3, $4, $5}'
timeout 150 $T masked_attention::tests::gpu::time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | sed 's/masked_attention bf16 prefill //; s/(causal FLOPs.*//; s/test .* \.\.\. //'
