#!/usr/bin/env bash
# GPU call 30j: the build to land (the Dh 64 kernel's 4 stages; the warpgroup kernels' mask row and ratio threshold
# from Mask::mask_head and Mask::tau_of, prefill_mma as before): the masked-attention GPU tests, the binaries of dc788ab
# (cheems_base) and the new one alternating twice, SDPA in the same call, Cheems-350M end to end and its
# torch.compile peer.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
p=cheems-350m
python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null &
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 120 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-200 | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
echo "$p rc=$?"
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
LEFT=$(( 540 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 \
  > $L/peers_$p.txt 2>&1
echo "$p peers rc=$?"; tail -3 $L/peers_$p.txt | cut -c1-400; echo "end t=$(( $(date +%s) - T0 ))"
