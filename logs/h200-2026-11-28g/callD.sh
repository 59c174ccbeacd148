#!/usr/bin/env bash
# GPU call D: tests (poisoned buffers), end to end with the eager peer in the same call, a kernel-time profile of the
# replayed decode step (nsys when present), torch.compile of the reference's 4K prefill.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; which nsys ncu compute-sanitizer; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 70 $T > $L/ops.log 2>&1; echo "ops rc=$?" >> $L/ops.log
CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1 > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
grep -E "test result|rc=" $L/ops.log $L/cuda.log; grep -E "FAILED|panicked|FAIL|cheems:" $L/ops.log $L/cuda.log | head -20
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 40 python3 tools/bench_peers.py /tmp/$p --prompt 4096 --decode 32 --runs 2 --peers eager >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "variant" in d:
        print(d["variant"], "prompt", d["prompt"], "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms; decode", round(d["decode_tokens_per_second"], 1), "tok/s (eager", round(d["decode_eager_tokens_per_second"], 1), ")", d["decode_graph"])
    elif not d.get("partial"):
        print(d.get("checkpoint"), d.get("eager"))
PY
if command -v nsys >/dev/null; then
  timeout 90 nsys profile -o /tmp/prof --force-overwrite true --cuda-graph-trace=node .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 1 --json > /dev/null 2>$L/nsys.err
  timeout 60 nsys stats --report cuda_gpu_kern_sum --format csv -o $L/kern /tmp/prof.nsys-rep >> $L/nsys.err 2>&1
  head -25 $L/kern*.csv | cut -c1-220
fi
timeout 200 python3 tools/bench_peers.py /tmp/doge-320m --prompt 4096 --decode 32 --runs 2 --peers compile --phases prefill --compile-budget 170 > $L/compile.jsonl 2>$L/compile.err
tail -1 $L/compile.jsonl | cut -c1-600
