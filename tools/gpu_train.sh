#!/usr/bin/env bash
# Trains every checkpoint of the models/ folder on the GPU machine, from the repository root, in one go (< 9 min):
#   1. the reference fixture check (CPU, float32) — the reference is trusted only if it passes;
#   2. twelve 2-layer MQAR models (ifa/dma/ssd × seq 256/512 × d_model 64/128) as concurrent background jobs, and the
#      small Cheems language model alongside them (it keeps training after the MQAR jobs end);
#   3. packs checkpoints and logs into a few .tar.gz files under $OUT (the only folder that comes back).
# Needs `.train/` (git-ignored, carried): lm_tokens.npy + lm_meta.json from `tools/train_lm.py prepare` and a copy of
# the golden fixtures in .train/fixtures.
#
#   OUT=/tmp/out bash tools/gpu_train.sh
#   SMOKE=1 OUT=/tmp/out bash tools/gpu_train.sh      # minutes-long CPU rehearsal with tiny budgets
set -uo pipefail

OUT=${OUT:?set OUT to the folder that receives the results}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/cheems-train}
SMOKE=${SMOKE:-0}
MQ_KINDS=${MQ_KINDS:-"ifa dma ssd"}
MQ_LENS=${MQ_LENS:-"256 512"}
MQ_DIMS=${MQ_DIMS:-"64 128"}
MQ_BUDGET=${MQ_BUDGET:-230}
LM_BUDGET=${LM_BUDGET:-390}
MQ_ARGS=()
LM_ARGS=()
if [ "$SMOKE" = 1 ]; then
  MQ_BUDGET=20 LM_BUDGET=20
  MQ_ARGS=(--train-examples 512 --eval-examples 8 --batch 8 --max-steps 3 --log-every 1 --device cpu)
  LM_ARGS=(--preset small --batch 2 --context 64 --max-steps 3 --log-every 1 --device cpu)
fi

rm -rf "$WORK"
mkdir -p "$WORK/models" "$WORK/logs" "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
t0=$(date +%s)
say() { echo "[gpu_train +$(( $(date +%s) - t0 ))s] $*" | tee -a "$WORK/logs/gpu_train.log"; }

say "start: budgets mqar ${MQ_BUDGET}s, lm ${LM_BUDGET}s, smoke $SMOKE"
{ nvidia-smi 2>&1 || true; $PY -c "import sys, torch, numpy; print(sys.version); print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), torch.version.cuda); print('numpy', numpy.__version__)"; } > "$WORK/logs/env.txt" 2>&1

if CUDA_VISIBLE_DEVICES= $PY tools/reference/check_fixtures.py .train/fixtures > "$WORK/logs/check_fixtures.log" 2>&1; then
  say "fixture check passed: $(tail -1 "$WORK/logs/check_fixtures.log")"
else
  say "FIXTURE CHECK FAILED (see logs/check_fixtures.log); training anyway, results are suspect"
fi

if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 15 > "$WORK/logs/gpu_util.csv" 2>&1 &
  sampler=$!
fi

declare -A jobs
for kind in $MQ_KINDS; do
  for len in $MQ_LENS; do
    for dim in $MQ_DIMS; do
      name="mqar-$kind-$len-d$dim"
      timeout $((MQ_BUDGET + 150)) $PY tools/train_mqar.py --variant "$kind" --seq-len "$len" --d-model "$dim" \
        --time-budget "$MQ_BUDGET" --out "$WORK/models/$name" "${MQ_ARGS[@]}" > "$WORK/logs/$name.log" 2>&1 &
      jobs[$name]=$!
    done
  done
done
timeout $((LM_BUDGET + 120)) $PY tools/train_lm.py train --data .train --model models/cheems-py \
  --out "$WORK/models/cheems-py" --time-budget "$LM_BUDGET" "${LM_ARGS[@]}" > "$WORK/logs/cheems-py.log" 2>&1 &
jobs[cheems-py]=$!
say "launched ${#jobs[@]} jobs"

for name in $(printf '%s\n' "${!jobs[@]}" | sort); do
  wait "${jobs[$name]}"
  rc=$?
  say "$name exited with $rc: $(tail -1 "$WORK/logs/$name.log")"
done
[ -n "${sampler:-}" ] && kill "$sampler" 2> /dev/null

cd "$WORK/models" || exit 1
tar -czf "$OUT/mqar-256.tar.gz" mqar-*-256-* 2> /dev/null
tar -czf "$OUT/mqar-512.tar.gz" mqar-*-512-* 2> /dev/null
tar -czf "$OUT/lm.tar.gz" cheems-py 2> /dev/null
say "packed: $(ls -la "$OUT" | tail -n +2 | awk '{print $9, $5}' | tr '\n' ' ')"
cd "$WORK" && tar -czf "$OUT/logs.tar.gz" logs
cp "$WORK/logs/gpu_train.log" "$OUT/gpu_train.log"
