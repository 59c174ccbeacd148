#!/usr/bin/env bash
# GPU call 30zzb: place_rows leaves out rows that a device position puts outside the capacity. The elementwise
# kernel tests and memcheck of them; every CUDA executor test (each recorded step places rows); end to end,
# alternating f62c1fb (cheems_prev, the sixteenth build) and this build (cheems): Cheems-350M and Doge-320M batch 1
# after 4096 twice each.
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
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 200 $T elementwise:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do for p in cheems-350m doge-320m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch args...
  local label=$1 b=$2 p=$3 bt=$4; shift 4
  timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for p in cheems-350m doge-320m; do for r in 1 2; do
  run prev cheems_prev $p b1 --prompt 4096 --runs 3
  run new cheems $p b1 --prompt 4096 --runs 3
done; done
echo "t=$(( $(date +%s) - T0 ))"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only elementwise --jobs 4 --timeout 90 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
