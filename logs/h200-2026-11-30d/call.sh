#!/usr/bin/env bash
# GPU call 30d: a quarter of the warpgroup softmax's exponentials by a polynomial on the FMA pipe (exp2_poly): one
# long test under a short limit, the masked-attention GPU tests, the binary of 87f2d0b (cheems_base) and the new one
# alternating twice, SDPA in the same call, the CUDA executor tests with poisoned buffers.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 100 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > /tmp/first.txt 2>&1
R=$?; echo "first rc=$R t=$(( $(date +%s) - T0 ))"; [ $R -ne 0 ] && { tail -30 /tmp/first.txt; exit 0; }
timeout 100 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 40 $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 270 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-200 | head -20; echo "t=$(( $(date +%s) - T0 ))"
cat /tmp/first.txt >> $L/tests_attention.txt
