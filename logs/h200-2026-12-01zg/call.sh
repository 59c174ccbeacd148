#!/usr/bin/env bash
# GPU call 12-01zg: end to end, batch 1, 4096-token prompt: the landed build (`cheems`, 10fe48e) against main's
# kernels before it (`cheems_base`, 6e8d15d), alternating twice on Doge-320M and Cheems-350M (random weights, seed 1),
# and the `torch.compile` reference of Doge-320M's prefill in the same call.
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
echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 560 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_peers.py /tmp/doge-320m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 \
  > $L/peers_doge-320m.txt 2>&1
echo "peers rc=$?"; tail -3 $L/peers_doge-320m.txt | cut -c1-400; echo "end t=$(( $(date +%s) - T0 ))"
