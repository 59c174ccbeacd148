#!/usr/bin/env bash
# GPU call 12-02p: decode at batch 1 after 4096 tokens against the PyTorch reference under torch.compile (a
# dynamic-shape compile, the peer that 11-28d stopped after 45 s), with cheems and the reference eager in the same
# call. bench_peers.py now runs each phase once untimed before its timed passes (the compile happens there).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } | tee $L/device.txt
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait; echo "checkpoints t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/peers.err
  echo "cheems $p rc=$?"
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  timeout 80 python3 tools/bench_peers.py /tmp/$p --peers eager --phases decode --prompt 4096 --decode 32 --runs 3 > /tmp/eager-$p.jsonl 2>> $L/peers.err
  echo "eager $p rc=$?"; tail -1 /tmp/eager-$p.jsonl | tee -a $L/peers.jsonl | cut -c1-400; echo "t=$(( $(date +%s) - T0 ))"
done
for p in doge-320m cheems-350m; do
  LEFT=$(( 550 - ($(date +%s) - T0) )); [ $LEFT -gt 60 ] || { echo "compile $p: no time left"; break; }
  B=$(( LEFT - 20 )); [ $B -gt 300 ] && [ $p = doge-320m ] && B=300
  timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile --phases decode --prompt 4096 --decode 32 --runs 3 --compile-budget $B > /tmp/compile-$p.jsonl 2> /tmp/compile-$p.err
  echo "compile $p rc=$? budget $B"; tail -1 /tmp/compile-$p.jsonl | tee -a $L/peers.jsonl | cut -c1-600
  grep -iE "recompil|graph break|error" /tmp/compile-$p.err | sort | uniq -c | sort -rn | head -8 | cut -c1-300
  tail -c 3000 /tmp/compile-$p.err > $L/compile-$p.err.tail; echo "t=$(( $(date +%s) - T0 ))"
done
echo "end t=$(( $(date +%s) - T0 ))"
