#!/usr/bin/env bash
# GPU call 2 (ssd_rope and expert_mix_add fusions): end-to-end decode and prefill and ncu per kernel of the Cheems
# decode step first, alone on the GPU; then kernel, executor and artifact tests, memcheck of the new kernel tests and
# racecheck of two of the three tests call 1 left unchecked, one process each.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc /tmp/mc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 30 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 40 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
done
timeout 120 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
  .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 1 --decode 4 --runs 1 > /tmp/ncu-cheems-350m.csv 2>/tmp/ncu-cheems-350m.err
echo "ncu rc=$?"; python3 tools/ncu_step.py /tmp/ncu-cheems-350m.csv | head -30
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], d["prompt"], round(d["decode_tokens_per_second"], 1), "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "pdl edges", g.get("programmatic_edges"), "prefill ms", round(d["prefill_seconds_median"]*1e3, 2), "roofline", round(d["decode_roofline_fraction"], 4))
PY
i=0; for t in ssd_scan::tests::gpu::chunk_scan_edge_shapes_match_the_cpu_scan matmul::tests::gpu::linears_match_the_cpu; do
  ( echo "\$ compute-sanitizer --tool racecheck $T --exact $t"; timeout 380 compute-sanitizer --tool racecheck --error-exitcode 9 $T --exact $t --test-threads=1; echo "rc=$?" ) > /tmp/rc/racecheck-$i.log 2>&1 &
  i=$((i+1))
done
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only step_with_rope,an_addend,expert_mix,ssd_scan::tests::gpu::step,rope:: --jobs 2 --timeout 300 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt ) &
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 $T expert_mix ssd_scan rope; echo "ops-poison rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 80 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 100 .gpu/tests/artifact-* --test-threads=2; echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=" $L/tests.log; grep -E "FAILED|panicked" $L/tests.log | head
wait
for f in /tmp/rc/*.log; do echo "== $f: $(grep -c '\.\.\. ok' $f) ok; $(grep -E 'RACECHECK SUMMARY|^rc=' $f | tr '\n' ' ')"; grep -E "FAILED|panicked|Race|hazard" $f | grep -v "0 hazards" | head -3; done | tee $L/racecheck.txt
tail -6 $L/memcheck.txt
tar czf $L/logs.tgz -C /tmp rc mc ncu-cheems-350m.csv ncu-cheems-350m.err
