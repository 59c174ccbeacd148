#!/usr/bin/env bash
# GPU call 30m: the fused dt projection and key values (projected_mask_values). The dynamic-mask and ordering tests
# of cheems_ops, the CUDA executor's tests (every fixture in f32 and bf16 through the fused op; the replay tests),
# then Cheems-350M and Doge-320M end to end, the rule disabled (--disable-rule projected_mask_values) and on,
# alternating twice.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TO=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 200 $TO dynamic_mask cuda::order --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|FAILED|panicked" $L/tests_ops.txt | head
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 240 $TC --test-threads=2 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL" $L/tests_cuda.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for p in doge-320m cheems-350m; do
    for rule in off on; do
      extra=""; [ $rule = off ] && extra="--disable-rule projected_mask_values"
      timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json $extra \
        >> $L/e2e_$rule.jsonl 2>> $L/e2e.err
      echo "$p rule=$rule rc=$? t=$(( $(date +%s) - T0 ))"
    done
  done
done
python3 - $L <<'PY'
import json, sys
for rule in ("off", "on"):
    for l in open(f"{sys.argv[1]}/e2e_{rule}.jsonl"):
        d = json.loads(l); g = d["decode_graph"]
        print("rule", rule, d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
              "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"],
              "order", g.get("ordered_by_data"), "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
echo "end t=$(( $(date +%s) - T0 ))"
