#!/usr/bin/env bash
# GPU call t: the SSD state pass with two groups of chunk loads in flight (commit after 16e0585) against the previous
# binary (cheems-prev, 16e0585), alternating: SSD chunked prefill at 1K/4K/16K; the SSD kernel tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 90 $T ssd_scan --test-threads=4; echo "ssd tests rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log
for b in cheems-prev cheems cheems-prev cheems; do
  echo "== $b"; timeout 60 .gpu/bin/$b bench-kernels --kernel ssd_prefill 2>>$L/kernels.err
done > $L/ab.txt
grep -E "==|ssd_prefill" $L/ab.txt | awk '{print $1, $2, $3, $4, $5, $6}'
