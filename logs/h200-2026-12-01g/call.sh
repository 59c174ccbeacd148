#!/usr/bin/env bash
# GPU call 12-01g: the floor under a kernel of a recorded step. `cheems bench-kernels --kernel chain,copy`: a recorded
# chain of 256 dependent element-wise adds of 1024 f32 values, replayed, with programmatic edges and with plain ones,
# timed per add (twice); and the device copy.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for r in 1 2; do
  timeout 120 .gpu/bin/cheems bench-kernels --kernel chain,copy --out $L/chain_$r.json
  echo "rc=$?"
done
