#!/usr/bin/env bash
# GPU call 12-02e: the review's mend (RESCALE_SLACK derived from RESCALE_SLACK_L2; the SASS of every function is
# identical, the CUBIN differs in the order of two constants' symbols): the masked-attention GPU tests, and the
# mended build against main before the session (`cheems_base`, f861d55) alternating twice on the attention prefill.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "attention tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_attention.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do for b in cheems_base cheems; do
  timeout 60 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --json >> $L/ab_attn_prefill.jsonl 2>> $L/ab.err
  echo "$b rc=$?"
done; done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "end t=$(( $(date +%s) - T0 ))"
