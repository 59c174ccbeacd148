#!/usr/bin/env bash
# GPU call 12-02t: `cheems generate` on CUDA (bf16) at the benchmark shapes, random weights with models/cheems-py's
# tokenizer copied in (its 4,096 ids are a subset of the 32,768), 256 tokens: greedy and --top-k 40 (the top-k kernel
# sends back 1 or 40 logits a step) against --top-k 0 (every logit sent back and sorted on the host), each three times.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } | tee $L/device.txt
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null && cp models/cheems-py/tokenizer.json /tmp/$p/
done
echo "checkpoints t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  for s in "--temperature 0" "--top-k 40" "--top-k 0" "--temperature 0" "--top-k 40" "--top-k 0" "--temperature 0" "--top-k 40" "--top-k 0"; do
    timeout 100 .gpu/bin/cheems generate /tmp/$p --target cuda --dtype bf16 --prompt 'def main():' --max-tokens 256 --seed 3 $s > /dev/null 2> /tmp/gen.err
    echo "$p $s rc=$? $(tail -1 /tmp/gen.err)"
  done
done | tee $L/generate.txt
echo "end t=$(( $(date +%s) - T0 ))"
