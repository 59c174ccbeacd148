#!/usr/bin/env bash
# GPU call zn, build of 3a12ae7 (review: the chunk-group test computes its CPU reference once a shape): the SSD tests.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 100 $T ssd_scan --test-threads=4 > $L/tests.log 2>&1; echo "ssd tests rc=$?"; grep -E "test result|FAILED|panicked" $L/tests.log
