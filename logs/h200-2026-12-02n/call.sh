#!/usr/bin/env bash
# GPU call 12-02n: the Dh 64 warpgroup prefill with a twin kernel for every mode but the causal one (`_flat`: the keys'
# biases through Mask::key_bias_flat, without a branch on the mode; every other function's SASS unchanged), `cheems`,
# against main (`cheems_base`, 890fcf9): the masked-attention GPU tests, memcheck and racecheck of the tests that run
# the warpgroup kernels, every CUDA executor test (poisoned buffers, every fixture, f32 and bf16), the two binaries
# alternating three times on the attention prefill, and SDPA (flash, and with the materialised mask) in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "attention tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_attention.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
W=tensor_core_prefill,tensor_core_keep_window_ties
( timeout 230 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
    --shard edge_shapes=3 --jobs 8 --timeout 200 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt
  timeout 250 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
    --shard edge_shapes=4 --jobs 12 --timeout 230 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt ) &
SAN=$!
CHEEMS_CUDA_POISON=1 timeout 200 .gpu/tests/cuda-* --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN
tail -8 $L/memcheck.txt; tail -8 $L/racecheck.txt; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024,4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> $L/ab.err
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
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 80 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-220 | head -16
tar czf $L/sanitizers.tgz -C /tmp rc mc
echo "end t=$(( $(date +%s) - T0 ))"
