#!/usr/bin/env bash
# GPU call 30g: the Dh 64 heads on the pipelined, persistent form (prefill_tma templated over the head dimension and
# key tile: 64-key tiles, two blocks a multiprocessor, a few spilled registers): the masked-attention GPU tests, the
# binaries of dc788ab (cheems_base, the Dh 64 warpgroup blocks) and the new one alternating three times, ncu of the Dh 64
# causal 4K launch of each.
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
timeout 150 $T masked_attention::tests::gpu::boolean_heads_masked_everywhere_are_uniform > /dev/null 2>&1 &
for b in cheems_base cheems; do
  timeout 150 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1 &
done
wait; echo "warm t=$(( $(date +%s) - T0 ))"
timeout 150 $T masked_attention --test-threads=4 > $L/tests_attention.txt 2>&1
echo "tests rc=$?"; grep -E "FAILED|panicked|test result|failed" $L/tests_attention.txt | head -20; echo "t=$(( $(date +%s) - T0 ))"
for r in 1 2 3; do
  for b in cheems_base cheems; do
    timeout 40 .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096,16384 --json >> $L/ab_attn_prefill.jsonl 2>> /tmp/ab.err
    echo "$b rc=$?"
  done
done
python3 - $L/ab_attn_prefill.jsonl <<'PY'
import json, sys
txt, dec, i, k = open(sys.argv[1]).read(), json.JSONDecoder(), 0, 0
while txt[i:].strip():
    d, i = dec.raw_decode(txt, len(txt) - len(txt[i:].lstrip()))
    print(["base", "tma64"][k % 2], " ".join(f"{c['case']}={c['median_ms']:.4f}" for c in d["records"] if "Dh64" in c['case'])); k += 1
PY
echo "t=$(( $(date +%s) - T0 ))"
for b in cheems_base cheems; do
  LEFT=$(( 500 - ($(date +%s) - T0) )); [ $LEFT -lt 30 ] && break
  K=$([ $b = cheems ] && echo 'prefill_tma_d64$' || echo 'prefill_wgmma_d64_k64$')
  timeout $LEFT ncu --set full --import-source no -k regex:"$K" --launch-skip 2 --launch-count 1 \
    -o /tmp/prof_$b .gpu/bin/$b bench-kernels --kernel attn_prefill --lengths 4096 --runs 3 > /tmp/ncu_$b.log 2>&1
  echo "ncu $b rc=$?"; tail -1 /tmp/ncu_$b.log
  ncu --import /tmp/prof_$b.ncu-rep --page details > $L/ncu_details_$b.txt 2>&1
  ncu --import /tmp/prof_$b.ncu-rep --page raw --csv 2>/dev/null | python3 -c "
import csv,sys
r=list(csv.reader(sys.stdin)); h,u,v=r[0],r[1],r[2]
for i,n in enumerate(h):
    if 'warps_issue_stalled' in n and 'pcsamp' in n and v[i] not in ('0',''): print(n, v[i])
" > $L/ncu_stalls_$b.txt
  grep -E "Duration|Issue Slots Busy|Registers Per|Achieved Occ" $L/ncu_details_$b.txt | head -6
  sort -t' ' -k2 -n -r $L/ncu_stalls_$b.txt | head -8
done
echo "end t=$(( $(date +%s) - T0 ))"
