#!/usr/bin/env bash
# GPU call 30k: decode steps recorded in segments and ordered by data. The ordering tests of cheems_ops, the CUDA
# executor's tests (every fixture; replayed against node by node; ordered by data against issue order, bit for
# bit), then Cheems-350M and Doge-320M end to end with CHEEMS_CUDA_DATA_EDGES=0 (issue order) and 1 alternating.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TO=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 200 $TO cuda::order cuda::graph --test-threads=1 > $L/tests_order.txt 2>&1
echo "order tests rc=$?"; grep -E "^test |test result" $L/tests_order.txt | head; 
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 240 $TC --test-threads=2 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|DIFFERENT|FAIL" $L/tests_cuda.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for p in cheems-350m doge-320m; do
    for de in 0 1; do
      CHEEMS_CUDA_DATA_EDGES=$de timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json \
        >> $L/e2e_$de.jsonl 2>> $L/e2e.err
      echo "$p edges=$de rc=$? t=$(( $(date +%s) - T0 ))"
    done
  done
done
python3 - $L <<'PY'
import json, sys
for de in (0, 1):
    for l in open(f"{sys.argv[1]}/e2e_{de}.jsonl"):
        d = json.loads(l); g = d["decode_graph"]
        print("data_edges", de, d["variant"], "decode tok/s", round(d["decode_tokens_per_second"], 1),
              "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"],
              "pdl", g["programmatic_edges"], "order", g.get("ordered_by_data"), "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
echo "end t=$(( $(date +%s) - T0 ))"
