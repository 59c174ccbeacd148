#!/usr/bin/env bash
# GPU call 30s: the CUDA executor's tests taking turns at the device, with three test threads twice and with
# poisoned buffers; the ordering and recording tests of cheems_ops.
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
for k in 1 2; do
  timeout 200 $TC --test-threads=3 > $L/tests_cuda_$k.txt 2>&1
  echo "run $k rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda_$k.txt | cut -c1-300 | head -8; echo "t=$(( $(date +%s) - T0 ))"
done
CHEEMS_CUDA_POISON=1 timeout 150 $TC --test-threads=3 > $L/tests_cuda_poison.txt 2>&1
echo "poison rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda_poison.txt | cut -c1-300 | head -6; echo "end t=$(( $(date +%s) - T0 ))"
