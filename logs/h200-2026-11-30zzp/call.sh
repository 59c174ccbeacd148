#!/usr/bin/env bash
# GPU call 30zzp: the kernel trace's globals set on a stream of their own, waited for when the recording ends (a module
# loaded while the device's stream records). The trace and recording tests of cheems_ops, then the trace test alone under memcheck.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T cuda::trace cuda::graph cuda::order --test-threads=1 --nocapture > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "^test |test result|panicked|recording failed" $L/tests_ops.txt | head -12
timeout 120 compute-sanitizer --tool memcheck $T cuda::trace --test-threads=1 > $L/memcheck.txt 2>&1
echo "memcheck rc=$?"; grep -E "test result|ERROR SUMMARY" $L/memcheck.txt
