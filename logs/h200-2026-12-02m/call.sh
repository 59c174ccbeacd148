#!/usr/bin/env bash
# GPU call 12-02m: the final build's correctness, finished. Every ops GPU test alone on the GPU (12-02k ran them beside
# racecheck and hit its time limit), the compiled artifact tests with the staged binary, and racecheck of the
# non-proptest kernel tests whose processes did not reach racecheck's summary in 12-02k (the slow ones in shards).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/rc
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 130 $T --test-threads=4; echo "ops rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
G=tests::gpu::
W=elementwise::${G}fill_sets_every_element,elementwise::${G}glue_matches_the_cpu,expert_mix::${G}rows_with_an_id_out_of_range_are_nan
W=$W,inner_values::${G}bad_sizes_are_refused,inner_values::${G}edge_shapes_match_the_cpu_kernel,${G}decode_over_long_caches
W=$W,${G}gqa_decode_edge_shapes_match_the_cpu_kernel,${G}keep_lists_hold_the_keys_kept_in_each_tile
W=$W,${G}keep_window_carried_over_steps_matches_a_new_selection,${G}long_prefill_with_the_default_keep_window
W=$W,${G}pipelined_prefill_gives_the_same_output_from_any_grid_width,${G}ranked_keep_until_matches_the_reference_and_the_counting_kernel
W=$W,${G}tensor_core_prefill_learned_edge_values,${G}very_negative_finite_biases,pk_topk::${G}both_forms_agree_bit_for_bit
W=$W,pk_topk::${G}concurrent_launches_with_different_shared_memory,pk_topk::${G}continuous_inputs_match_bit_for_bit
W=$W,rope::${G}tables_match_the_cpu_kernel,router_topk::${G}bad_sizes_are_refused,router_topk::${G}rows_mix_tokens_and_ties_pick_the_lowest_positions
W=$W,ssd_scan::${G}chunk_scan_covers_thousands_of_blocks,ssd_scan::${G}chunk_scan_model_shapes_match_the_cpu_scan
W=$W,ssd_scan::${G}prefill_then_step_equals_a_longer_prefill,ssd_scan::${G}step_layouts_match_the_cpu_scan
W=$W,ssd_scan::${G}step_matches_the_cpu_scan,ssd_scan::${G}step_with_rope_matches_rope_then_step
SH=decode_over_long_caches=2,long_prefill_with=3,pipelined_prefill=2,keep_window_carried_over=2
timeout 350 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only $W --shard $SH \
  --jobs 14 --timeout 330 --out /tmp/rc > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
cat $L/racecheck.txt | head -50; grep -c "RACECHECK SUMMARY 0" $L/racecheck.txt
tar czf $L/rc.tgz -C /tmp rc
echo "end t=$(( $(date +%s) - T0 ))"
