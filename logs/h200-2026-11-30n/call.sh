#!/usr/bin/env bash
# GPU call 30n: the replay tests (ordered by data against issue order bit for bit, now also with every fixture
# widened to 8 sequences; against node by node), then end to end with CHEEMS_CUDA_DATA_EDGES=0 and 1 alternating:
# Cheems-350M and Doge-320M at batch 1 (4096-token prompt, 32 steps) and at batch 16 (1024-token prompt).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 --batch 16 > /dev/null 2>&1 &
done
timeout 240 $TC record --test-threads=2 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL" $L/tests_cuda.txt | head; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for p in doge-320m cheems-350m; do
    for de in 0 1; do
      CHEEMS_CUDA_DATA_EDGES=$de timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json \
        >> $L/e2e_b1_$de.jsonl 2>> $L/e2e.err
      echo "$p b1 edges=$de rc=$? t=$(( $(date +%s) - T0 ))"
      CHEEMS_CUDA_DATA_EDGES=$de timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 2 --json \
        >> $L/e2e_b16_$de.jsonl 2>> $L/e2e.err
      echo "$p b16 edges=$de rc=$? t=$(( $(date +%s) - T0 ))"
    done
  done
done
python3 - $L <<'PY'
import json, sys
for b in ("b1", "b16"):
    for de in (0, 1):
        for l in open(f"{sys.argv[1]}/e2e_{b}_{de}.jsonl"):
            d = json.loads(l); g = d["decode_graph"]
            print(b, "data_edges", de, d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
                  "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"],
                  "order", g.get("ordered_by_data"), "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
echo "end t=$(( $(date +%s) - T0 ))"
