#!/usr/bin/env bash
# GPU call 12-01h: what the recorded step's programmatic edges and its order by data are worth today. The same binary
# (533b372's source) with CHEEMS_CUDA_PDL and CHEEMS_CUDA_DATA_EDGES each on (the default) or off, alternating twice,
# both models at batch 1 after 4096.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label model environment
  local label=$1 p=$2 e=$3
  env $e timeout 150 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --runs 3 --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'programmatic', g['programmatic_edges'], 'ordered', g['ordered_by_data'], file=sys.stderr)
" >> $L/e2e_b1.jsonl
}
for r in 1 2; do for p in doge-320m cheems-350m; do
  run default $p X=1
  run no_pdl $p CHEEMS_CUDA_PDL=0
  run no_data_edges $p CHEEMS_CUDA_DATA_EDGES=0
  run neither $p "CHEEMS_CUDA_PDL=0 CHEEMS_CUDA_DATA_EDGES=0"
done; done
echo "end t=$(( $(date +%s) - T0 ))"
