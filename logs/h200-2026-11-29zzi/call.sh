#!/usr/bin/env bash
# GPU call zzi: the persistent pipelined attention prefill for Dh 128 with each warp's output staged in shared memory
# of its own: one long test under a short limit, the grid-width test, the masked-attention GPU tests with memcheck
# and racecheck of the tensor-core tests, timing, the binary of e8cf184 (cheems_base) and the new one alternating,
# SDPA in the same call; Doge-320M end to end with torch.compile of the reference in the same call; the CUDA executor
# tests with poisoned buffers.
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
( timeout 100 .gpu/bin/cheems_base bench-kernels --kernel attn_prefill --runs 3 --lengths 1024 > /dev/null 2>&1 ) &
W=tensor_core_prefill_edge,tensor_core_prefill_rows,tensor_core_prefill_large,long_tensor_core_prefill,tensor_core_keep_window_ties,pipelined_prefill_gives
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4,pipelined_prefill_gives=3 --jobs 6 --timeout 200 --out /tmp/mc > /tmp/memcheck_tc.txt 2>&1
  echo "memcheck rc=$?" >> /tmp/memcheck_tc.txt
  python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W \
    --shard tensor_core_prefill_edge=4,tensor_core_keep_window_ties=4,pipelined_prefill_gives=3 --jobs 10 --timeout 200 --out /tmp/rc > /tmp/racecheck_tc.txt 2>&1
  echo "racecheck rc=$?" >> /tmp/racecheck_tc.txt ) &
SAN=$!
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN; cat /tmp/memcheck_tc.txt /tmp/racecheck_tc.txt > $L/sanitizers.txt; tail -4 /tmp/memcheck_tc.txt; tail -4 /tmp/racecheck_tc.txt; echo "t=$(( $(date +%s) - T0 ))"
wait
timeout 60 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep Wgmma | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 60 .gpu/bin/$b bench-kernels --kernel attn_prefill --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
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
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
  echo "$p rc=$?"
  timeout 250 python3 tools/bench_peers.py /tmp/$p --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 \
    > $L/peers_$p.txt 2>&1
  echo "$p peers rc=$?"; tail -4 $L/peers_$p.txt
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
for t in cuda; do
  LEFT=$(( 570 - ($(date +%s) - T0) )); [ $LEFT -lt 20 ] && break
  CHEEMS_CUDA_POISON=1 timeout $LEFT $(ls .gpu/tests/$t-*) --test-threads=1 > $L/tests_$t.txt 2>&1
  echo "$t rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_$t.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
done
cat /tmp/grid.txt /tmp/first.txt >> $L/tests_attention.txt
