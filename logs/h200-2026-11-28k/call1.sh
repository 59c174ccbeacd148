#!/usr/bin/env bash
# GPU call 1: kernel, executor and artifact tests at HEAD; per-kernel device times of the replayed decode step (ncu).
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; command -v ncu compute-sanitizer; ncu --version | tail -1; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
{ CHEEMS_REQUIRE_GPU=1 timeout 150 $T --test-threads=4; echo "ops rc=$?"
  CHEEMS_REQUIRE_GPU=1 CHEEMS_CUDA_POISON=1 timeout 60 .gpu/tests/cuda-* --test-threads=1; echo "cuda rc=$?"
  CHEEMS_REQUIRE_GPU=1 timeout 60 .gpu/tests/artifact-* --test-threads=2; echo "artifact rc=$?"; } > $L/tests.log 2>&1
grep -E "test result|rc=" $L/tests.log; grep -E "FAILED|panicked" $L/tests.log | head
for p in cheems-350m doge-320m; do
  python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 >/dev/null
  timeout 30 .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 64 --runs 2 --json >> $L/e2e.jsonl 2>>$L/e2e.err
  timeout 150 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 1 --decode 4 --runs 1 > /tmp/ncu-$p.csv 2>/tmp/ncu-$p.err
  echo "$p ncu rc=$? lines $(wc -l < /tmp/ncu-$p.csv)"; tail -3 /tmp/ncu-$p.err
done
tar czf $L/ncu.tgz /tmp/ncu-*.csv /tmp/ncu-*.err
cat $L/e2e.jsonl | cut -c1-300
