#!/usr/bin/env bash
# GPU call i: the Cheems-350M prefill of 4096 tokens under torch.compile, then cheems (call h's binary, the final
# kernels) on the same machine.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz; chmod +x .gpu/bin/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
python3 tools/random_checkpoint.py --preset cheems-350m -o /tmp/cheems-350m --seed 1 >/dev/null
timeout 175 python3 tools/bench_peers.py /tmp/cheems-350m --peers compile --phases prefill --prompt 4096 --runs 3 --compile-budget 165 > $L/compile.jsonl 2> $L/compile.err
echo "compile rc=$?"; tail -3 $L/compile.jsonl
timeout 80 .gpu/bin/cheems bench /tmp/cheems-350m --target cuda --dtype bf16 --prompt 4096 --decode 1 --runs 3 --json > $L/cheems.json 2> $L/cheems.err
echo "cheems rc=$?"; python3 -c "import json; d=json.load(open('$L/cheems.json')); print('cheems prefill ms', round(d['prefill_seconds_median']*1e3, 2))"
