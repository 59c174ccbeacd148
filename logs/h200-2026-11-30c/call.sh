#!/usr/bin/env bash
# GPU call 30c: the attention prefill against SDPA in the same call, now with the Cheems-350M heads too (H 16, G 4,
# Dh 64, mask values per query head); Cheems-350M end to end with torch.compile of the reference in the same call.
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
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 240 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -20; echo "t=$(( $(date +%s) - T0 ))"
p=cheems-350m
python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
echo "$p rc=$?"
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
LEFT=$(( 570 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 \
  > $L/peers_$p.txt 2>&1
echo "$p peers rc=$?"; tail -3 $L/peers_$p.txt | cut -c1-400; echo "t=$(( $(date +%s) - T0 ))"
