#!/usr/bin/env bash
# GPU call 4 (final build): CDMoE kernels against the reference; the kernel tests under compute-sanitizer racecheck.
cd "$(dirname "$0")/.."
gunzip -f .gpu/bin/*.gz .gpu/tests/*.gz; chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; compute-sanitizer --version | tail -1; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
timeout 100 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel cdmoe,pk_topk,expert_mix --budget 80 --compile-budget 40 --out $L/kernels.json --markdown $L/kernels.md > $L/kernels.log 2>&1; echo "kernels rc=$?"
cat $L/kernels.md | grep -E "N4096|N1 |###"
{ CHEEMS_CUDA_POISON=1 timeout 40 $T expert_mix cuda::graph; echo "ops rc=$?"; } > $L/tests.log 2>&1; grep -E "test result|rc=" $L/tests.log
python3 tools/sanitize_kernels.py --bin $T --tool racecheck --skip-random --jobs 12 --timeout 380 --out /tmp/racecheck > $L/racecheck.txt 2>&1; echo "racecheck rc=$?" >> $L/racecheck.txt
tar czf $L/racecheck.tgz -C /tmp racecheck
tail -40 $L/racecheck.txt
