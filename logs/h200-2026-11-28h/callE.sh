#!/usr/bin/env bash
# GPU call E: torch.compile of the Cheems-350M reference's 4K prefill, then compute-sanitizer racecheck over the
# kernel tests in four processes (edge-shape tests; the proptest `random*` suites left out for time).
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 >/dev/null
timeout 215 python3 tools/bench_peers.py /tmp/cheems-350m --prompt 4096 --decode 32 --runs 2 --peers compile --phases prefill --compile-budget 200 > $L/compile.jsonl 2>$L/compile.err
tail -1 $L/compile.jsonl | cut -c1-700
T=$(ls .gpu/tests/cheems_ops-*)
R="compute-sanitizer --tool racecheck --error-exitcode 9"
timeout 300 $R $T ssd_scan::tests::gpu --skip random --test-threads=1 > $L/racecheck-ssd.log 2>&1 &
timeout 300 $R $T masked_attention::tests::gpu::edge --test-threads=1 > $L/racecheck-attn-edge.log 2>&1 &
timeout 300 $R $T masked_attention::tests::gpu --skip edge --skip random --skip tensor_core_prefill_large --test-threads=1 > $L/racecheck-attn.log 2>&1 &
timeout 300 $R $T tests::gpu --skip masked_attention --skip ssd_scan --skip random --test-threads=1 > $L/racecheck-rest.log 2>&1 &
wait
for f in $L/racecheck-*.log; do echo "== $f"; grep -E "RACECHECK SUMMARY|ERROR SUMMARY|test result|hazard" $f | sort | uniq -c | head -8; tail -2 $f; done
