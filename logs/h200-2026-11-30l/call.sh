#!/usr/bin/env bash
# GPU call 30l: the CUDA executor's tests (every fixture in f32 and bf16; replayed against node by node; ordered by
# data against issue order, bit for bit), then the two replay tests again with poisoned buffers.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
timeout 300 $TC --test-threads=2 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|DIFFERENT|FAIL" $L/tests_cuda.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 200 $TC record --test-threads=1 > $L/tests_cuda_poison.txt 2>&1
echo "poison rc=$?"; grep -E "^test |test result|DIFFERENT|FAIL" $L/tests_cuda_poison.txt | head; echo "end t=$(( $(date +%s) - T0 ))"
