#!/usr/bin/env bash
# GPU call zd, the final build (as zc): memcheck and racecheck of the SSD tests on the final chunk kernels.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=6 --jobs 8 --timeout 100 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1
echo "racecheck rc=$?"; cat $L/racecheck_ssd.txt
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 8 --timeout 100 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1
echo "memcheck rc=$?"; cat $L/memcheck_ssd.txt
tar czf $L/raw.tgz -C /tmp rc mc
