#!/usr/bin/env bash
# GPU call 12-03c: compute-sanitizer racecheck of every GPU test of the ops crate but the proptest suites, on the build
# of fe1c194 (every kernel's f16 instance is exercised by these tests), the slow tests in shards, 16 processes at once.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=.gpu/tests/cheems_ops-x
timeout 570 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --jobs 16 --timeout 540 \
  --shard edge_shapes=8,keep_window_ties_keep=5,left_padded=5,prefill_after_a_cached_prefix=6,linears_match_the_cpu=5,chunk_scan_edge=5 \
  --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
tail -14 $L/racecheck.txt; grep -h "SUMMARY" /tmp/rc/* 2>/dev/null | sort | uniq -c
echo "end t=$(( $(date +%s) - T0 ))"
