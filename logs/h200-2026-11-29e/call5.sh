#!/usr/bin/env bash
# GPU call 5 (final build; kernels of 4fb2194, call 3's): CDMoE kernels against the reference in one command; kernel,
# executor and artifact tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 110 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel cdmoe,pk_topk,expert_mix --budget 80 --compile-budget 40 --out $L/kernels.json --markdown $L/kernels.md > $L/kernels.log 2>&1; echo "kernels rc=$?"
grep -E "N4096|N1 |###" $L/kernels.md
{ timeout 100 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 100 .gpu/tests/artifact-* --test-threads=2; echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20
