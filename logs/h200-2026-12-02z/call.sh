#!/usr/bin/env bash
# GPU call 12-02z: the attention's tensor-core prefills in f16. Every ops GPU test (the tensor-core kernels now in bf16
# and f16) and every CUDA executor test; greedy `generate` of models/cheems-py on CUDA in f32, bf16 and f16; end to end
# at batch 1 after 4096 tokens, cheems in bf16 and f16 and the PyTorch reference eager in f16, in one call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } | tee $L/device.txt
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
{ CHEEMS_CUDA_POISON=1 timeout 240 .gpu/tests/cheems_ops-* --test-threads=6; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-*; echo "cuda rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -30; echo "t=$(( $(date +%s) - T0 ))"
for d in f32 bf16 f16; do
  timeout 120 .gpu/bin/cheems generate models/cheems-py --prompt 'class Stack:' --max-tokens 64 --temperature 0 \
    --target cuda --dtype $d > /tmp/gen-$d.txt 2> /tmp/gen.err
  echo "greedy cuda $d rc=$? $(tail -1 /tmp/gen.err) $(md5sum < /tmp/gen-$d.txt)"
done | tee $L/greedy.txt
{ for d in f32 bf16 f16; do echo "== $d"; cat /tmp/gen-$d.txt; echo; done; } > $L/greedy-text.txt
wait; echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  for d in bf16 f16; do
    timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype $d --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/bench.err
    echo "cheems $p $d rc=$?"
  done
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], d["dtype"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s",
          round(d["decode_tokens_per_second"], 1), "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  LEFT=$(( 585 - ($(date +%s) - T0) )); [ $LEFT -gt 30 ] || { echo "eager $p: no time left"; break; }
  timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers eager --dtype float16 --prompt 4096 --decode 32 --runs 3 > /tmp/eager.jsonl 2>> $L/bench.err
  echo "eager $p float16 rc=$?"; tail -1 /tmp/eager.jsonl >> $L/e2e.jsonl
  python3 -c "import json,sys; d=json.loads(sys.argv[1])['eager']; print('eager prefill ms', round(d['prefill_seconds']*1e3,2), 'decode tok/s', round(d['decode_tokens_per_second'],1))" "$(tail -1 /tmp/eager.jsonl)"
done
echo "end t=$(( $(date +%s) - T0 ))"
