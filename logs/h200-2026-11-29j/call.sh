#!/usr/bin/env bash
# GPU call j: the fused q/k norm and rotation (norm_rope) and the keep window over a cluster of 8 blocks, against the
# previous session's final binary (cheems-prev, 9f8b8c3) in the same call: attention decode kernels, end to end Doge
# and Cheems, ncu of the Doge step; tests; sanitizers of the new and changed kernels' tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; S=/tmp/side; mkdir -p $L $S /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only keep_window,beyond_the_held,gqa_decode_over_long,norm_rope --jobs 4 --timeout 170 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only masked_attention,norm_rope --jobs 3 --timeout 170 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T masked_attention norm_rope; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 100 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  } > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
wait
for b in cheems-prev cheems cheems-prev cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel attn_decode 2>>$S/kernels.log
done | tee $L/ab.txt | grep -E "==|keep|additive"
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  for b in cheems-prev cheems; do
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
echo "ncu rc=$?"; python3 tools/ncu_step.py --replayed /tmp/ncu-doge-4096.csv > $L/ncu-doge-4096-replayed.txt 2>&1; head -12 $L/ncu-doge-4096-replayed.txt
tail -5 $L/racecheck.txt; tail -4 $L/memcheck.txt
tar czf $L/logs.tgz -C /tmp side rc mc ncu-doge-4096.csv ncu-doge-4096.err tests.log
