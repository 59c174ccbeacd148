#!/usr/bin/env bash
# GPU call 30zzn: the kernel trace (3f7d6f5). The trace and recording tests of cheems_ops; every CUDA executor test;
# then end to end at batch 1 after 4096 tokens, Doge-320M and Cheems-350M, untraced and traced (CHEEMS_CUDA_TRACE=1:
# every kernel compiled with CHEEMS_TRACE, one more replayed step traced), the traced Doge-320M run once more as text.
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
timeout 120 $T cuda::trace cuda::graph --test-threads=1 --nocapture > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "^test |test result|panicked" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  CHEEMS_CUDA_TRACE=1 timeout 300 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label model environment
  env $3 timeout 120 .gpu/bin/cheems bench /tmp/$2 --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$1'; print(json.dumps(d))
t = g.get('trace')
print('$1', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'traced span us', t and round(t['span_us'], 1), 'records', t and sum(k['launches'] for k in t['kernels']), file=sys.stderr)
" >> $L/e2e_b1.jsonl
}
for p in doge-320m cheems-350m; do
  run plain $p X=1
  run traced $p CHEEMS_CUDA_TRACE=1
  run plain $p X=1
  run traced $p CHEEMS_CUDA_TRACE=1
done
CHEEMS_CUDA_TRACE=1 timeout 120 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/doge_traced.txt 2>&1
cat $L/doge_traced.txt
echo "end t=$(( $(date +%s) - T0 ))"
