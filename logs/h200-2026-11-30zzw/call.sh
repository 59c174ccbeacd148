#!/usr/bin/env bash
# GPU call 30zzw: the review's mends (9a347b9 the trace's kernel names from one map; 310c55e the bench's capacity
# from the recorded step). The trace and recording tests; every CUDA executor test; Doge-320M and Cheems-350M at batch
# 1 after 4096, plain and traced.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T cuda::trace cuda::graph cuda::order --test-threads=1 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked" $L/tests_ops.txt
wait
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|panicked" $L/tests_cuda.txt
for p in doge-320m cheems-350m; do for e in X=1 CHEEMS_CUDA_TRACE=1; do
  env $e timeout 150 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']; d['env'] = '$e'; print(json.dumps(d)); t = g.get('trace')
print('$p', '$e', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), 'capacity', g['capacity'],
      'records', t and sum(k['launches'] for k in t['kernels']), 'of', g['recorded_nodes'], 'unnamed', t and [k['launches'] for k in t['kernels'] if k['kernel'] == '?'], file=sys.stderr)
" >> $L/e2e_b1.jsonl
done; done
