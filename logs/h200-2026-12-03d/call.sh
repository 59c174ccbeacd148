#!/usr/bin/env bash
# GPU call 12-03d: racecheck of the expert-mix edge shapes (f32, bf16, f16) in 8 shards, 4 processes at once: in
# 12-03c, beside 15 other sanitizer processes, its shards ended abnormally ("process didn't terminate successfully").
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; } | tee $L/device.txt
timeout 290 python3 tools/sanitize_kernels.py --bin .gpu/tests/cheems_ops-x --tool racecheck --skip-random --jobs 4 \
  --timeout 280 --only expert_mix::tests::gpu::edge_shapes_match_the_cpu_kernel --shard edge_shapes=8 \
  --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
tail -12 $L/racecheck.txt; grep -h "SUMMARY" /tmp/rc/* 2>/dev/null | sort | uniq -c
echo "end t=$(( $(date +%s) - T0 ))"
