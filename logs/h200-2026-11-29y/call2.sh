#!/usr/bin/env bash
# GPU call y, second command (same machine, same build): racecheck of one shard of the expert-mix edge shapes alone on
# the GPU, which ended abnormally in the first command with eight sanitizer processes sharing the device.
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*; source .gpu/env.sh; T=$(ls .gpu/tests/cheems_ops-*); CHEEMS_TEST_SHARD=2/3 timeout 130 compute-sanitizer --tool racecheck $T --exact expert_mix::tests::gpu::edge_shapes_match_the_cpu_kernel --test-threads=1 --nocapture > $OUT/rc-expert-mix-2of3.log 2>&1; echo "rc=$?"; tail -25 $OUT/rc-expert-mix-2of3.log
