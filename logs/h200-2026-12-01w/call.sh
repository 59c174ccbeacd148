#!/usr/bin/env bash
# GPU call 12-01w: the SSD prefill's chunk_out asks for its first 32 state columns, C and B before dt and X
# (`cheems`), against main's kernels (`cheems_base`): the SSD GPU tests and every CUDA executor test of the new build,
# the two binaries alternating three times on the SSD prefill, Cheems-350M end to end alternating twice, and fla in
# the same call.
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
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 > /dev/null 2>&1 &
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
for r in 1 2; do
  for b in cheems_base cheems; do
    timeout 90 .gpu/bin/$b bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 8 --runs 3 --json > /tmp/e2e.json 2>> $L/e2e.err
    echo "$b rc=$?"; python3 -c "import json,sys; d=json.load(open('/tmp/e2e.json')); d['label']='$b'; print(json.dumps(d))" >> $L/e2e.jsonl
  done
done
python3 - $L/e2e.jsonl <<'PY'
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l); print(d["label"], "prefill ms", round(d["prefill_seconds_median"] * 1e3, 3))
PY
echo "t=$(( $(date +%s) - T0 ))"
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 100 \
  --out $L/bench_ssd.json --markdown $L/bench_ssd.md > $L/bench_ssd.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_ssd.md | cut -c1-260 | head -8
echo "end t=$(( $(date +%s) - T0 ))"
