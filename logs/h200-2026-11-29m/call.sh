#!/usr/bin/env bash
# GPU call m: the norm GEMVs with their loads issued ahead (s and wn before grid_entry, the residual together):
# tests (bit for bit against the norm kernel and the GEMV) and memcheck, then end to end Doge and Cheems with the
# previous session's final binary (cheems-prev, 9f8b8c3), this build without the two norm rules, and this build.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; S=/tmp/side; mkdir -p $L $S /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only norm_gemv,gated_gemv --jobs 2 --timeout 100 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 100 $T matmul norm_rope rms_norm --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 $T matmul; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 120 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  } > /tmp/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" /tmp/tests.log | head -20
wait
tail -3 $L/memcheck.txt
OFF="--disable-rule norm_linear --disable-rule norm_gated_mlp"
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  for run in "cheems-prev|" "cheems|$OFF" "cheems|" "cheems|$OFF" "cheems|"; do
    b=${run%%|*}; f=${run#*|}
    echo "{\"bin\": \"$b\", \"flags\": \"$f\"}" >> $L/e2e.jsonl
    timeout 90 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --runs 3 --json --prompt 4096 --decode 32 $f >> $L/e2e.jsonl 2>>$S/e2e.err
  done
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
b = None
for l in open(sys.argv[1]):
    d = json.loads(l)
    if "bin" in d: b = d["bin"] + (" (norm rules off)" if d["flags"] else ""); continue
    g = d["decode_graph"]
    print(b, d["variant"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2))
PY
timeout 80 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 2 --runs 1 > /tmp/ncu-doge-320m.csv 2>/tmp/ncu-doge-320m.err
echo "ncu rc=$?"; python3 tools/ncu_step.py --replayed /tmp/ncu-doge-320m.csv > $L/ncu-doge-320m-4096-replayed.txt 2>&1; head -9 $L/ncu-doge-320m-4096-replayed.txt
tar czf $L/logs.tgz -C /tmp side mc ncu-doge-320m.csv tests.log
