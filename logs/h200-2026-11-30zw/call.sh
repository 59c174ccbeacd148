#!/usr/bin/env bash
# GPU call 30zw: 19d5be6 (the review's mend: the mask values' dt buffer held as a recycled Dev). Every CUDA executor
# test (the batch-8 recordings take the linear-then-mask path the mend touches); end to end once: Doge-320M batch 16
# after 1024 (the same path in a recorded step) and batch 1 after 4096.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null &
timeout 240 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for args in "--batch 16 --prompt 1024 --runs 2" "--prompt 4096 --runs 3"; do
  timeout 90 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 $args --decode 32 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  echo "bench $args rc=$?"
done
python3 -c "
import json
for l in open('$L/e2e.jsonl'):
    d = json.loads(l); g = d['decode_graph']
    print(d['variant'], 'batch', d.get('batch'), 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'])
"
tail -2 $L/e2e.err
echo "end t=$(( $(date +%s) - T0 ))"
