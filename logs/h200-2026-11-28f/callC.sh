#!/usr/bin/env bash
# GPU call C: tests (poisoned buffers), memcheck of the recorded decode steps and the new kernel paths, end to end
# with the peer.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
timeout 70 $T > $L/ops.log 2>&1; echo "ops rc=$?" >> $L/ops.log
CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1 > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
timeout 60 .gpu/tests/artifact-* > $L/artifact.log 2>&1; echo "artifact rc=$?" >> $L/artifact.log
grep -E "test result|rc=" $L/ops.log $L/cuda.log $L/artifact.log; grep -E "FAILED|panicked|FAIL|cheems:" $L/ops.log $L/cuda.log $L/artifact.log | head -30
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/tests/cuda-* recorded_decode --test-threads=1 > $L/memcheck-graph.log 2>&1; echo "memcheck rc=$?" >> $L/memcheck-graph.log
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 $T absent_slots place_rows fill_sets concurrent_launches --test-threads=1 > $L/memcheck-ops.log 2>&1; echo "memcheck rc=$?" >> $L/memcheck-ops.log
grep -E "ERROR SUMMARY|rc=|test result" $L/memcheck-graph.log $L/memcheck-ops.log
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
tail -3 $L/e2e.err
