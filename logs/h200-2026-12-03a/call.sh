#!/usr/bin/env bash
# GPU call 12-03a: the build of fe1c194 (f16 on every kernel, the attention's tensor-core prefills in bf16 and f16) on
# the H200: every ops GPU test, every CUDA executor test, the compiled-artifact tests with the fixtures; racecheck of
# the tensor-core prefill edge shapes in shards (the one test 12-02zz did not finish under the tool); end to end at
# batch 1 after 4096 tokens, cheems in bf16 and f16 and the reference eager in f16, in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } | tee $L/device.txt
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
T=.gpu/tests/cheems_ops-x
{ CHEEMS_CUDA_POISON=1 timeout 240 $T --test-threads=6; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-x; echo "cuda rc=$?"
  timeout 100 .gpu/tests/artifact-x; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -30; echo "t=$(( $(date +%s) - T0 ))"
timeout 200 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random \
  --only tensor_core_prefill_edge_shapes_match_the_cpu_kernel --shard tensor_core_prefill_edge_shapes=8 --jobs 8 \
  --timeout 190 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
tail -6 $L/racecheck.txt; grep -h "SUMMARY" /tmp/rc/* 2>/dev/null | sort | uniq -c; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  for d in bf16 f16; do
    timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype $d --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/bench.err
    echo "cheems $p $d rc=$?"
  done
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    print(d["variant"], d["dtype"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s",
          round(d["decode_tokens_per_second"], 1), "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  LEFT=$(( 590 - ($(date +%s) - T0) )); [ $LEFT -gt 30 ] || { echo "eager $p: no time left"; break; }
  timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers eager --dtype float16 --prompt 4096 --decode 32 --runs 3 > /tmp/eager.jsonl 2>> $L/bench.err
  echo "eager $p float16 rc=$?"; tail -1 /tmp/eager.jsonl >> $L/eager.jsonl
  python3 -c "import json,sys; d=json.loads(sys.argv[1])['eager']; print('eager prefill ms', round(d['prefill_seconds']*1e3,2), 'decode tok/s', round(d['decode_tokens_per_second'],1))" "$(tail -1 /tmp/eager.jsonl)"
done
echo "end t=$(( $(date +%s) - T0 ))"
