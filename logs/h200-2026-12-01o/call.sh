#!/usr/bin/env bash
# GPU call 12-01o: the Dh 64 warpgroup prefill as blocks of three warpgroups (192 queries, one block a multiprocessor)
# that keep two key tiles in flight (tile n + 1's scores issued before tile n's P·V), with 4 stages (`cheems`) and 6
# (`cheems_e6`), against 4e40d97's kernels (`cheems_base`): the masked-attention GPU tests of the 4-stage build, the
# three binaries alternating twice on the attention prefill, SDPA in the same call, and Cheems-350M end to end (base
# and new alternating twice).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
p=cheems-350m
python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null &
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems cheems_e6; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems cheems_e6; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new4", "new6"][k % 3], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-200 | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do for b in cheems_base cheems; do
  timeout 90 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
  echo "$b $p rc=$?"
done; done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for k, l in enumerate(open(sys.argv[1])):
    d = json.loads(l); g = d["decode_graph"]
    print(["base", "new"][k % 2], d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4))
PY
echo "end t=$(( $(date +%s) - T0 ))"
