#!/usr/bin/env bash
# GPU call 30zn: after the review's mend of the norms (d493e21: one loop, a thread's first column loaded early). The
# norm and norm-rope kernel tests; every CUDA executor test; racecheck on the norm tests; end to end once each:
# Doge-320M and Cheems-350M batch 1 after 4096.
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
timeout 100 $T rms_norm norm_rope --test-threads=6 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -4; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in cheems-350m doge-320m; do
  timeout 150 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 150 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -8; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1.jsonl 2>> $L/e2e.err
  echo "$p b1 rc=$? t=$(( $(date +%s) - T0 ))"
done
python3 - $L <<'PY'
import json, sys
for l in open(f"{sys.argv[1]}/e2e_b1.jsonl"):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "floor", round(d["decode_roofline_fraction"], 4))
PY
timeout 60 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only rms_norm,norm_rope \
  --jobs 8 --timeout 50 --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?" >> $L/racecheck.txt; tail -4 $L/racecheck.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
