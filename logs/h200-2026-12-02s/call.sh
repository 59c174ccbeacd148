#!/usr/bin/env bash
# GPU call 12-02s: the logits top-k kernel and `generate` on CUDA. The kernel's GPU tests (edge and random shapes
# against the CPU kernel, bit for bit), every CUDA executor test (with the replayed top-k against the host's
# selection), memcheck and racecheck of the kernel's tests, and `cheems generate` of models/cheems-py greedy on the
# CPU and on CUDA (f32, bf16), then sampled on CUDA.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems CHEEMS_CUDA_POISON=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/san
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 120 $T logits_topk; echo "ops logits_topk rc=$?"
  timeout 200 .gpu/tests/cuda-*; echo "cuda rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
for tool in memcheck racecheck; do
  timeout 150 python3 tools/sanitize_kernels.py --bin $T --tool $tool --only logits_topk --jobs 4 --timeout 140 \
    --out /tmp/san/$tool > $L/$tool.txt 2>&1; echo "$tool rc=$?" >> $L/$tool.txt
  tail -4 $L/$tool.txt; grep -h "SUMMARY" /tmp/san/$tool/* 2>/dev/null | sort | uniq -c
done
echo "t=$(( $(date +%s) - T0 ))"
unset CHEEMS_CUDA_POISON
G=".gpu/bin/cheems generate models/cheems-py --prompt 'class Stack:' --max-tokens 64 --temperature 0"
for t in "cpu" "cuda --dtype f32" "cuda --dtype bf16"; do
  eval timeout 120 $G --target $t > /tmp/gen.txt 2> /tmp/gen.err; echo "greedy $t rc=$? $(tail -1 /tmp/gen.err)"
  md5sum < /tmp/gen.txt; cp /tmp/gen.txt "$L/greedy-${t// /_}.txt"
done
for t in "cpu" "cuda --dtype bf16"; do
  timeout 120 .gpu/bin/cheems generate models/cheems-py --max-tokens 200 --seed 3 --target $t > /tmp/gen.txt 2> /tmp/gen.err
  echo "sampled $t rc=$? $(tail -1 /tmp/gen.err)"; md5sum < /tmp/gen.txt
done | tee $L/sampled.txt
echo "end t=$(( $(date +%s) - T0 ))"
