#!/usr/bin/env bash
# GPU call 30t: after the review's mend (one edges() for make_programmatic and order_by_data), the ordering and
# recording tests of cheems_ops and the CUDA executor's tests, with poisoned buffers too.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TO=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
timeout 100 $TO cuda::order cuda::graph --test-threads=2 > $L/tests_order.txt 2>&1
echo "order tests rc=$?"; grep -E "test result|FAILED" $L/tests_order.txt
timeout 200 $TC --test-threads=3 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda.txt | cut -c1-300 | head -8; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 150 $TC --test-threads=3 > $L/tests_cuda_poison.txt 2>&1
echo "poison rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda_poison.txt | cut -c1-300 | head -6; echo "end t=$(( $(date +%s) - T0 ))"
