#!/usr/bin/env bash
# GPU call 30zzi: 30zzh's lagged keep window with the keep window that advances the memo as one block of 1024 threads
# a row instead of a cluster of 8 blocks. Every CUDA executor test; end to end, alternating 33b3409 (cheems_prev), this
# build (cheems) and this build with CHEEMS_CUDA_LAG_KEEP=0: Doge-320M batch 1 after 4096 three times.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
TC=$(ls .gpu/tests/cuda-*)
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null &
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
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
for r in 1 2 3; do
  run prev cheems_prev doge-320m b1 X=1 --prompt 4096 --runs 3
  run new cheems doge-320m b1 X=1 --prompt 4096 --runs 3
  run lag_off cheems doge-320m b1 CHEEMS_CUDA_LAG_KEEP=0 --prompt 4096 --runs 3
done
echo "end t=$(( $(date +%s) - T0 ))"
