#!/usr/bin/env bash
# GPU call t, second command: the SSD chunked prefill of the final build against its peers (PyTorch eager chunked SSD,
# flash-linear-attention chunk_simple_gla) in one command.
cd "$(dirname "$0")/../.."
gunzip -f .gpu/bin/*.gz 2>/dev/null; chmod +x .gpu/bin/*
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
timeout 150 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel ssd_prefill --no-compile --budget 140 \
  --out $L/bench_kernels_ssd.json --markdown $L/bench_kernels_ssd.md > $L/bench_kernels_ssd.log 2>&1
echo "bench_kernels rc=$?"; grep -E "^\| " $L/bench_kernels_ssd.md | cut -c1-300
