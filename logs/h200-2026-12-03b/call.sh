#!/usr/bin/env bash
# GPU call 12-03b: compute-sanitizer memcheck of every GPU test of the ops crate but the proptest suites, on the build
# of fe1c194 (every kernel's f16 instance is exercised by these tests), 16 processes at once.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/mc
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=.gpu/tests/cheems_ops-x
timeout 560 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --jobs 16 --timeout 520 \
  --shard edge_shapes=4 --out /tmp/mc > $L/memcheck.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck.txt
tail -12 $L/memcheck.txt; grep -h "SUMMARY" /tmp/mc/* 2>/dev/null | sort | uniq -c
echo "end t=$(( $(date +%s) - T0 ))"
