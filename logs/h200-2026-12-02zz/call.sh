#!/usr/bin/env bash
# GPU call 12-02zz: compute-sanitizer memcheck and racecheck of the tests that run the f16 kernels new in this build:
# the tensor-core prefills (mma and wgmma/TMA, bf16 and f16), the scalar prefill and decode edge shapes in f16, and the
# casts; random suites left out.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/tests/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/tests/*
source .gpu/env.sh
export PATH=$PATH:/usr/local/cuda/bin PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L /tmp/san
{ nvidia-smi -L; date -u; } | tee $L/device.txt
T=$(ls .gpu/tests/cheems_ops-*)
ONLY=tensor_core_prefill_edge_shapes,tensor_core_prefill_learned_edge_values,tensor_core_prefill_large_biases,prefill_f16,decode_f16,casts_round
for tool in memcheck racecheck; do
  timeout 230 python3 tools/sanitize_kernels.py --bin $T --tool $tool --only $ONLY --skip-random --jobs 6 --timeout 210 \
    --out /tmp/san/$tool > $L/$tool.txt 2>&1; echo "$tool rc=$?" >> $L/$tool.txt
  tail -6 $L/$tool.txt; grep -h "SUMMARY" /tmp/san/$tool/* 2>/dev/null | sort | uniq -c
  echo "t=$(( $(date +%s) - T0 ))"
done
