#!/usr/bin/env bash
# GPU call l: the residual norm inside the projection that reads it (norm_linear, norm_gated_mlp), the keep window by
# row count (one block, or a cluster of 8 for at most 16 rows) and norm_rope's fixed tests, against the previous
# session's final binary (cheems-prev, 9f8b8c3) in the same call: tests, sanitizers of the new and changed kernels'
# tests, attention decode kernels, end to end Doge and Cheems, ncu of both decode steps.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; S=/tmp/side; mkdir -p $L $S /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
( python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only norm_gemv,norm_rope,keep_window_ties,few_keep --jobs 3 --timeout 150 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only norm_gemv,norm_rope,keep_window,gated_gemv,linears_match --jobs 3 --timeout 150 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T masked_attention norm_rope matmul; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  } > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
wait
tail -4 $L/racecheck.txt; tail -4 $L/memcheck.txt
for b in cheems-prev cheems cheems-prev cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel attn_decode 2>>$S/kernels.log
done | tee $L/ab.txt | grep -E "==|keep"
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
    print(b, d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2))
PY
for p in doge-320m cheems-350m; do
  timeout 100 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 2 --runs 1 > /tmp/ncu-$p.csv 2>/tmp/ncu-$p.err
  echo "ncu $p rc=$?"; python3 tools/ncu_step.py --replayed /tmp/ncu-$p.csv > $L/ncu-$p-4096-replayed.txt 2>&1; head -9 $L/ncu-$p-4096-replayed.txt
done
tar czf $L/logs.tgz -C /tmp side rc mc ncu-doge-320m.csv ncu-cheems-350m.csv tests.log
