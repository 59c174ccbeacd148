#!/usr/bin/env bash
# GPU call zc, the final build: every GPU test (kernels, the CUDA executor with poisoned buffers, compiled artifacts)
# beside racecheck of the one expert-mix shard left unchecked (alone among sanitizer processes); then the SSD prefill
# and the attention prefill against their peers in one command; then racecheck of the other kernel tests earlier calls
# left unchecked and of the keep-window tests on the final counting kernel, for the time left.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; python3 -c "import torch; print('torch', torch.__version__)"; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
( CHEEMS_TEST_SHARD=0/3 timeout 200 compute-sanitizer --tool racecheck --error-exitcode 9 $T --exact expert_mix::tests::gpu::edge_shapes_match_the_cpu_kernel \
    --test-threads=1 > $L/rc-expert-mix-0of3.log 2>&1; echo "expert-mix racecheck 0/3 rc=$?" >> $L/rc-expert-mix-0of3.log ) &
RC_PID=$!
{ timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  timeout 60 .gpu/tests/artifact-*; echo "artifact rc=$?"
} > $L/tests.log 2>&1
grep -E "test result|rc=|FAILED|panicked" $L/tests.log | head -20; echo "t=$(( $(date +%s) - T0 ))"
wait $RC_PID; grep -E "test result|SUMMARY|rc=" $L/rc-expert-mix-0of3.log; echo "t=$(( $(date +%s) - T0 ))"
timeout 200 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill,attn_prefill --no-compile --budget 150 \
  --out $L/bench_kernels.json --markdown $L/bench_kernels.md > $L/bench_kernels.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-250 | head -30; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 580 - ($(date +%s) - T0) ))
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random \
  --only edge_shapes_match_the_cpu_kernel_prefill,keep_window_ties_keep_the_lower_index,left_padded_rows,ranked_keep_until,keep_lists_hold \
  --skip tensor_core_keep_window_ties --shard keep_window_ties_keep_the_lower_index=4,left_padded_rows=3,edge_shapes_match_the_cpu_kernel_prefill=2,ranked_keep_until=4 \
  --jobs 4 --timeout $LEFT --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?"; grep -vE "^\s*$" $L/racecheck.txt | tail -30
cd $L && tar czf raw.tgz bench_kernels.log -C /tmp rc && rm bench_kernels.log
echo "t=$(( $(date +%s) - T0 ))"
