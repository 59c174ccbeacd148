#!/usr/bin/env bash
# GPU call C: every kernel and fixture test, end to end against PyTorch eager, kernels against their peers,
# compute-sanitizer memcheck and racecheck on the kernel tests.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
timeout 70 $T > $L/ops.log 2>&1; echo "ops rc=$?" >> $L/ops.log
CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
grep -E "test result|rc=" $L/ops.log $L/cuda.log; grep -E "FAILED|panicked" $L/ops.log $L/cuda.log | head -20
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 45 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 40 python3 tools/bench_peers.py /tmp/$p --prompt 4096 --decode 32 --runs 2 --peers eager >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "variant" in d:
        print(d["variant"], "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms; decode", round(d["decode_tokens_per_second"], 1), "tok/s; host/step", round(d["decode_step_profile"]["host_issue_seconds"] * 1e3, 2), "ms of", round(d["decode_step_profile"]["seconds"] * 1e3, 2))
    elif not d.get("partial"):
        print(d.get("checkpoint"), d.get("eager"))
PY
timeout 135 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --budget 110 --no-compile --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
grep -E "cheems +[0-9]" $L/bench_kernels.log | head -40
F='ssd_scan::tests::gpu masked_attention::tests::gpu pk_topk::tests::gpu expert_mix::tests::gpu matmul::tests::gpu'
timeout 45 compute-sanitizer --tool memcheck --error-exitcode 9 $T $F --test-threads=1 > $L/memcheck.log 2>&1; echo "memcheck rc=$?" >> $L/memcheck.log
timeout 45 compute-sanitizer --tool racecheck --error-exitcode 9 $T $F --test-threads=1 > $L/racecheck.log 2>&1; echo "racecheck rc=$?" >> $L/racecheck.log
grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=|test result" $L/memcheck.log $L/racecheck.log
