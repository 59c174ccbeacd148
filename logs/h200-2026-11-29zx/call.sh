#!/usr/bin/env bash
# GPU call zx: the warp-specialized attention prefill with K and V loaded by two warps each of the producer,
# with (CHEEMS_WS=) and without (CHEEMS_WS=np) the consumers' turns: masked-attention tests, timing.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null; chmod +x .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
{ nvidia-smi -L; date -u; } > $L/device.txt 2>&1
T=$(ls .gpu/tests/cheems_ops-*)
for v in "" np; do
  [ -z "$v" ] && CHEEMS_WS=$v timeout 130 $T masked_attention::tests::gpu --test-threads=8 > $L/tests_attention$v.txt 2>&1
  [ -z "$v" ] && echo "tests $v rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention$v.txt | head -10; echo "t=$(( $(date +%s) - T0 ))"
  CHEEMS_WS=$v timeout 100 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill$v.txt 2>&1
  echo "time $v rc=$?"; grep -E "median" $L/time_prefill$v.txt | grep "Dh=128" | grep -E "Wgmma|WarpSp" | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
  echo "t=$(( $(date +%s) - T0 ))"
done
