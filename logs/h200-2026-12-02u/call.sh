#!/usr/bin/env bash
# GPU call 12-02u: ncu of the logits top-k kernel inside `cheems generate` on CUDA (bf16, random Doge-320M weights,
# vocab 32,768) for k = 1 (greedy), 40 and 1,000, five launches each; kernel duration and the largest stalls.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; ncu --version | tail -1; } | tee $L/device.txt
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge --seed 1 > /dev/null && cp models/cheems-py/tokenizer.json /tmp/doge/
timeout 150 .gpu/bin/cheems generate /tmp/doge --target cuda --dtype bf16 --prompt 'def main():' --max-tokens 4 > /dev/null 2>&1
echo "warm t=$(( $(date +%s) - T0 ))"
for s in "--temperature 0" "--top-k 40" "--top-k 1000"; do
  timeout 120 ncu --kernel-name regex:logits_topk --launch-count 5 --section SpeedOfLight --section WarpStateStats \
    .gpu/bin/cheems generate /tmp/doge --target cuda --dtype bf16 --prompt 'def main():' --max-tokens 8 $s \
    > "$L/ncu${s// /_}.txt" 2>&1
  echo "$s rc=$?"; grep -E "logits_topk|Duration|Stall (Long|Short|Barrier|Wait)|Warp Cycles Per Issued" "$L/ncu${s// /_}.txt" | head -12
done
echo "end t=$(( $(date +%s) - T0 ))"
