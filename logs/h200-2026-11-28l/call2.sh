#!/usr/bin/env bash
# GPU call 2: tests of the decode-kernel changes and programmatic edges; decode with and without them; ncu per kernel.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 $T expert_mix pk_topk matmul cuda::; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  CHEEMS_CUDA_PDL=0 timeout 60 .gpu/tests/cuda-* --test-threads=1 recorded; echo "cuda-plain rc=$?"
  timeout 90 .gpu/tests/artifact-* --test-threads=2; echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=" $L/tests.log; grep -E "FAILED|panicked" $L/tests.log | head
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  for pdl in 1 0; do
    CHEEMS_CUDA_PDL=$pdl timeout 30 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
    CHEEMS_CUDA_PDL=$pdl timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  done
  timeout 120 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 4 --runs 1 > /tmp/ncu-$p.csv 2>/tmp/ncu-$p.err
  echo "$p ncu rc=$? lines $(wc -l < /tmp/ncu-$p.csv)"
done
tar czf $L/ncu.tgz -C /tmp ncu-cheems-350m.csv ncu-doge-320m.csv ncu-cheems-350m.err ncu-doge-320m.err
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "pdl edges", g.get("programmatic_edges"), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2), "roofline", round(d["decode_roofline_fraction"], 4))
PY
