#!/usr/bin/env bash
# GPU call zzb: end to end Doge-320M and Cheems-350M at a 4096-token prompt on the landed kernels (7ab1754's), with
# each model's prefill under torch.compile of the reference in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz 2>/dev/null; chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
  echo "$p rc=$?"
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  LEFT=$(( 420 - ($(date +%s) - T0) )); [ $LEFT -lt 100 ] && break
  timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 > $L/compile-$p.jsonl 2> /tmp/compile-$p.err
  echo "$p compile rc=$? t=$(( $(date +%s) - T0 ))"; tail -c 400 $L/compile-$p.jsonl; tail -3 /tmp/compile-$p.err
done
