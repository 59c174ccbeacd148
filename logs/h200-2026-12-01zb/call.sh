#!/usr/bin/env bash
# GPU call 12-01zb: the SSD chunk_state reads A[h] once (the tensor-core form through shared memory; before, ws stores
# made it reload A[h] from global memory every chunk), `cheems`, against the build before it (`cheems_base`, 4f3b085):
# the SSD GPU tests and every CUDA executor test (poisoned buffers), memcheck and racecheck of the SSD
# tests, the two binaries alternating three times on the SSD prefill, and fla in the same call.
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
timeout 100 $T ssd_scan --test-threads=4 > $L/tests_ssd.txt 2>&1
echo "ssd tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_ssd.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
( python3 tools/sanitize_kernels.py --bin $T --tool memcheck --only ssd_scan --jobs 6 --timeout 120 --out /tmp/mc > $L/memcheck_ssd.txt 2>&1; echo "memcheck rc=$?" >> $L/memcheck_ssd.txt
  python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --only ssd_scan --shard chunk_scan_edge=4 --jobs 6 --timeout 120 --out /tmp/rc > $L/racecheck_ssd.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck_ssd.txt ) &
SAN=$!
CHEEMS_CUDA_POISON=1 timeout 150 .gpu/tests/cuda-* --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda tests rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -12; echo "t=$(( $(date +%s) - T0 ))"
wait $SAN
tail -4 $L/memcheck_ssd.txt; tail -4 $L/racecheck_ssd.txt; echo "t=$(( $(date +%s) - T0 ))"
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
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 80 \
  --out $L/bench_ssd.json --markdown $L/bench_ssd.md > $L/bench_ssd.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_ssd.md | cut -c1-260 | head -8
echo "end t=$(( $(date +%s) - T0 ))"
