#!/usr/bin/env bash
# GPU call 12-03e: racecheck of one shard (1/8) of the expert-mix edge shapes alone on the GPU, with the process's own
# log, to see why the test process returned an error under the tool in 12-03d.
cd "$(dirname "$0")/../.."
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } | tee $L/device.txt
CHEEMS_TEST_SHARD=1/8 timeout 200 compute-sanitizer --tool racecheck .gpu/tests/cheems_ops-x \
  expert_mix::tests::gpu::edge_shapes_match_the_cpu_kernel --exact --test-threads=1 > $L/shard1.txt 2>&1
echo "rc=$?" >> $L/shard1.txt; tail -40 $L/shard1.txt
