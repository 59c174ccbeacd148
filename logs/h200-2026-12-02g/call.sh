#!/usr/bin/env bash
# GPU call 12-02g: the warpgroup prefill kernels (Dh 64 and Dh 128) with each key's bias computed without branches on
# the mask mode (EXP_BIAS), and with wg_key_bias as a select rather than a branch (EXP_SEL), NVRTC defines in one
# binary (CHEEMS_NVRTC_EXTRA): masked-attention GPU tests of both variants, the three forms alternating three times on
# the attention prefill, and SDPA in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
V=("" "-DEXP_BIAS=1" "-DEXP_BIAS=1 -DEXP_SEL=1")
N=(main flat flat_sel)
for i in 0 1 2; do
  CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 150 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
for i in 1 2; do
  CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 150 $T masked_attention --test-threads=4 > "$L/tests_attention_${N[$i]}.txt" 2>&1
  echo "tests [${N[$i]}] rc=$?"; grep -E "FAILED|panicked|test result|failed" "$L/tests_attention_${N[$i]}.txt" | head -12; echo "t=$(( $(date +%s) - T0 ))"
done
for r in 1 2 3; do
  for i in 0 1 2; do
    CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 40 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024,4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> $L/ab.err
    echo "${N[$i]} rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["main", "flat", "flat_sel"][k % 3], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
for i in 1; do
  CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
    --out $L/bench_kernels_${N[$i]}.json --markdown $L/bench_kernels_${N[$i]}.md > /tmp/bench_kernels.log 2>&1
  echo "bench ${N[$i]} rc=$?"; grep -E "^\| " $L/bench_kernels_${N[$i]}.md | cut -c1-200 | head -14; echo "t=$(( $(date +%s) - T0 ))"
done
echo "end t=$(( $(date +%s) - T0 ))"
