#!/usr/bin/env bash
# GPU call 30a: the persistent Dh 128 prefill issues P·V of tile n − 1 with the scores of tile n, so that P·V runs
# while the probabilities of tile n are taken, and stages the mask inputs of the tile it refills by cp.async: one long
# test under a short limit, the grid-width test, the binary of 87f2d0b (cheems_base) and the new one alternating three
# times, ncu of the new kernel at causal 4K; if the new one is faster: the masked-attention GPU tests with memcheck and
# racecheck of the tensor-core tests, SDPA in the same call, the CUDA executor tests with poisoned buffers.
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
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 40 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > /tmp/first.txt 2>&1
R=$?; echo "first rc=$R"; [ $R -ne 0 ] && { tail -30 /tmp/first.txt; exit 0; }; grep -E "test result|panicked" /tmp/first.txt | head -3; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 $T masked_attention::tests::gpu::pipelined_prefill_gives > /tmp/grid.txt 2>&1
R=$?; echo "grid rc=$R"; grep -E "test result|panicked" /tmp/grid.txt | head -3; [ $R -ne 0 ] && { tail -30 /tmp/grid.txt; }
for r in 1 2 3; do
  for b in cheems_base cheems; do
    timeout 60 .gpu/bin/$b bench-kernels --kernel attn_prefill --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl > /tmp/ab.txt <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
cat /tmp/ab.txt; echo "t=$(( $(date +%s) - T0 ))"
timeout 90 ncu --set full --import-source no -k regex:'prefill_tma_d128$' --launch-skip 4 --launch-count 1 -o /tmp/prof \
  .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 1 > /tmp/ncu.log 2>&1
echo "ncu rc=$?"
ncu --import /tmp/prof.ncu-rep --page details > $L/ncu_details.txt 2>&1
ncu --import /tmp/prof.ncu-rep --page source --csv --print-source sass 2> /dev/null | gzip -9 > $L/ncu_source.csv.gz
grep -E "Duration|Issue Slots Busy|No Eligible|Registers Per" $L/ncu_details.txt | head -8; echo "t=$(( $(date +%s) - T0 ))"
FASTER=$(python3 -c "
import re
b=[float(m) for l in open('/tmp/ab.txt') if l.startswith('base') for m in re.findall(r'causal S4096=([0-9.]+)', l)]
n=[float(m) for l in open('/tmp/ab.txt') if l.startswith('new') for m in re.findall(r'causal S4096=([0-9.]+)', l)]
print(int(sorted(n)[1] < sorted(b)[1]))")
echo "faster=$FASTER"; [ "$FASTER" = 1 ] || { cat /tmp/grid.txt /tmp/first.txt > $L/tests_attention.txt; exit 0; }
W=tensor_core_prefill_rows,tensor_core_prefill_edge,tensor_core_prefill_large,pipelined_prefill_gives,tensor_core_keep_window_ties
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
    --shard pipelined_prefill_gives=3 --jobs 6 --timeout 200 --out /tmp/mc > /tmp/memcheck_tc.txt 2>&1
  echo "memcheck rc=$?" >> /tmp/memcheck_tc.txt
  python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
    --shard pipelined_prefill_gives=3 --jobs 10 --timeout 200 --out /tmp/rc > /tmp/racecheck_tc.txt 2>&1
  echo "racecheck rc=$?" >> /tmp/racecheck_tc.txt ) &
SAN=$!
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; cat /tmp/memcheck_tc.txt /tmp/racecheck_tc.txt > $L/sanitizers.txt; tail -4 /tmp/memcheck_tc.txt; tail -4 /tmp/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
for t in cuda; do
  LEFT=$(( 570 - ($(date +%s) - T0) )); [ $LEFT -lt 20 ] && break
  CHEEMS_CUDA_POISON=1 timeout $LEFT $(ls .gpu/tests/$t-*) --test-threads=1 > $L/tests_$t.txt 2>&1
  echo "$t rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_$t.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
done
cat /tmp/grid.txt /tmp/first.txt >> $L/tests_attention.txt
