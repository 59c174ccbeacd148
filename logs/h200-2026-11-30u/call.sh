#!/usr/bin/env bash
# GPU call 30u: the Dh 64 warpgroup prefill skips, per warpgroup, a key tile past the last key any of its rows sees
# causally (unless a row has seen none). The masked-attention tests, the binaries of ea6495b (cheems_base, the
# twelfth build's kernels) and the new one alternating twice, racecheck on the tensor-core prefill tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 120 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_attention.txt | head -8; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
LEFT=$(( 420 - ($(date +%s) - T0) ))
timeout $LEFT python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only tensor_core_prefill,tensor_core_keep_window_ties \
  --jobs 8 --timeout $(( LEFT - 15 )) --out /tmp/rc > $L/racecheck.txt 2>&1
echo "racecheck rc=$?" >> $L/racecheck.txt; tail -5 $L/racecheck.txt; echo "end t=$(( $(date +%s) - T0 ))"
