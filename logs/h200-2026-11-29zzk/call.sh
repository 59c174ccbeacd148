#!/usr/bin/env bash
# GPU call zzk: the final build (the launcher's warpgroup forms as WgForm; the kernels of zzj): the masked-attention
# GPU tests, timing, SDPA in the same call, the CUDA executor tests with poisoned buffers and the artifact tests.
cd "$(dirname "$0")/../.."
T0=$(date +%s)
gunzip -f .gpu/tests/*.gz 2>/dev/null
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/* .gpu/tests/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_BIN=$PWD/.gpu/bin/cheems
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
T=$(ls .gpu/tests/cheems_ops-*)
timeout 120 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 40 $T masked_attention::tests::gpu::long_tensor_core_prefill_at_the_doge_shape > /tmp/first.txt 2>&1
R=$?; echo "first rc=$R"; [ $R -ne 0 ] && { tail -30 /tmp/first.txt; exit 0; }; grep -E "test result|panicked" /tmp/first.txt | head -3
timeout 200 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
timeout 60 $T time_bf16_prefill --ignored --nocapture --test-threads=1 > $L/time_prefill.txt 2>&1
echo "time rc=$?"; grep -E "median" $L/time_prefill.txt | grep Wgmma | sed -e 's/masked_attention bf16 prefill //' -e 's/(causal FLOPs.*//' | head -40
timeout 60 .gpu/bin/cheems bench-kernels --kernel attn_prefill --json > $L/attn_prefill.json 2> /tmp/ab.err; echo "bench-kernels rc=$?"
timeout 170 python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --kernel attn_prefill --no-compile --budget 100 \
  --out /tmp/bench_kernels.json --markdown $L/bench_kernels.md > /tmp/bench_kernels.log 2>&1
echo "bench rc=$?"; grep -E "^\| " $L/bench_kernels.md | cut -c1-260 | head -14; echo "t=$(( $(date +%s) - T0 ))"
CHEEMS_CUDA_POISON=1 timeout 120 $(ls .gpu/tests/cuda-*) --test-threads=1 > $L/tests_cuda.txt 2>&1
echo "cuda rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_cuda.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
timeout 200 $(ls .gpu/tests/artifact-*) --test-threads=2 > $L/tests_artifact.txt 2>&1
echo "artifact rc=$?"; grep -E "FAILED|panicked|test result" $L/tests_artifact.txt | head -6; echo "t=$(( $(date +%s) - T0 ))"
