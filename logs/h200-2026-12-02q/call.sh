#!/usr/bin/env bash
# GPU call 12-02q: end to end at batch 1 after 4096 tokens, cheems against the PyTorch reference eager and with each
# decoder layer under torch.compile (bench_peers.py's compile-layers peer: static shapes for the prefill, dynamic for
# the decode steps), prefill and decode, in one call.
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
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  timeout 80 python3 tools/bench_peers.py /tmp/$p --peers eager --prompt 4096 --decode 32 --runs 3 > /tmp/eager-$p.jsonl 2>> $L/peers.err
  echo "eager $p rc=$?"; tail -1 /tmp/eager-$p.jsonl | tee -a $L/peers.jsonl | cut -c1-500; echo "t=$(( $(date +%s) - T0 ))"
done
for p in doge-320m cheems-350m; do
  LEFT=$(( 570 - ($(date +%s) - T0) )); [ $LEFT -gt 60 ] || { echo "compile-layers $p: no time left"; break; }
  [ $p = doge-320m ] && LEFT=$(( LEFT / 2 + 20 ))
  B=$(( (LEFT - 20) / 2 ))
  TORCH_LOGS=recompiles timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile-layers --prompt 4096 --decode 32 --runs 3 --compile-budget $B > /tmp/cl-$p.jsonl 2> /tmp/cl-$p.err
  echo "compile-layers $p rc=$? budget $B a phase"; tail -1 /tmp/cl-$p.jsonl | tee -a $L/peers.jsonl | cut -c1-700
  echo "recompiles: $(grep -c 'Recompiling function' /tmp/cl-$p.err)"; grep -iE "graph break|error" /tmp/cl-$p.err | sort | uniq -c | sort -rn | head -5 | cut -c1-300
  tail -c 4000 /tmp/cl-$p.err > $L/compile-layers-$p.err.tail; echo "t=$(( $(date +%s) - T0 ))"
done
echo "end t=$(( $(date +%s) - T0 ))"
