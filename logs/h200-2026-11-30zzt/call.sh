#!/usr/bin/env bash
# GPU call 30zzt: an experiment binary (dd97c13 plus experiment.diff, not committed): in a traced build, thread 0 of
# block (0, 0, 0) of the GQA decode kernel stamps the end of each of its phases, ns after its grid's wait let it go,
# summed over every launch (CHEEMS_X_PHASES prints the means). Doge-320M batch 1 after 4096, traced, text and JSON.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc CHEEMS_CUDA_TRACE=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
python3 tools/random_checkpoint.py --preset doge-320m -o /tmp/doge-320m --seed 1 > /dev/null
B=.gpu/bin/cheems_ph
CHEEMS_X_PHASES=1 timeout 200 $B bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/doge_b1.txt 2> $L/doge_b1_phases.txt
cat $L/doge_b1.txt; tail -6 $L/doge_b1_phases.txt
CHEEMS_X_PHASES=1 timeout 200 $B bench /tmp/doge-320m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 --json > $L/doge_b1.json 2> $L/doge_b1_json_phases.txt
python3 -c "
import json; d = json.load(open('$L/doge_b1.json')); g = d['decode_graph']; print('capacity', g['capacity'], 'prompt', d['prompt'], 'decode', d['decode'], 'traced span', round(g['trace']['span_us'], 1))"
