#!/usr/bin/env bash
# GPU call 12-01m: the SM clock and board power while each 4K attention prefill case runs for its 2 s budget
# (e164ddb's kernels; `cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 1000`), nvidia-smi sampling
# every 20 ms, each bench line stamped with the time it was printed (a case's window ends at its line).
cd "$(dirname "$0")/../.."
T0=$(date +%s)
for f in .gpu/bin/*.xz; do xz -d -f "$f"; done
chmod +x .gpu/bin/*
source .gpu/env.sh
export PYTHONUNBUFFERED=1
L=${OUT:-/tmp/out}; mkdir -p $L
nvidia-smi -L; date -u
timeout 120 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 1024 --runs 3 > /dev/null 2>&1
Q=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active
nvidia-smi --query-gpu=$Q --format=csv,noheader > /dev/null 2>&1 || Q=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_throttle_reasons.active
echo "query $Q"; nvidia-smi --query-gpu=$Q --format=csv
for r in 1 2; do
  nvidia-smi --query-gpu=$Q --format=csv,noheader -lms 20 > $L/smi_$r.csv &
  S=$!
  sleep 1
  timeout 120 .gpu/bin/cheems bench-kernels --kernel attn_prefill --lengths 4096 --runs 1000 | \
    python3 -c "import sys, datetime
for l in sys.stdin: print(datetime.datetime.now().strftime('%Y/%m/%d %H:%M:%S.%f')[:-3], l.rstrip(), flush=True)" > $L/bench_$r.txt
  sleep 1; kill $S
  python3 - $L/smi_$r.csv $L/bench_$r.txt <<'PY'
import sys, datetime
fmt = '%Y/%m/%d %H:%M:%S.%f'
smi = []
for l in open(sys.argv[1]):
    p = [x.strip() for x in l.split(',')]
    try: smi.append((datetime.datetime.strptime(p[0], fmt), float(p[1].split()[0]), float(p[2].split()[0]), p[3], p[4]))
    except Exception: pass
prev = None
for l in open(sys.argv[2]):
    t = datetime.datetime.strptime(l[:23], fmt); rest = l[24:].rstrip()
    if 'attn_prefill' in rest and prev is not None:
        w = [s for s in smi if prev + datetime.timedelta(milliseconds=300) <= s[0] <= t - datetime.timedelta(milliseconds=100)]
        if w:
            clk = sorted(s[1] for s in w); pw = sorted(s[2] for s in w)
            print(f"{rest[:60]:60s} samples {len(w):3d} sm MHz median {clk[len(clk)//2]:.0f} min {clk[0]:.0f} power W median {pw[len(pw)//2]:.0f} max {pw[-1]:.0f} reasons {sorted(set(s[4] for s in w))}")
    prev = t
PY
done
echo "end t=$(( $(date +%s) - T0 ))"
