#!/usr/bin/env bash
# GPU call zl, the final build (2ede6c5): SSD and attention prefill against their peers (fla, SDPA, the reference),
# CDMoE against the reference eager and compiled, end to end Doge-320M and Cheems-350M; every GPU test; memcheck and
# racecheck of the SSD tests, racecheck of the keep-window tests; the eager peer's decode last, for the time left.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill,attn_prefill --no-compile --budget 150 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-230 | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 110 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel cdmoe --budget 80 --compile-budget 40 \
  --out $L/bench_cdmoe.json --markdown $L/bench_cdmoe.md > $L/bench_cdmoe.log 2>&1
echo "bench_cdmoe rc=$?"; grep -E "^\| " $L/bench_cdmoe.md | cut -c1-230 | head -8; echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=4 --jobs 5 --timeout 150 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck_ssd.txt
  python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 6 --timeout 120 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck_ssd.txt ) &
SAN=$!
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ranked_keep_until,keep_lists_hold,tensor_core_keep_window_ties \
    --shard ranked_keep_until=4,tensor_core_keep_window_ties=4 --jobs 4 --timeout 200 --out /tmp/rck > $L/racecheck_keep.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck_keep.txt ) &
SAN2=$!
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; tail -12 $L/racecheck_ssd.txt; tail -8 $L/memcheck_ssd.txt
wait $SAN2; tail -14 $L/racecheck_keep.txt; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 585 - ($(date +%s) - T0) ))
[ $LEFT -gt 60 ] && timeout $LEFT python3 tools/bench_peers.py /tmp/cheems-350m --peers eager --phases prefill,decode --prompt 4096 --decode 32 --runs 2 > $L/eager-cheems-350m.jsonl 2> $L/eager.err
echo "eager rc=$?"; tail -c 600 $L/eager-cheems-350m.jsonl
cd $L && tar czf raw.tgz bench_kernels.log bench_cdmoe.log e2e.err eager.err -C /tmp rc mc rck 2>/dev/null; rm -f bench_kernels.log bench_cdmoe.log
echo "t=$(( $(date +%s) - T0 ))"
