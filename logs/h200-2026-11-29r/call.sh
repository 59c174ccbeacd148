#!/usr/bin/env bash
# GPU call r, the final build (commit 16e0585): every GPU test alone (kernels, CUDA executor with poisoned buffers,
# compiled artifacts); then cheems end to end (prefill 4096, decode after 4096 and after 1 token) and the PyTorch
# reference eager (prefill and decode) in the same call; the kernels against their peers (SDPA, fla, the reference);
# last, the reference prefill under torch.compile for Cheems-350M (whose attention prefill changed).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  timeout 90 python3 tools/bench_peers.py /tmp/$p --peers eager --phases prefill,decode --prompt 4096 --decode 32 --runs 2 > $L/eager-$p.jsonl 2> $L/eager-$p.err
  echo "$p eager rc=$?"; tail -1 $L/eager-$p.jsonl | cut -c1-400
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prompt", d["prompt"], "decode", round(d["decode_tokens_per_second"], 1), "tok/s, step", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "ms,", g["recorded_nodes"], "kernels, floor", round(d["decode_roofline_fraction"], 4), "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms")
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 200 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill,ssd_prefill,ssd_decode,attn_decode,cdmoe --no-compile --budget 180 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -60; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 560 - ($(date +%s) - T0) ))
if [ $LEFT -gt 100 ]; then
  timeout $(( LEFT - 5 )) python3 tools/bench_peers.py /tmp/cheems-350m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget $(( LEFT - 40 )) > $L/compile-cheems-350m.jsonl 2> $L/compile-cheems-350m.err
  echo "compile rc=$?"; tail -1 $L/compile-cheems-350m.jsonl | cut -c1-400
fi
echo "t=$(( $(date +%s) - T0 ))"
