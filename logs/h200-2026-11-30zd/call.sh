#!/usr/bin/env bash
# GPU call 30zd: after the review's RecordOptions mend: every CUDA executor test, the carried keep-window kernel test,
# and end to end once each with CHEEMS_CUDA_CARRY_KEEP=0 and 1 on Doge-320M (batch 1 after 4096 tokens).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*); TC=$(ls .gpu/tests/cuda-*)
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null &
timeout 150 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "^test |test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 $T keep_window_carried > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked" $L/tests_ops.txt; wait
for ck in 0 1; do
  CHEEMS_CUDA_CARRY_KEEP=$ck timeout 60 .gpu/bin/cheems bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e_b1.jsonl 2>> $L/e2e.err
  echo "carry=$ck rc=$?"
done
python3 -c "
import json,sys
for l in open('$L/e2e_b1.jsonl'):
    d=json.loads(l); g=d['decode_graph']
    print('carried', g['carried_keep_window'], 'step ms', round(g['replay_seconds_median']/g['replayed_steps']*1e3,4), 'tok/s', round(d['decode_tokens_per_second'],1), 'floor', round(d['decode_roofline_fraction'],4))
"
echo "end t=$(( $(date +%s) - T0 ))"
