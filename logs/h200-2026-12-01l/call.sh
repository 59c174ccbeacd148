#!/usr/bin/env bash
# GPU call 12-01l: the two warpgroups of the Dh 64 warpgroup prefill kernel take turns at issuing their products (named
# barriers; `cheems`), against e164ddb's kernels (`cheems_base`): the masked-attention GPU tests of the turns build, then
# the two binaries alternating three times on the attention prefill.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
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
    print(["base", "turns"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"] if "Dh64" in c["case"])); k += 1
PY
echo "end t=$(( $(date +%s) - T0 ))"
