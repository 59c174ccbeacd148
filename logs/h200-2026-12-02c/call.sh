#!/usr/bin/env bash
# GPU call 12-02c: the landed build (`cheems`, 159b769) against main before it (`cheems_base`, f861d55): the attention
# prefill at 4K and 16K alternating four times (for the Doge heads, whose 16K times moved in 12-02b), then end to end,
# batch 1, 4096-token prompt, alternating twice on Doge-320M and Cheems-350M (random weights, seed 1).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
for b in cheems_base cheems; do timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 & done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2 3 4; do for b in cheems_base cheems; do
  timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> $L/ab.err
  echo "$b rc=$?"
done; done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do for p in doge-320m cheems-350m; do for b in cheems_base cheems; do
  timeout 90 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  echo "$b $p rc=$?"
done; done; done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for k, l in enumerate(open(sys.argv[1])):
    d = json.loads(l); g = d["decode_graph"]
    print(["base", "new"][k % 2], d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "end t=$(( $(date +%s) - T0 ))"
