#!/usr/bin/env bash
# GPU call 30zzv: the phase stamps of 30zzq (pk_topk_row) and 30zzu (the GQA decode), with the trace reset clearing
# the stamps too, so that each printed block covers the one traced replayed step only (experiment.diff on dfcd860,
# not committed). Doge-320M and Cheems-350M, batch 1 after 4096, traced.
cd "$(dirname "$0")/../.."
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc CHEEMS_CUDA_TRACE=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in doge-320m cheems-350m; do
  CHEEMS_X_PHASES=1 timeout 200 .gpu/bin/cheems_ph bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 1 > $L/${p}.txt 2> $L/${p}_phases.txt
  echo "== $p"; grep -A3 "traced step" $L/${p}.txt; cat $L/${p}_phases.txt
done
