#!/usr/bin/env bash
# GPU call 30zzx: the GQA decode combines its own slices (the last block of a KV head's slices to finish, counted in
# module-global arrival counts), replacing the combine kernel on that path. The masked-attention tests; every CUDA
# executor test. The attention decode kernel against SDPA (prev, then
# new). End to end, alternating cheems_prev (86ccff3), new, and new with CHEEMS_X_CHUNK=32 (an uncommitted hook in
# this binary: slices of 32 keys instead of 64; unset it is the build to land): Doge-320M and Cheems-350M at batch 1
# after 4096, twice each; then new traced.
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
timeout 240 $T masked_attention --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2; do for p in doge-320m cheems-350m; do
  run prev cheems_prev $p b1 X=1 --prompt 4096 --runs 3
  run new cheems $p b1 X=1 --prompt 4096 --runs 3
  run chunk32 cheems $p b1 CHEEMS_X_CHUNK=32 --prompt 4096 --runs 3
done; done
echo "t=$(( $(date +%s) - T0 ))"
for b in cheems_prev cheems; do
  timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/$b --kernel attn_decode --no-compile --budget 60 \
    --decode-batches 1 16 --out $L/attn_decode_$b.json --markdown $L/attn_decode_$b.md > $L/attn_decode_$b.txt 2>&1
  echo "attn_decode $b rc=$?"; cat $L/attn_decode_$b.md 2>/dev/null | head -20
done
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  run traced cheems $p b1 CHEEMS_CUDA_TRACE=1 --prompt 4096 --runs 3
done
echo "end t=$(( $(date +%s) - T0 ))"
