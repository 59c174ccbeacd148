#!/usr/bin/env bash
# GPU call t, third command: memcheck of every SSD kernel test (proptest suites included) on the final build, whose
# state pass changed after call q's memcheck.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/mc
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 8 --timeout 150 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1
echo "memcheck rc=$?"; cat $L/memcheck_ssd.txt
tar czf $L/mc_ssd.tgz -C /tmp mc
