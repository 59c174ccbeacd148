#!/usr/bin/env bash
# GPU call 30zzze: the review's mends (the trace reads whether the stream records through cudarc's capture_status;
# cheems bench's JSON reads the first replayed run's fields directly). The trace and recording tests; Cheems-350M at
# batch 1 after 4096, plain and traced.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 > /dev/null &
timeout 100 $T cuda::trace cuda::graph cuda::order --test-threads=1 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked" $L/tests_ops.log
wait
for e in X=1 CHEEMS_CUDA_TRACE=1; do
  env $e timeout 90 .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']; d['env'] = '$e'; print(json.dumps(d)); t = g.get('trace')
print('$e', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), 'capacity', g['capacity'], 'pool', g['pool_bytes'],
      'nodes', g['recorded_nodes'], 'programmatic', g['programmatic_edges'], 'carried', g['carried_keep_window'],
      'records', t and sum(k['launches'] for k in t['kernels']), file=sys.stderr)
" >> $L/e2e_b1.jsonl
done
