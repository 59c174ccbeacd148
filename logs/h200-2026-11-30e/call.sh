#!/usr/bin/env bash
# GPU call 30e: the Dh 64 warpgroup kernel (prefill_wgmma) with K and V in 4 cp.async stages (3 tiles in flight) in
# place of 2: warm-ups of the three binaries side by side, the masked-attention GPU tests of the 4-stage build, the
# binaries of 8b9de5c (cheems_base), 3 stages (cheems_st3) and 4 stages (cheems) alternating, SDPA in the same call,
# ncu of the Dh 64 causal 4K launch of the base and the 4-stage build, the CUDA executor tests with poisoned buffers.
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
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems_st3 cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 60 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > /tmp/first.txt 2>&1
R=$?; echo "first rc=$R"; [ $R -ne 0 ] && { tail -30 /tmp/first.txt; exit 0; }; echo "t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do
  for b in cheems_base cheems_st3 cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "st3", "st4"][k % 3], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 50 $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 430 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 60 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-200 | head -24; echo "t=$(( $(date +%s) - T0 ))"
for b in cheems_base cheems; do
  LEFT=$(( 560 - ($(date +%s) - T0) )); [ $LEFT -lt 30 ] && break
  timeout $LEFT ncu --set full --import-source no -k regex:'prefill_wgmma_d64_k64$' --launch-skip 2 --launch-count 1 \
    -o /tmp/prof_$b .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --runs 3 > /tmp/ncu_$b.log 2>&1
  echo "ncu $b rc=$?"; tail -2 /tmp/ncu_$b.log
  ncu --import /tmp/prof_$b.ncu-rep --page details > $L/ncu_details_$b.txt 2>&1
  grep -E "Duration|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Executed Ipc A|Registers|Theoretical Occ|Achieved Occ" $L/ncu_details_$b.txt | head -12
done
cat /tmp/first.txt >> $L/tests_attention.txt
echo "end t=$(( $(date +%s) - T0 ))"
