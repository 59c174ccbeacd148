#!/usr/bin/env bash
# GPU call 30zk: after the review mend of the norms (5eeb07e: each formula stated once). The
# norm, norm-rope, SSD and matmul kernel tests; every CUDA executor test; racecheck on the norm, norm-rope and SSD
# step tests; end to end once each: Doge-320M and Cheems-350M batch 1 after 4096, Doge-320M batch 16 after 1024.
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
timeout 150 $T rms_norm norm_rope ssd_scan matmul --test-threads=6 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -8; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 240 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1.jsonl 2>> $L/e2e.err
  echo "$p b1 rc=$? t=$(( $(date +%s) - T0 ))"
done
timeout 60 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 2 --json >> $L/e2e_b16.jsonl 2>> $L/e2e.err
echo "doge b16 rc=$? t=$(( $(date +%s) - T0 ))"
python3 - $L <<'PY'
import json, sys, os
for bt in ("b1", "b16"):
    for l in open(f"{sys.argv[1]}/e2e_{bt}.jsonl"):
        d = json.loads(l); g = d["decode_graph"]
        print(bt, d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
              "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
timeout 150 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only rms_norm,norm_rope,step_ \
  --jobs 8 --timeout 140 --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?" >> $L/racecheck.txt; tail -6 $L/racecheck.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
