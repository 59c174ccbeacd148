#!/usr/bin/env bash
# GPU call 4 (final build): CDMoE kernels against the reference, and the previous build's mixture against this one's, alternating;
# end to end and ncu of the Doge decode step after 4096 tokens, alone on the GPU; then tests and sanitizers of the
# expert-mix kernels.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; S=/tmp/side; mkdir -p $L $S /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $S/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 110 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel cdmoe,pk_topk,expert_mix --budget 80 --compile-budget 40 --out $L/kernels.json --markdown $L/kernels.md > $S/kernels.log 2>&1; echo "kernels rc=$?"
grep -E "N4096|N1 |###" $L/kernels.md
for b in cheems-prev cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel expert_mix,cdmoe 2>>$S/kernels.log
done | tee $L/mix-ab.txt
B=".gpu/bin/cheems bench --target cuda --dtype bf16 --runs 2 --json"
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 60 $B /tmp/$p --prompt 4096 --decode 32 >> $L/e2e.jsonl 2>>$S/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "prefill ms", round(d["prefill_seconds_median"]*1e3, 2))
PY
timeout 110 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 2 --runs 1 > /tmp/ncu-doge-4096.csv 2>/tmp/ncu-doge-4096.err
echo "ncu rc=$?"; python3 tools/ncu_step.py /tmp/ncu-doge-4096.csv > $L/ncu-doge-4096.txt 2>&1; head -14 $L/ncu-doge-4096.txt
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only expert_mix --jobs 2 --timeout 200 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only expert_mix --jobs 2 --timeout 200 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 $T expert_mix; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  } > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
wait
tail -3 $L/racecheck.txt; tail -3 $L/memcheck.txt
tar czf $L/logs.tgz -C /tmp side rc mc ncu-doge-4096.csv ncu-doge-4096.err tests.log
