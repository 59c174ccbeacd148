#!/usr/bin/env bash
# GPU call zm, the final build (as zl): prefill at 4096 tokens of Doge-320M and Cheems-350M, cheems then the
# reference under torch.compile, in this call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz 2>/dev/null; chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 1 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  echo "$p cheems rc=$? t=$(( $(date +%s) - T0 ))"
done
LEFT=$(( 560 - ($(date +%s) - T0) ))
timeout $(( LEFT / 2 )) python3 tools/bench_peers.py /tmp/doge-320m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 > $L/compile-doge-320m.jsonl 2> $L/compile-doge.err
echo "doge compile rc=$? t=$(( $(date +%s) - T0 ))"; tail -c 500 $L/compile-doge-320m.jsonl
LEFT=$(( 570 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_peers.py /tmp/cheems-350m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 > $L/compile-cheems-350m.jsonl 2> $L/compile-cheems.err
echo "cheems compile rc=$? t=$(( $(date +%s) - T0 ))"; tail -c 500 $L/compile-cheems-350m.jsonl
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2))
PY
