#!/usr/bin/env bash
# GPU call zzd: the pipelined attention prefill for Dh 128 (tc::prefill_tma: K and V by tensor maps in three mbarrier
# stages, the two warpgroups taking turns at the tensor cores): first one long test under a short limit (a hang
# shows there), then the masked-attention GPU tests, memcheck and racecheck of the tensor-core tests, timing, the
# previous binary (cheems_old) and the new one alternating, and SDPA in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 40 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > $L/first.txt 2>&1
R=$?; echo "first rc=$R"; [ $R -ne 0 ] && { tail -30 $L/first.txt; exit 0; }; grep -E "test result|panicked" $L/first.txt | head -3; echo "t=$(( $(date +%s) - T0 ))"
( timeout 100 .gpu/bin/cheems_old bench-kernels --kernel attn_prefill --runs 3 --lengths 1024 > /dev/null 2>&1 ) &
W=tensor_core_prefill_edge,tensor_core_prefill_rows,tensor_core_prefill_large,long_tensor_core_prefill,tensor_core_keep_window_ties
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4 --jobs 6 --timeout 200 --out /tmp/mc > $L/memcheck_tc.txt 2>&1
  echo "memcheck rc=$?" >> $L/memcheck_tc.txt
  python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4 --jobs 10 --timeout 200 --out /tmp/rc > $L/racecheck_tc.txt 2>&1
  echo "racecheck rc=$?" >> $L/racecheck_tc.txt ) &
SAN=$!
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; tail -4 $L/memcheck_tc.txt; tail -4 $L/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
wait
timeout 60 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep Wgmma | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_old cheems; do
    timeout 60 .gpu/bin/$b bench-kernels --kernel attn_prefill --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
for i, l in enumerate(open(sys.argv[1])):
    d = json.loads(l)
    print(["old", "new"][i % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"]))
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
