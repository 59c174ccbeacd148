#!/usr/bin/env bash
# GPU call 12-02w: 12-02v's kernel with the histogram counts as plain shared atomics again (k = 1 a block reduction; the
# gather by runs of ids a warp; a bitonic sort): its GPU tests, memcheck and racecheck,
# ncu of the kernel inside `cheems generate` (Doge-320M shape, vocab 32,768, k = 1, 40, 1,000), and generate's
# decode rate greedy / --top-k 40 / --top-k 0.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/san
{ nvidia-smi -L; date -u; } | tee $L/device.txt
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge --seed 1 > /dev/null && cp models/cheems-py/tokenizer.json /tmp/doge/
T=$(ls .gpu/tests/cheems_ops-*)
{ CHEEMS_CUDA_POISON=1 timeout 120 $T logits_topk; echo "ops logits_topk rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head; echo "t=$(( $(date +%s) - T0 ))"
for tool in memcheck racecheck; do
  timeout 150 python3 tools/sanitize_kernels.py --bin $T --tool $tool --only logits_topk --jobs 4 --timeout 140 \
    --out /tmp/san/$tool > $L/$tool.txt 2>&1; echo "$tool rc=$?" >> $L/$tool.txt
  tail -3 $L/$tool.txt
done
echo "t=$(( $(date +%s) - T0 ))"
for s in "--temperature 0" "--top-k 40" "--top-k 1000"; do
  timeout 120 ncu --kernel-name regex:logits_topk --launch-count 3 --section SpeedOfLight \
    .gpu/bin/cheems generate /tmp/doge --target cuda --dtype bf16 --prompt 'def main():' --max-tokens 6 $s \
    > "$L/ncu${s// /_}.txt" 2>&1
  echo "$s rc=$? $(grep -E '^ +Duration' "$L/ncu${s// /_}.txt" | awk '{print $3}' | tr '\n' ' ') us"
done
for s in "--temperature 0" "--top-k 40" "--top-k 0" "--temperature 0" "--top-k 40"; do
  timeout 100 .gpu/bin/cheems generate /tmp/doge --target cuda --dtype bf16 --prompt 'def main():' --max-tokens 256 --seed 3 $s > /dev/null 2> /tmp/gen.err
  echo "doge-320m $s rc=$? $(tail -1 /tmp/gen.err)"
done | tee $L/generate.txt
echo "end t=$(( $(date +%s) - T0 ))"
