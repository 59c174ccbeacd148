#!/usr/bin/env bash
# GPU call n: racecheck of the keep-window tests that earlier calls' time limits cut short, on the final kernels
# (both keep-window kernels: one block per row and the cluster of 8).
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only keep_window_ties_keep_the_lower,decode_keep_window_beyond --jobs 2 --timeout 230 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
cat $L/racecheck.txt
tar czf $L/logs.tgz -C /tmp rc
