#!/usr/bin/env bash
# GPU call G: attention kernel tests with poisoned buffers, the CUDA executor tests, decode after the scratch change.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
CHEEMS_CUDA_POISON=1 timeout 60 $T masked_attention > $L/ops-attn.log 2>&1; echo "ops rc=$?" >> $L/ops-attn.log
CHEEMS_CUDA_POISON=1 timeout 40 .gpu/tests/cuda-* --test-threads=1 > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
grep -E "test result|rc=" $L/ops-attn.log $L/cuda.log; grep -E "FAILED|panicked" $L/ops-attn.log $L/cuda.log | head
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 30 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 20 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "per step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 3), g["recorded_nodes"])
PY
