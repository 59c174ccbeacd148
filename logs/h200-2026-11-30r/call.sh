#!/usr/bin/env bash
# GPU call 30r: is the invalidated capture of 30o-30q (three test threads) there with recordings in issue order too?
# The CUDA executor's tests with three threads, CHEEMS_CUDA_DATA_EDGES=0, three times (the bit-for-bit test orders
# its own recordings whatever the variable says).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc CHEEMS_CUDA_DATA_EDGES=0
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
for k in 1 2 3; do
  timeout 150 $TC --test-threads=3 > $L/tests_cuda_edges0_$k.txt 2>&1
  echo "run $k rc=$?"; grep -E "FAILED|test result|node by node|panicked at" -A1 $L/tests_cuda_edges0_$k.txt | cut -c1-300 | head -8; echo "t=$(( $(date +%s) - T0 ))"
done
