#!/usr/bin/env bash
# GPU call 30zzr: pk_topk's row form asks for every candidate's down row in L2 as it forms the candidates (the rows
# the weighing gathers once the ranking is done; uncommitted, on 7a4c702). The pk_topk and expert-mix tests; every
# CUDA executor test; then end to end, alternating 7a4c702 (cheems_prev) and this build (cheems): Cheems-350M at
# batch 1 after 4096 three times and batch 16 after 1024 once; then this build traced (CHEEMS_CUDA_TRACE=1) once.
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
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 > /dev/null &
timeout 200 $T pk_topk expert_mix --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems; do
  timeout 200 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary batch-label environment args...
  local label=$1 b=$2 bt=$3 e=$4; shift 4
  env $e timeout 100 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2 3; do
  run prev cheems_prev b1 X=1 --prompt 4096 --runs 3
  run new cheems b1 X=1 --prompt 4096 --runs 3
done
run prev cheems_prev b16 X=1 --batch 16 --prompt 1024 --runs 2
run new cheems b16 X=1 --batch 16 --prompt 1024 --runs 2
CHEEMS_CUDA_TRACE=1 timeout 200 .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/traced.txt 2>&1
grep -A6 "traced step" $L/traced.txt
echo "end t=$(( $(date +%s) - T0 ))"
