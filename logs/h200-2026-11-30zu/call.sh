#!/usr/bin/env bash
# GPU call 30zu: the final code of the sixteenth build (f569a17: gemv and the mask GEMV share gemv_rows, gemv compiles to
# the fifteenth build's SASS). The matmul, dynamic-mask,
# rope and norm-rope kernel tests; every CUDA executor test; memcheck of those kernel tests and racecheck of the mask
# GEMV and cache tests; end to end, a3e642d (cheems_prev, the fifteenth build) and f569a17 (cheems) alternating:
# Doge-320M batch 1 after 4096 three times, Cheems-350M batch 1 after 4096 four times, Doge-320M batch 16 after 1024
# twice.
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
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T matmul:: dynamic_mask:: rope:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 240 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do for b in cheems_prev cheems; do
  timeout 60 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1_$b.jsonl 2>> $L/e2e.err
  echo "$b doge b1 rc=$? t=$(( $(date +%s) - T0 ))"
done; done
for r in 1 2 3 4; do for b in cheems_prev cheems; do
  timeout 60 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1_$b.jsonl 2>> $L/e2e.err
  echo "$b cheems b1 rc=$? t=$(( $(date +%s) - T0 ))"
done; done
for r in 1 2; do for b in cheems_prev cheems; do
  timeout 60 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 2 --json >> $L/e2e_b16_$b.jsonl 2>> $L/e2e.err
  echo "$b doge b16 rc=$? t=$(( $(date +%s) - T0 ))"
done; done
python3 - $L <<'PY'
import json, sys, os
for bt in ("b1", "b16"):
    for b in ("cheems_prev", "cheems"):
        f = f"{sys.argv[1]}/e2e_{bt}_{b}.jsonl"
        if not os.path.exists(f): continue
        for l in open(f):
            d = json.loads(l); g = d["decode_graph"]
            print(bt, b, d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
                  "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4),
                  "longest", g.get("ordered_by_data", {}).get("longest_path"))
PY
tail -3 $L/e2e.err
echo "t=$(( $(date +%s) - T0 ))"
timeout 120 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only gemv,mask,rope --jobs 6 --timeout 110 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only mask_gemv,rows_written_into_a_cache --jobs 4 --timeout 90 --out /tmp/rc >> $L/sanitizers.txt 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
