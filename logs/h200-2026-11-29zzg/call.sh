#!/usr/bin/env bash
# GPU call zzg: the final build (the causal tile count of the warpgroup kernels written once): one long test under a
# short limit, the masked-attention GPU tests, timing, the attention prefill cases twice, the CUDA executor tests with
# poisoned buffers and the compiled-artifact tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 40 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > /tmp/first.txt 2>&1
R=$?; echo "first rc=$R"; [ $R -ne 0 ] && { tail -30 /tmp/first.txt; exit 0; }
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep "Dh=128 Wgmma" | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//'
for r in 1 2; do timeout 60 .gpu/bin/cheems bench-kernels --kernel attn_prefill > $L/bench_attn_prefill_$r.txt 2>&1; echo "bench $r rc=$?"; grep -E "S4096|S16384" $L/bench_attn_prefill_$r.txt; done
echo "t=$(( $(date +%s) - T0 ))"
for t in cuda artifact; do
  LEFT=$(( 330 - ($(date +%s) - T0) )); [ $LEFT -lt 20 ] && break
  CHEEMS_CUDA_POISON=1 timeout $LEFT $(ls .gpu/tests/$t-*) --test-threads=1 > $L/tests_$t.txt 2>&1
  echo "$t rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_$t.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
done
