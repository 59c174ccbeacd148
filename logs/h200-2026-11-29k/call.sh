#!/usr/bin/env bash
# GPU call k: prefill of 4096 tokens against the PyTorch reference in one command per model: cheems (call j's binary,
# commit 1526560), then the reference eager and under torch.compile (each compile given up to 225 s), then cheems
# again, on the same machine.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz; chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 1 --runs 5 --json > $L/cheems-$p-before.json 2>> $L/cheems.err
  timeout 240 python3 tools/bench_peers.py /tmp/$p --peers eager,compile --phases prefill --prompt 4096 --runs 3 --compile-budget 225 > $L/peers-$p.jsonl 2> $L/peers-$p.err
  echo "$p peers rc=$?"; tail -1 $L/peers-$p.jsonl | cut -c1-600
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 1 --runs 5 --json > $L/cheems-$p-after.json 2>> $L/cheems.err
  python3 -c "import json; [print('$p cheems', w, round(json.load(open('$L/cheems-$p-'+w+'.json'))['prefill_seconds_median']*1e3, 2), 'ms') for w in ('before', 'after')]"
done
