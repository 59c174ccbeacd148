#!/usr/bin/env bash
# GPU call 30b: the final kernels (87f2d0b, o and l rescaled only past RESCALE_SLACK): the attention prefill against
# SDPA in the same call; Doge-320M end to end with torch.compile of the reference in the same call, Cheems-350M end to
# end; the artifact tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
for p in doge-320m cheems-350m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null
  timeout 90 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 32 --runs 3 --json >> $L/e2e.jsonl 2>> /tmp/e2e.err
  echo "$p rc=$?"
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); g = d["decode_graph"]
    print(d["variant"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 2), "decode tok/s", round(d["decode_tokens_per_second"], 1),
          "step ms", round(g["replay_seconds_median"] / g["replayed_steps"] * 1e3, 4), g["recorded_nodes"], "floor", round(d["decode_roofline_fraction"], 4))
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 250 python3 tools/bench_peers.py /tmp/doge-320m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 200 \
  > $L/peers_doge-320m.txt 2>&1
echo "doge peers rc=$?"; tail -4 $L/peers_doge-320m.txt; echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 560 - ($(date +%s) - T0) ))
[ $LEFT -gt 30 ] && { timeout $LEFT $(ls .gpu/tests/artifact-*) --test-threads=2 > $L/tests_artifact.txt 2>&1
  echo "artifact rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_artifact.txt | head -6; }
echo "t=$(( $(date +%s) - T0 ))"
