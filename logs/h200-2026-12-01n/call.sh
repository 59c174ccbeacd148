#!/usr/bin/env bash
# GPU call 12-01n: the Dh 64 warpgroup prefill kernel with each tile's scores in two halves of 32 keys (the first
# half's bias and maxima taken while the second half's products run) and P·V waited for at the end of its tile
# (`cheems`, experiment.diff), against e164ddb's kernels (`cheems_base`), alternating three times. Timing only.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "split"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"] if "Dh64" in c["case"])); k += 1
PY
echo "end t=$(( $(date +%s) - T0 ))"
