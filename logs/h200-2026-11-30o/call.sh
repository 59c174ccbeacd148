#!/usr/bin/env bash
# GPU call 30o: after recordings that allocate memory stay in issue order, the ordering tests of cheems_ops and the
# CUDA executor's tests (every fixture; the replay tests, the fixtures widened to 8 sequences included), then the
# replay tests again with poisoned buffers.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TO=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
timeout 100 $TO cuda::order cuda::graph --test-threads=1 > $L/tests_order.txt 2>&1
echo "order tests rc=$?"; grep -E "test result|FAILED" $L/tests_order.txt
timeout 300 $TC --test-threads=3 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|node by node" $L/tests_cuda.txt | head; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 200 $TC record --test-threads=2 > $L/tests_cuda_poison.txt 2>&1
echo "poison rc=$?"; grep -E "^test |test result|FAIL|node by node" $L/tests_cuda_poison.txt | head; echo "end t=$(( $(date +%s) - T0 ))"
