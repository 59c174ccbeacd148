#!/usr/bin/env bash
# GPU call 30zzs: the session's final build (f99dfc5). The cheems_ops tests of the recording, the ordering, the
# trace, pk_topk, expert_mix and the cache-writing kernels; every CUDA executor test; end to end at batch 1 after
# 4096 tokens, Doge-320M and Cheems-350M, plain and traced.
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
timeout 240 $T cuda:: pk_topk expert_mix dynamic_mask matmul::tests::gpu::mask_gemv norm_rope rope --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
run() {  # label model environment
  env $3 timeout 150 .gpu/bin/cheems bench /tmp/$2 --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$1'; print(json.dumps(d))
t = g.get('trace')
print('$1', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'prefill ms', round(d['prefill_seconds_median'] * 1e3, 2),
      'traced span us', t and round(t['span_us'], 1), file=sys.stderr)
" >> $L/e2e_b1.jsonl
}
for p in doge-320m cheems-350m; do
  run plain $p X=1
  run traced $p CHEEMS_CUDA_TRACE=1
done
echo "end t=$(( $(date +%s) - T0 ))"
