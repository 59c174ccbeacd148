#!/usr/bin/env bash
# GPU call 5: racecheck of the kernel tests that call 4 left unchecked (time limit, or a process that ended early).
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc5
T=$(ls .gpu/tests/cheems_ops-*)
M=masked_attention::tests::gpu; S=ssd_scan::tests::gpu; P=pk_topk::tests::gpu
groups=(
 "$M::tensor_core_prefill_edge_shapes_match_the_cpu_kernel"
 "$S::chunk_scan_model_shapes_match_the_cpu_scan rope::tests::gpu::bad_sizes_are_refused"
 "$M::tensor_core_prefill_large_biases rms_norm::tests::gpu::a_short_output_buffer_is_refused"
 "$M::long_prefill_with_the_default_keep_window"
 "$M::long_tensor_core_prefill_at_the_doge_shape"
 "$M::keep_window_ties_keep_the_lower_index $M::tensor_core_keep_window_ties_keep_the_lower_index $M::left_padded_rows_are_uniform_over_all_keys"
 "$M::prefill_after_a_cached_prefix $M::rows_of_probabilities_sum_to_one $S::chunk_scan_edge_shapes_match_the_cpu_scan matmul::tests::gpu::linears_match_the_cpu $S::bad_sizes_are_refused"
 "$P::concurrent_launches_with_different_shared_memory $P::continuous_inputs_match_bit_for_bit $P::equal_similarities_pick_the_lowest_positions $S::chunk_scan_with_positive_a_grows_like_the_cpu_scan $S::chunk_scan_with_zero_initial_state $S::empty_inputs_launch_nothing_and_keep_the_state $S::step_layouts_match_the_cpu_scan"
)
free -g > $L/mem.txt
i=0; for g in "${groups[@]}"; do
  ( echo "\$ compute-sanitizer --tool racecheck $T --exact $g --test-threads=1"; timeout 250 compute-sanitizer --tool racecheck --error-exitcode 9 $T --exact $g --test-threads=1; echo "rc=$?" ) > /tmp/rc5/racecheck-$i.log 2>&1 &
  i=$((i+1))
done
sleep 120; free -g >> $L/mem.txt
wait
for f in /tmp/rc5/*.log; do echo "== $f: $(grep -c '\.\.\. ok' $f) ok; $(grep -E 'RACECHECK SUMMARY|^rc=' $f | tr '\n' ' ')"; grep -E "FAILED|panicked|Error|Race|hazard" $f | grep -v "0 hazards" | head -3; done | tee $L/summary.txt
tar czf $L/racecheck5.tgz -C /tmp rc5
