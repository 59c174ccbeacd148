#!/usr/bin/env bash
# GPU call 12-02l: the final build against every peer, torch.compile included. Every kernel with its peers in one
# command (SDPA flash and with the materialised mask, the reference's attention, fla's chunk_simple_gla and
# fused_recurrent_simple_gla, the reference's chunked SSD, SSD step and CDMoE eager and under torch.compile), then end
# to end at batch 1 after 4096 tokens for both models with the PyTorch reference eager (prefill and decode) and
# under torch.compile (prefill) in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch, fla; print('torch', torch.__version__, 'fla', fla.__version__)"; } > $L/device.txt 2>&1
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 235 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill,ssd_prefill,ssd_decode,attn_decode,cdmoe \
  --budget 205 --compile-budget 75 --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-230 | head -80; echo "t=$(( $(date +%s) - T0 ))"
wait
for p in doge-320m cheems-350m; do
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
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
  timeout 60 python3 tools/bench_peers.py /tmp/$p --peers eager --phases prefill,decode --prompt 4096 --decode 32 --runs 2 > $L/eager-$p.jsonl 2> $L/eager-$p.err
  echo "eager $p rc=$?"; tail -1 $L/eager-$p.jsonl | cut -c1-400; echo "t=$(( $(date +%s) - T0 ))"
done
for p in doge-320m cheems-350m; do
  LEFT=$(( 585 - ($(date +%s) - T0) )); [ $LEFT -gt 60 ] || { echo "compile $p: no time left"; break; }
  timeout $LEFT python3 tools/bench_peers.py /tmp/$p --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget $(( LEFT - 10 )) > $L/compile-$p.jsonl 2> $L/compile-$p.err
  echo "compile $p rc=$?"; tail -1 $L/compile-$p.jsonl | cut -c1-400; echo "t=$(( $(date +%s) - T0 ))"
done
echo "end t=$(( $(date +%s) - T0 ))"
