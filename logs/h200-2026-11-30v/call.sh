#!/usr/bin/env bash
# GPU call 30v: after the review's mend of the graph pool's log of handed-out buffers, the CUDA executor's tests
# (three threads) and again with poisoned buffers.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
timeout 150 $TC --test-threads=3 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda.txt | cut -c1-300 | head -8; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 40 $TC --test-threads=3 > $L/tests_cuda_poison.txt 2>&1
echo "poison rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda_poison.txt | cut -c1-300 | head -6; echo "end t=$(( $(date +%s) - T0 ))"
