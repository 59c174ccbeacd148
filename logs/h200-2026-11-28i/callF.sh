#!/usr/bin/env bash
# GPU call F: the recorded decode step's node counts and host issue time (cheems bench, one run each).
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz; chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "per step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 3), "host ms", round(g["replay_host_issue_seconds_median"] / g["replayed_steps"] * 1e3, 3), g["recorded_nodes"])
PY
tail -3 $L/e2e.err
