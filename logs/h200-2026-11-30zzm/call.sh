#!/usr/bin/env bash
# GPU call 30zzm: this session's fixes (6ce8826 a failed recording ends the capture; ac37dbc no slot before 0
# in the _at kernels; 80cf224 pk_topk's scalars from Scalars::of; 6cd384e the tests' LCG; 989d7f1 WarpScratch, SASS
# unchanged). The ops tests of the touched kernels (with the failed-recording test printing what it saw); every CUDA
# executor test; memcheck of the cache-writing tests. Then end to end, alternating 7827fd4 (cheems_prev, the seventeenth
# build's code) and an experiment binary (cheems_x: this build with CHEEMS_X_COPIES, which skips a replayed step's
# host-to-device copies: `none` all of them, `ids` all but the token ids, its logits then wrong; unset, it is this
# build, which is what `new` runs, the carried tree having no room for a third binary): Doge-320M and Cheems-350M at
# batch 1 after 4096, twice each.
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
for p in doge-320m cheems-350m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
timeout 100 $T cuda::graph --test-threads=1 --nocapture > $L/tests_graph.txt 2>&1
echo "graph tests rc=$?"; grep -E "^test |test result|panicked|recording|pool|recorded" $L/tests_graph.txt | head -12
timeout 240 $T dynamic_mask matmul::tests::gpu::mask_gemv norm_rope rope pk_topk expert_mix elementwise --test-threads=4 > $L/tests_ops.txt 2>&1
echo "ops tests rc=$?"; grep -E "test result|panicked|FAILED" $L/tests_ops.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait
for b in cheems_prev cheems_x; do for p in doge-320m cheems-350m; do
  timeout 200 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 --prompt 64 --decode 4 --runs 1 > /dev/null 2>&1 &
done; done
timeout 300 $TC --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "test result|FAIL|DIFFERENT|panicked" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait; echo "warm t=$(( $(date +%s) - T0 ))"
run() {  # label binary model batch-label environment args...
  local label=$1 b=$2 p=$3 bt=$4 e=$5; shift 5
  env $e timeout 60 .gpu/bin/$b bench /tmp/$p --target cuda --dtype bf16 "$@" --decode 32 --json 2>> $L/e2e.err | python3 -c "
import json, sys
d = json.load(sys.stdin); g = d['decode_graph']
d['label'] = '$label'; print(json.dumps(d))
print('$label', d['variant'], '$bt', 'step ms', round(g['replay_seconds_median'] / g['replayed_steps'] * 1e3, 4), g['recorded_nodes'],
      'floor', round(d['decode_roofline_fraction'], 4), 'longest', g.get('ordered_by_data', {}).get('longest_path'), file=sys.stderr)
" >> $L/e2e_$bt.jsonl
}
for r in 1 2; do for p in doge-320m cheems-350m; do
  run prev cheems_prev $p b1 X=1 --prompt 4096 --runs 3
  run new cheems_x $p b1 X=1 --prompt 4096 --runs 3
  run copies_none cheems_x $p b1 CHEEMS_X_COPIES=none --prompt 4096 --runs 3
  run copies_ids cheems_x $p b1 CHEEMS_X_COPIES=ids --prompt 4096 --runs 3
done; done
echo "t=$(( $(date +%s) - T0 ))"
S="rows_written_into_a_cache,keys_written_into_a_cache,mask_gemv_matches"
timeout 100 python3 tools/sanitize_kernels.py --bin $T --tool memcheck --skip-random --only $S --jobs 4 --timeout 90 --out /tmp/mc > $L/sanitizers.txt 2>&1
echo "memcheck rc=$?" >> $L/sanitizers.txt; grep -E "job|rc=|FAILED" $L/sanitizers.txt | cut -c1-200
echo "end t=$(( $(date +%s) - T0 ))"
