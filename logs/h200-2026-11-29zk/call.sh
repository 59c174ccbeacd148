#!/usr/bin/env bash
# GPU call zk, build of 2748815 (SSD chunk_state loads the next chunk while computing the current): every kernel test,
# SSD prefill (launcher's groups and fixed ones), ncu durations.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T --test-threads=4 > $L/tests.log 2>&1; echo "ops tests rc=$?"; grep -E "test result|FAILED|panicked" $L/tests.log
for r in 1 2; do timeout 60 .gpu/bin/cheems bench-kernels --kernel ssd_prefill --ssd-groups 4,8 2>&1 | grep -E "ssd_prefill"; done | tee $L/ab.txt
timeout 100 ncu --cache-control none --clock-control none -k regex:ssd_ --metrics gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size --csv \
  .gpu/bin/cheems bench-kernels --kernel ssd_prefill --lengths 1024,4096,16384 --runs 3 > $L/ncu-ssd.csv 2>&1
echo "ncu rc=$?"; echo "t=$(( $(date +%s) - T0 ))"
