#!/usr/bin/env bash
# GPU call 30x: the GQA decode kernel of a recorded step loads its first tile before the grid's wait. The
# masked-attention kernel tests, every CUDA executor test; end to end, e017d0a's binary (cheems_base: the keep window
# carried) and 2cf3a19's (cheems: also the early tile) alternating on Doge-320M (batch 1 after 4096, twice; batch 16
# after 1024, once); racecheck on the carried keep-window test, one process per case.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null &
timeout 170 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "attention tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_attention.txt | head -8; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_base cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 200 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 60 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1_$b.jsonl 2>> $L/e2e.err
    echo "$b b1 rc=$? t=$(( $(date +%s) - T0 ))"
  done
done
for b in cheems_base cheems; do
  timeout 60 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 2 --json >> $L/e2e_b16_$b.jsonl 2>> $L/e2e.err
  echo "$b b16 rc=$? t=$(( $(date +%s) - T0 ))"
done
python3 - $L <<'PY'
import json, sys, os
for bt in ("b1", "b16"):
    for b in ("cheems_base", "cheems"):
        f = f"{sys.argv[1]}/e2e_{bt}_{b}.jsonl"
        if not os.path.exists(f): continue
        for l in open(f):
            d = json.loads(l); g = d["decode_graph"]
            print(bt, b, d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
                  "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 560 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only keep_window_carried,keep_window_ties_keep \
  --shard keep_window_carried=4,keep_window_ties_keep=5 --jobs 9 --timeout $(( LEFT - 10 )) --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?" >> $L/racecheck.txt; cat $L/racecheck.txt | cut -c1-200; echo "end t=$(( $(date +%s) - T0 ))"
