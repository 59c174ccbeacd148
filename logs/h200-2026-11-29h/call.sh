#!/usr/bin/env bash
# GPU call h (final kernels): decode attention and CDMoE against call f's binary (cheems-f1) in the same call; attention
# decode against its PyTorch peers; end to end Doge and Cheems with both binaries; ncu of the Doge step and a full
# ncu section set of one keep-window launch; tests; sanitizers of the changed kernels' tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; S=/tmp/side; mkdir -p $L $S /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $S/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
for b in cheems-f1 cheems cheems-f1 cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel attn_decode,expert_mix,cdmoe 2>>$S/kernels.log
done | tee $L/ab.txt
timeout 90 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_decode --budget 80 --no-compile --out $L/kernels.json --markdown $L/kernels.md > $S/kernels-py.log 2>&1; echo "kernels rc=$?"
grep -E "B1 |B16" $L/kernels.md | head -12
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  for b in cheems-f1 cheems; do
    echo "{\"bin\": \"$b\"}" >> $L/e2e.jsonl
    timeout 90 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --runs 3 --json --prompt 4096 --decode 32 >> $L/e2e.jsonl 2>>$S/e2e.err
  done
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "bin" in d: b = d["bin"]; continue
    g = d["decode_graph"]
    print(b, d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "prefill ms", round(d["prefill_seconds_median"]*1e3, 2))
PY
timeout 100 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 2 --runs 1 > /tmp/ncu-doge-4096.csv 2>/tmp/ncu-doge-4096.err
echo "ncu rc=$?"; python3 tools/ncu_step.py --replayed /tmp/ncu-doge-4096.csv > $L/ncu-doge-4096-replayed.txt 2>&1; head -8 $L/ncu-doge-4096-replayed.txt
timeout 60 ncu -k regex:keep_window --launch-count 1 --set full .gpu/bin/cheems bench-kernels --kernel attn_decode --runs 3 > $S/ncu-keep-full.txt 2>&1
echo "ncu full rc=$?"; grep -E "Duration|Issue Slots Busy|Warp Cycles Per Issued|Stall|Memory Throughput|Registers Per" $S/ncu-keep-full.txt | head -14
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only keep_window_ties_keep_the_lower,beyond_the_shared,gqa_decode_over_long,expert_mix --jobs 4 --timeout 220 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only masked_attention,expert_mix --jobs 3 --timeout 220 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 200 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T masked_attention; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  } > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
wait
tail -5 $L/racecheck.txt; tail -4 $L/memcheck.txt
tar czf $L/logs.tgz -C /tmp side rc mc ncu-doge-4096.csv ncu-doge-4096.err tests.log
