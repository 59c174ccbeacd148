#!/usr/bin/env bash
# GPU call 12-01e: where the longest kernels of a replayed decode step wait (ncu, one launch each, d6717f5's kernels
# as built at c9d346b): Doge-320M's GQA decode, keep window and combine, Cheems-350M's row-form top-k and a residual
# norm; batch 1 after 4096. Sections: speed of light, warp states, scheduler, memory workload, source counters.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u; which ncu; ncu --version | tail -1
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
prof() {  # label model kernel-regex skip
  timeout 150 ncu --graph-profiling node --cache-control none --clock-control none -k "regex:$3" -s $4 -c 1 \
    --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --section SourceCounters --section LaunchStats --section Occupancy --page details --print-details all \
    .gpu/bin/cheems bench /tmp/$2 --target cuda --dtype bf16 --prompt 4096 --decode 4 --runs 1 > $L/ncu-$1.txt 2> $L/ncu-$1.err
  echo "$1 rc=$? t=$(( $(date +%s) - T0 ))"; grep -E "Duration|Warp Cycles Per Issued|Issue Slots Busy|Stall" $L/ncu-$1.txt | head -12
}
# Skips land in the replayed steps: the prefill and the eager steps launch each kernel fewer times than that.
prof gqa doge-320m decode_gqa 100
prof keep doge-320m keep_window 100
prof combine doge-320m "bf16_combine" 100
prof topk cheems-350m pk_topk_row 60
prof norm cheems-350m "^residual_rms_norm" 150
echo "end t=$(( $(date +%s) - T0 ))"
