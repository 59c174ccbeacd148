#!/usr/bin/env bash
# GPU call 30zzzc: the final code of the session (f4be521). Every ops GPU test; every CUDA executor test; Doge-320M
# and Cheems-350M at batch 1 after 4096, plain twice and traced once.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 330 $T --test-threads=4 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 200 $TC --test-threads=1 > $L/tests_cuda.log 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do for e in X=1 X=2 CHEEMS_CUDA_TRACE=1; do
  env $e timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']; d['env'] = '$e'; print(json.dumps(d))
print('$p', '$e', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), 'floor', round(d['decode_roofline_fraction'], 4),
      'tok/s', round(d.get('decode_tokens_per_second', 0), 1), file=sys.stderr)
" >> $L/e2e_b1.jsonl
done; done
echo "end t=$(( $(date +%s) - T0 ))"
