#!/usr/bin/env bash
# GPU call 12-01i: the Dh 64 warpgroup prefill kernel waits for P·V of a tile with the next tile's scores (a tile's
# stage refilled two tiles later; 5 stages in `cheems`, 4 in `cheems_e4`), against the binary of a40229b's kernels
# (`cheems_base`): the masked-attention GPU tests, the recording and trace tests (one chain-of-adds recorder), the three
# binaries alternating twice on the attention prefill, SDPA in the same call, and `bench-kernels --kernel chain`.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems cheems_e4; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 100 $T cuda::graph cuda::trace --test-threads=1 > $L/tests_recording.txt 2>&1
echo "recording tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_recording.txt | head; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems cheems_e4; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new5", "new4"][k % 3], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-200 | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  timeout 60 .gpu/bin/cheems bench-kernels --kernel chain --json >> $L/chain.jsonl 2>> /tmp/chain.err
  echo "chain rc=$?"
done
python3 - $L/chain.jsonl <<'PY'
import json, sys
txt, dec, i = open(sys.argv[1]).read(), json.JSONDecoder(), 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(" ".join(f"{c['case']}={c['median_ms'] * 1e3:.3f}us" for c in d["records"]))
PY
echo "end t=$(( $(date +%s) - T0 ))"
