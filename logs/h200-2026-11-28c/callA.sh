#!/usr/bin/env bash
# GPU call A: correctness of every kernel and fixture, then kernel and end-to-end benchmarks.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; git log --oneline -1; date -u; } > $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T > $L/ops.log 2>&1; echo "ops rc=$?" >> $L/ops.log
CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
timeout 100 .gpu/tests/artifact-* >> $L/cuda.log 2>&1; echo "artifact rc=$?" >> $L/cuda.log
grep -E "test result|rc=" $L/ops.log $L/cuda.log
grep -E "FAILED|panicked" $L/ops.log $L/cuda.log | head -30
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/bench.jsonl 2>>$L/device.txt
done
python3 - $L/bench.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); p = d["decode_step_profile"]
    print(d["variant"], "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms; decode", round(d["decode_tokens_per_second"], 1), "tok/s; step", round(p["seconds"] * 1e3, 2), "ms, host", round(p["host_issue_seconds"] * 1e3, 2), "ms,", p["nodes"], "nodes")
    print("  host by op:", [(k, round(v * 1e3, 2)) for k, v in p["host_issue_seconds_by_op"][:8]])
    print("  prefill by op:", [(k, round(v * 1e3, 2)) for k, v in d["prefill_profile_seconds_by_op"][:6]])
PY
timeout 260 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --budget 230 --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
grep -E "cheems +[0-9]" $L/bench_kernels.log | head -40
