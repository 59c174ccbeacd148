#!/usr/bin/env bash
# GPU call 30p: the CUDA executor's tests with three test threads (as in 30o, where two recording tests failed with
# an invalidated capture), once with CHEEMS_CUDA_DATA_EDGES=0 (the sessions' recordings in issue order; the
# bit-for-bit test orders its own) and twice as built; then with one thread.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
for k in edges0 default1 default2; do
  if [ $k = edges0 ]; then export CHEEMS_CUDA_DATA_EDGES=0; else unset CHEEMS_CUDA_DATA_EDGES; fi
  timeout 150 $TC --test-threads=3 > $L/tests_cuda_$k.txt 2>&1
  echo "$k rc=$?"; grep -E "FAILED|test result|node by node" $L/tests_cuda_$k.txt | cut -c1-300 | head -6; echo "t=$(( $(date +%s) - T0 ))"
done
unset CHEEMS_CUDA_DATA_EDGES
timeout 200 $TC --test-threads=1 > $L/tests_cuda_serial.txt 2>&1
echo "serial rc=$?"; grep -E "FAILED|test result|node by node" $L/tests_cuda_serial.txt | cut -c1-300 | head -6; echo "end t=$(( $(date +%s) - T0 ))"
