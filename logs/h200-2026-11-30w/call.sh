#!/usr/bin/env bash
# GPU call 30w: the keep window carried over decode steps. The masked-attention kernel tests (the new step test
# among them), the CUDA executor's recording tests and the new bit-for-bit test (carried against selected anew);
# end to end with CHEEMS_CUDA_CARRY_KEEP=0 and 1 alternating (Doge-320M and Cheems-350M, batch 1 after 4096 tokens,
# twice; Doge-320M batch 16 after 1024 once); memcheck and racecheck on the keep-window tests.
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
timeout 150 $T masked_attention::tests::gpu::keep_window --test-threads=4 > $L/tests_keep.txt 2>&1
echo "keep tests rc=$?"; grep -E "^test |test result|panicked" $L/tests_keep.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 200 $TC record carried --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for p in doge-320m cheems-350m; do
    for ck in 0 1; do
      CHEEMS_CUDA_CARRY_KEEP=$ck timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json \
        >> $L/e2e_b1_$ck.jsonl 2>> $L/e2e.err
      echo "$p b1 carry=$ck rc=$? t=$(( $(date +%s) - T0 ))"
    done
  done
done
for ck in 0 1; do
  CHEEMS_CUDA_CARRY_KEEP=$ck timeout 60 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 2 --json \
    >> $L/e2e_b16_$ck.jsonl 2>> $L/e2e.err
  echo "doge b16 carry=$ck rc=$? t=$(( $(date +%s) - T0 ))"
done
python3 - $L <<'PY'
import json, sys, os
for b in ("b1", "b16"):
    for ck in (0, 1):
        f = f"{sys.argv[1]}/e2e_{b}_{ck}.jsonl"
        if not os.path.exists(f): continue
        for l in open(f):
            d = json.loads(l); g = d["decode_graph"]
            print(b, "carry", ck, g.get("carried_keep_window"), d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2),
                  "decode tok/s", round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4),
                  g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
tail -3 $L/e2e.err
echo "t=$(( $(date +%s) - T0 ))"
for tool in memcheck racecheck; do
  timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool $tool --skip-random --only keep_window --jobs 6 --timeout 90 --out /tmp/$tool > $L/$tool.txt 2>&1
  echo "$tool rc=$?" >> $L/$tool.txt; tail -4 $L/$tool.txt
done
echo "end t=$(( $(date +%s) - T0 ))"
