#!/usr/bin/env bash
# GPU call 30zzd: the final review's mend (Graph::readers in the recording's reader scans; expert_mix's launchers
# sharing their checks; pk_topk_weighed leaving the row form to the plan; the routers' outputs from one helper). The
# pk_topk and expert_mix kernel tests; every CUDA executor test; end to end once, Cheems-350M batch 1 after 4096 and
# batch 16 after 1024.
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
timeout 200 $T pk_topk:: expert_mix:: --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for args in "--prompt 4096 --runs 3" "--batch 16 --prompt 1024 --runs 2"; do
  timeout 120 .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 $args --decode 32 --json >> $L/e2e.jsonl 2>> $L/e2e.err
  echo "bench $args rc=$?"
done
python3 -c "
import json
for l in open('$L/e2e.jsonl'):
    d = json.loads(l); g = d['decode_graph']
    print(d['variant'], 'batch', d.get('batch'), 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'])
"
echo "end t=$(( $(date +%s) - T0 ))"
