#!/usr/bin/env bash
# GPU call 12-02x: f16 activations. Every ops GPU test (each kernel against its CPU reference on edge and random
# shapes, now in f32, bf16 and f16), every CUDA executor test (each fixture through the CUDA executor in f32, bf16 and
# f16, prefill and replayed decode, poisoned buffers) and the compiled-artifact tests (f16 artifacts included).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems CHEEMS_CUDA_POISON=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } | tee $L/device.txt
timeout 330 .gpu/tests/cheems_ops-* --test-threads=6 > $L/ops.log 2>&1; echo "ops rc=$?" >> $L/ops.log
grep -E "test result|rc=|FAILED|panicked" $L/ops.log | head -30; echo "t=$(( $(date +%s) - T0 ))"
timeout 140 .gpu/tests/cuda-* > $L/cuda.log 2>&1; echo "cuda rc=$?" >> $L/cuda.log
grep -E "test result|rc=|FAILED|panicked|FAIL" $L/cuda.log | head -30; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 585 - ($(date +%s) - T0) ))
timeout $LEFT .gpu/tests/artifact-* > $L/artifact.log 2>&1; echo "artifact rc=$?" >> $L/artifact.log
grep -E "test result|rc=|FAILED|panicked|FAIL" $L/artifact.log | head -30
echo "end t=$(( $(date +%s) - T0 ))"
