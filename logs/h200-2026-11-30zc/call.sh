#!/usr/bin/env bash
# GPU call 30zc: the CUDA executor's tests on the final commit (a decode graph keeps its memos once recorded).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
timeout 200 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head; echo "end t=$(( $(date +%s) - T0 ))"
