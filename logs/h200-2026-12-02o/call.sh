#!/usr/bin/env bash
# GPU call 12-02o: racecheck of the kernel tests that no earlier call finished under the tool (12-02k, 12-02m), each
# split into shards of a process each (CHEEMS_TEST_SHARD), on the build of 12-02n; first the GQA decode edge shapes
# by shard without the tool (their shard filter's first run on a GPU).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
G=gqa_decode_edge_shapes_match_the_cpu_kernel
{ timeout 60 $T $G; echo "all shards rc=$?"
  for i in 0 1 2 3 4 5; do CHEEMS_TEST_SHARD=$i/6 timeout 30 $T $G; echo "shard $i/6 rc=$?"; done
} > $L/gqa_shards.txt 2>&1
grep -E "test result|rc=" $L/gqa_shards.txt; echo "t=$(( $(date +%s) - T0 ))"
W=$G,gpu::keep_window_ties_keep_the_lower_index,left_padded_rows_are_uniform_over_all_keys,prefill_after_a_cached_prefix
W=$W,edge_shapes_match_the_cpu_kernel_prefill_f32,linears_match_the_cpu,chunk_scan_edge_shapes_match_the_cpu_scan
SH=$G=9,keep_window_ties_keep=5,left_padded=5,prefill_after_a_cached_prefix=6,edge_shapes_match_the_cpu_kernel_prefill_f32=5
SH=$SH,linears_match_the_cpu=5,chunk_scan_edge=5
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W --shard $SH --jobs 15 --dry-run | tail -5
LEFT=$(( 570 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W --shard $SH \
  --jobs 15 --timeout $(( LEFT - 15 )) --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
grep -vE "^job .*passed, finished after" $L/racecheck.txt | head -40; grep -c "RACECHECK SUMMARY 0" $L/racecheck.txt
tar czf $L/rc.tgz -C /tmp rc
echo "end t=$(( $(date +%s) - T0 ))"
