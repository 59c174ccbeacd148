#!/usr/bin/env bash
# GPU call 12-02r: the final build's correctness in one call. Every ops GPU test (each kernel against its CPU
# reference on edge and random shapes), every CUDA executor test (each fixture through the CUDA executor, f32 and bf16,
# prefill and replayed decode, poisoned buffers), the compiled-artifact tests with the fixtures, and `cheems check`
# of two fixture checkpoints.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } | tee $L/device.txt
{ timeout 200 .gpu/tests/cheems_ops-* --test-threads=4; echo "ops rc=$?"
  timeout 150 .gpu/tests/cuda-*; echo "cuda rc=$?"
  timeout 120 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -30; echo "t=$(( $(date +%s) - T0 ))"
for c in $(ls -d .gpu/fixtures/*/ | head -40); do
  [ -f $c/config.json ] || continue
  timeout 60 .gpu/bin/cheems check $c --target cuda --json > /tmp/check.json 2>> $L/check.err
  echo "check $(basename $c) rc=$? $(head -c 300 /tmp/check.json)"
done | tee $L/check.txt | cut -c1-400
echo "end t=$(( $(date +%s) - T0 ))"
