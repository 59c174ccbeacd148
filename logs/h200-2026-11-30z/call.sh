#!/usr/bin/env bash
# GPU call 30z: where the replayed decode step goes now (commit 003fc51): ncu times each kernel of one replayed step
# alone, Doge-320M and Cheems-350M after a 4096-token prompt (tools/ncu_step.py --replayed).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f" 2>/dev/null || python3 -c "import lzma,sys; open(sys.argv[1][:-3],'wb').write(lzma.open(sys.argv[1]).read())" "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1 CHEEMS_KERNEL_CACHE=/tmp/kc
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
for p in cheems-350m doge-320m; do python3 tools/random_checkpoint.py --preset $p -o /tmp/$p --seed 1 > /dev/null & done
wait
for p in doge-320m cheems-350m; do
  timeout 200 ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \
    .gpu/bin/cheems bench /tmp/$p --target cuda --dtype bf16 --prompt 4096 --decode 2 --runs 1 > /tmp/ncu-$p.csv 2>/tmp/ncu-$p.err
  echo "$p ncu rc=$? t=$(( $(date +%s) - T0 ))"
  python3 tools/ncu_step.py --replayed /tmp/ncu-$p.csv > $L/ncu-$p-replayed.txt 2>&1
  python3 tools/ncu_step.py --replayed --json /tmp/ncu-$p.csv > $L/ncu-$p-replayed.json 2>&1
  head -24 $L/ncu-$p-replayed.txt | cut -c1-160
done
tail -3 /tmp/ncu-*.err
echo "end t=$(( $(date +%s) - T0 ))"
