#!/usr/bin/env bash
# GPU call t, fifth command: racecheck of the masked-attention tests other than the tensor-core ones (call s), long
# tests split into shards, for as long as the session's device time allows.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc2
T=$(ls .gpu/tests/cheems_ops-*)
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only masked_attention::tests::gpu:: --skip tensor_core --jobs 14 --timeout 100 \
  --shard edge_shapes_match_the_cpu_kernel_prefill=4,edge_shapes_match_the_cpu_kernel_decode=3,gpu::decode_over_long_caches=4,prefill_after_a_cached_prefix=11,keep_window_ties_keep_the_lower_index=4,long_prefill_with=3,left_padded=3 \
  --out /tmp/rc2 > $L/racecheck_attn.txt 2>&1
echo "racecheck rc=$?"; grep -v "tensor_core" $L/racecheck_attn.txt | head -70
tar czf $L/rc_attn.tgz -C /tmp rc2
