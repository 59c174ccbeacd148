#!/usr/bin/env bash
# GPU call 3 (constants loaded before grid_entry in the GEMVs and pk_topk): end to end with the eager peer in the same
# call and ncu per kernel, alone on the GPU; then tests, memcheck and racecheck of the changed kernels' tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
B=".gpu/bin/cheems bench --target cuda --dtype bf16 --runs 2 --json"
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 90 $B /tmp/$p --prompt 1 --decode 64 >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 60 $B /tmp/$p --prompt 4096 --decode 32 >> $L/e2e.jsonl 2>>$L/e2e.err
  CHEEMS_CUDA_PDL=0 timeout 60 $B /tmp/$p --prompt 4096 --decode 32 >> $L/e2e-plain.jsonl 2>>$L/e2e.err
  timeout 90 python3 tools/bench_peers.py /tmp/$p --prompt 4096 --decode 32 --runs 2 --peers eager >> $L/peers.jsonl 2>>$L/e2e.err
done
timeout 100 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 1 --decode 4 --runs 1 > /tmp/ncu-cheems-350m.csv 2>/tmp/ncu-cheems-350m.err
echo "ncu rc=$?"; python3 tools/ncu_step.py /tmp/ncu-cheems-350m.csv | head -16
for f in $L/e2e.jsonl $L/e2e-plain.jsonl; do python3 - $f <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(sys.argv[1].split("/")[-1], d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "pdl", g.get("programmatic_edges"), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2), "roofline", round(d["decode_roofline_fraction"], 4))
PY
done
cut -c1-400 $L/peers.jsonl
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only pk_topk,matmul --jobs 3 --timeout 300 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only pk_topk,matmul,cuda::graph --jobs 2 --timeout 300 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T matmul pk_topk cuda::; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  CHEEMS_CUDA_PDL=0 timeout 60 .gpu/tests/cuda-* --test-threads=1 recorded; echo "cuda-plain rc=$?"
  timeout 100 .gpu/tests/artifact-* --test-threads=2; echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=" $L/tests.log; grep -E "FAILED|panicked" $L/tests.log | head
wait
tail -5 $L/racecheck.txt; tail -4 $L/memcheck.txt
tar czf $L/logs.tgz -C /tmp rc mc ncu-cheems-350m.csv ncu-cheems-350m.err
