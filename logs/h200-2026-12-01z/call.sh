#!/usr/bin/env bash
# GPU call 12-01z: 12-01x's chunk_out with its first 32 columns no longer loaded a second time by the scalar path; it asks for its first 32 state columns (the pieces of the chunk's own part and
# of its group's state, combined after the decay matrix), C, B and X before dt is waited for, and takes D_c through shared
# memory (`cheems`), against main's kernels (`cheems_base`): the SSD GPU tests and every CUDA executor test of the new build,
# the two binaries alternating three times on the SSD prefill, and fla in the same call.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 150 $T ssd_scan --test-threads=4 > $L/tests_ssd.txt 2>&1
echo "ssd tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_ssd.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 150 .gpu/tests/cuda-* --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel ssd_prefill --lengths 1024,4096,16384 --json >> $L/ab_ssd.jsonl 2>> $L/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_ssd.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "new "][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
wait
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 100 \
  --out $L/bench_ssd.json --markdown $L/bench_ssd.md > $L/bench_ssd.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_ssd.md | cut -c1-260 | head -8
echo "end t=$(( $(date +%s) - T0 ))"
