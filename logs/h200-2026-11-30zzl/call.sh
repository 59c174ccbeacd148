#!/usr/bin/env bash
# GPU call 30zzl: the step's mask value computed inside the keep window (the keep window's `_key` kernels; no mask
# GEMV launch in a recorded Doge step). The keyed keep-window, carried keep-window and GEMV kernel tests; every CUDA
# executor test; memcheck of the keyed test; end to end, alternating 33b3409 (cheems_prev) and this build (cheems):
# Doge-320M batch 1 after 4096 twice.
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
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null &
timeout 100 $T keyed_keep keep_window_carried gemv --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 120 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2; do
  run prev cheems_prev doge-320m b1 X=1 --prompt 4096 --runs 3
  run new cheems doge-320m b1 X=1 --prompt 4096 --runs 3
done
echo "t=$(( $(date +%s) - T0 ))"
timeout 40 compute-sanitizer --tool memcheck $T keyed_keep > $L/memcheck.txt 2>&1; echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|test result" $L/memcheck.txt
echo "end t=$(( $(date +%s) - T0 ))"
