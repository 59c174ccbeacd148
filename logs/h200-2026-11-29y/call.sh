#!/usr/bin/env bash
# GPU call y, the final build (commit 6b3fa37): every GPU test alone (kernels, the CUDA executor
# with poisoned buffers, compiled artifacts); Doge-320M end to end (prefill 4096 with the keep window, decode after
# it) beside the PyTorch reference eager prefill, and Cheems-350M end to end; then racecheck of the kernel tests that
# earlier calls left unchecked, for the time that is left.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ timeout 170 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 60 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> $L/e2e.err
done
timeout 70 python3 tools/bench_peers.py /tmp/doge-320m --peers eager --phases prefill --prompt 4096 --runs 2 > $L/eager-doge-320m.jsonl 2> $L/eager-doge-320m.err
echo "doge eager rc=$?"; tail -1 $L/eager-doge-320m.jsonl | cut -c1-300
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prompt", d["prompt"], "decode", round(d["decode_tokens_per_second"], 1), "tok/s, step", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), "ms,", g["recorded_nodes"], "kernels, floor", round(d["decode_roofline_fraction"], 4), "prefill", round(d["prefill_seconds_median"] * 1e3, 2), "ms")
PY
echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 585 - ($(date +%s) - T0) ))
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --jobs 8 --timeout $LEFT \
  --only expert_mix::tests::gpu::edge,rows_with_an_id_out_of_range,linears_match_the_cpu,bad_sizes_are_refused,equal_similarities,apply_edge_shapes,rows_mix,rows_of_probabilities_sum_to_one,left_padded_rows,keep_window_ties_keep_the_lower_index,gqa_decode_edge_shapes \
  --skip tensor_core --shard left_padded_rows=3,keep_window_ties_keep_the_lower_index=4,gqa_decode_edge_shapes=4,expert_mix::tests::gpu::edge=3 \
  --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -vE "^\s*$" $L/racecheck.txt | tail -30
cd $L && tar czf raw.tgz e2e.err eager-doge-320m.err -C /tmp rc && rm e2e.err eager-doge-320m.err
echo "t=$(( $(date +%s) - T0 ))"
