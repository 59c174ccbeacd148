#!/usr/bin/env bash
# GPU call 30zzu: 30zzt's experiment with a stamp after each tile of the GQA decode's loop (experiment.diff on
# 00e2e2f, not committed). Doge-320M batch 1 after 4096, traced.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc CHEEMS_CUDA_TRACE=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null
CHEEMS_X_PHASES=1 timeout 200 .gpu/bin/cheems_ph bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/doge_b1.txt 2> $L/doge_b1_phases.txt
grep -A3 "traced step" $L/doge_b1.txt; tail -8 $L/doge_b1_phases.txt
