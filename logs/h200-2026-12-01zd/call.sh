#!/usr/bin/env bash
# GPU call 12-01zd: the warpgroup softmax taking its probabilities against the running maximum before computing the
# tile maximum, which it computes only when a thread's partial row sum reaches 128 (EXP_SPEC), and EXP_LSUM again,
# NVRTC defines in one binary (CHEEMS_NVRTC_EXTRA): the masked-attention GPU tests of EXP_SPEC, the three alternating
# three times on the attention prefill, and SDPA in the same call for EXP_SPEC.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
V=("" "-DEXP_LSUM" "-DEXP_SPEC")
for v in "${V[@]}"; do
  CHEEMS_NVRTC_EXTRA="$v" timeout 150 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
CHEEMS_NVRTC_EXTRA="-DEXP_SPEC" timeout 150 $T masked_attention --test-threads=4 > "$L/tests_attention_spec.txt" 2>&1
echo "tests [spec] rc=$?"; grep -E "FAILED|panicked|test result|failed" "$L/tests_attention_spec.txt" | head -12; echo "t=$(( $(date +%s) - T0 ))"
for v in "-DEXP_LSUM" "-DEXP_SPEC"; do
  CHEEMS_NVRTC_EXTRA="$v" timeout 60 $T masked_attention::tests::gpu::tensor_core_prefill_rows_are_uniform_when_fully_masked_and_sum_to_one --nocapture 2>&1 | grep -E "^EXP|test result" | head -20 | tee -a $L/sum_to_one.txt
done
for r in 1 2 3; do
  for i in 0 1 2; do
    CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 40 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024,4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "v$i rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "lsum", "spec"][k % 3], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
for i in 2; do
  CHEEMS_NVRTC_EXTRA="${V[$i]}" timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
    --out $L/bench_kernels_v$i.json --markdown $L/bench_kernels_v$i.md > /tmp/bench_kernels.log 2>&1
  echo "bench v$i rc=$?"; grep -E "^\| " $L/bench_kernels_v$i.md | cut -c1-200 | head -14; echo "t=$(( $(date +%s) - T0 ))"
done
echo "end t=$(( $(date +%s) - T0 ))"
