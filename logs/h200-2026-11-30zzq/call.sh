#!/usr/bin/env bash
# GPU call 30zzq: an experiment binary (7a4c702 plus experiment.diff, not committed): in a traced build, thread 0 of
# block (0, 0) of pk_topk_row stamps the end of each of its phases, ns after its grid's wait let it go, summed over
# every launch (CHEEMS_X_PHASES prints the means). Cheems-350M batch 1 after 4096 (traced, text and JSON); then the
# traced timelines of Doge-320M and Cheems-350M at batch 16 after 1024.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc CHEEMS_CUDA_TRACE=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
B=.gpu/bin/cheems_ph
CHEEMS_X_PHASES=1 timeout 200 $B bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/cheems_b1.txt 2> $L/cheems_b1_phases.txt
cat $L/cheems_b1.txt; tail -12 $L/cheems_b1_phases.txt
for p in doge-320m cheems-350m; do
  timeout 200 $B bench /tmp/$p --target cuda --dtype bf16 --batch 16 --prompt 1024 --decode 32 --runs 1 --json > $L/${p}_b16.json 2>> $L/e2e.err
  python3 -c "
import json, sys
d = json.load(open('$L/${p}_b16.json')); g = d['decode_graph']; t = g['trace']
print('$p b16 step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), 'traced span us', round(t['span_us'], 1))
for k in t['kernels'][:10]: print('   %8.1f us %4d x  %s' % (k['us'], k['launches'], k['kernel']))
"
done
