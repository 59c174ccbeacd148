#!/usr/bin/env bash
# GPU call 30zzzd: the bf16 GQA decode of up to two queries copies its slice's second tile of K and V rows to shared
# memory before the grid's wait (cp.async, each thread its own pieces), as it already loads the first tile into
# registers. The masked-attention tests; every CUDA executor test; memcheck and racecheck of the GQA edge test. End to
# end, alternating cheems_prev (f4be521) and cheems (this build): Doge-320M at batch 1 after 4096 three times each,
# Cheems-350M once each.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T masked_attention --test-threads=4 > $L/tests_ops.log 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 200 $TC --test-threads=1 > $L/tests_cuda.log 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.log | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2 3; do
  run prev cheems_prev doge-320m b1 X=1 --prompt 4096 --runs 3
  run new cheems doge-320m b1 X=1 --prompt 4096 --runs 3
done
run prev cheems_prev cheems-350m b1 X=1 --prompt 4096 --runs 3
run new cheems cheems-350m b1 X=1 --prompt 4096 --runs 3
echo "t=$(( $(date +%s) - T0 ))"
S="gqa_decode_edge"
timeout 60 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $S --jobs 4 --timeout 55 --out /tmp/mc > $L/sanitizers.log 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.log
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only decode_kernels_leave_out_absent_slots --jobs 4 --timeout 95 --out /tmp/rc >> $L/sanitizers.log 2>&1
echo "racecheck rc=$?" >> $L/sanitizers.log; grep -E "job|rc=|FAILED|ERROR" $L/sanitizers.log | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
