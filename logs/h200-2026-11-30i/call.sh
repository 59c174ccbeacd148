#!/usr/bin/env bash
# GPU call 30i: the three tensor-core prefill kernels take their mask row and ratio threshold from Mask::mask_head and
# Mask::tau_of: the masked-attention GPU tests, the binaries of dc788ab (cheems_base) and the new one alternating twice,
# memcheck and racecheck on the tensor-core prefill tests (the Dh 64 kernel's 4 stages of dc788ab and this change), the
# CUDA executor tests with poisoned buffers.
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
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
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
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
W=tensor_core_prefill,pipelined_prefill_gives,tensor_core_keep_window_ties
timeout 250 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
  --shard pipelined_prefill_gives=3 --jobs 8 --timeout 200 --out /tmp/mc > /tmp/memcheck_tc.txt 2>&1
echo "memcheck rc=$?" >> /tmp/memcheck_tc.txt; tail -4 /tmp/memcheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 540 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
  --shard pipelined_prefill_gives=3 --jobs 12 --timeout $(( LEFT - 20 )) --out /tmp/rc > /tmp/racecheck_tc.txt 2>&1
echo "racecheck rc=$?" >> /tmp/racecheck_tc.txt; tail -4 /tmp/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
cat /tmp/memcheck_tc.txt /tmp/racecheck_tc.txt > $L/sanitizers.txt
LEFT=$(( 590 - ($(date +%s) - T0) ))
CHEEMS_CUDA_POISON=1 timeout $LEFT $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "end t=$(( $(date +%s) - T0 ))"
