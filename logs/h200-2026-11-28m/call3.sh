#!/usr/bin/env bash
# GPU call 3: kernel and executor tests; CDMoE kernels against the reference (eager, compiled); end to end with the
# eager peer in the same call.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T expert_mix pk_topk matmul cuda::; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=" $L/tests.log; grep -E "FAILED|panicked" $L/tests.log | head
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel cdmoe,pk_topk,expert_mix --budget 150 --compile-budget 60 --out $L/kernels.json --markdown $L/kernels.md > $L/kernels.log 2>&1; echo "kernels rc=$?"
cat $L/kernels.md | head -40
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 30 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 60 python3 tools/bench_peers.py /tmp/$p --prompt 4096 --decode 32 --runs 2 --peers eager >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "decode_graph" not in d: print("peer", l[:400]); continue
    g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "pdl", g.get("programmatic_edges"), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2), "roofline", round(d["decode_roofline_fraction"], 4))
PY
