#!/usr/bin/env bash
# GPU call t, fourth command: racecheck of every non-proptest SSD kernel test on the final build, the chunk-scan edge
# shapes split into 6 shards.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=6 --jobs 12 --timeout 110 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1
echo "racecheck rc=$?"; cat $L/racecheck_ssd.txt
tar czf $L/rc_ssd.tgz -C /tmp rc
