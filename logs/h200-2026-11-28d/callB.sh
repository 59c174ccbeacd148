#!/usr/bin/env bash
# GPU call B: end to end against the PyTorch reference (eager, torch.compile), ONNX engines on the host CPU.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; lscpu | grep -E "Model name|^CPU\(s\)"; } > $L/device.txt
CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
grep -E "test result|rc=|FAIL" $L/cuda.log | head
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 80 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 150 python3 tools/bench_peers.py /tmp/$p --prompt 4096 --decode 32 --runs 3 --compile-budget 45 >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "variant" in d:
        print(d["variant"], "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms; decode", round(d["decode_tokens_per_second"], 1), "tok/s; host/step", round(d["decode_step_profile"]["host_issue_seconds"] * 1e3, 2), "ms of", round(d["decode_step_profile"]["seconds"] * 1e3, 2))
    else:
        print({k: v for k, v in d.items() if k in ("checkpoint", "eager", "compile")})
PY
timeout 200 python3 tools/bench_onnx.py --cheems .gpu/bin/cheems --rounds 1 --label h200-host-cpu --json-out $L/bench_onnx.json > $L/bench_onnx.md 2>$L/bench_onnx.err
tail -20 $L/bench_onnx.md; tail -3 $L/bench_onnx.err
