#!/usr/bin/env python3
"""Per-kernel device times of one decode step from an `ncu --csv` run of `cheems bench`.

    ncu --graph-profiling node --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv \\
        cheems bench CKPT --target cuda --dtype bf16 --prompt 1 --decode 4 --runs 1 > ncu.csv
    python3 tools/ncu_step.py ncu.csv

A step is a run of kernels that starts with an embedding gather. By default the tool takes the last one (the bench's
final, node-by-node decode step, whose cache appends copy the whole cache); `--replayed` takes the last step that
writes its cache rows in place (`place_rows`, as a replayed recorded step does; `ncu --graph-profiling node` times
each node of a replayed graph). ncu times each kernel alone, so the sum exceeds the step's time back to back.
Prints the kernels grouped by name and launch shape, largest total first; `--json` prints the same as one JSON
object.
"""
import argparse
import csv
import json
import sys
from collections import defaultdict


def read(path):
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        sys.exit(f"{path}: no ncu CSV header (\"ID\",...) found")
    rows = []
    for r in csv.DictReader(lines[start:]):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(r["Metric Unit"])
        if scale is None:
            sys.exit(f"{path}: unknown unit {r['Metric Unit']!r} for gpu__time_duration.sum")
        us = float(r["Metric Value"].replace(",", "")) * scale
        rows.append((r["Kernel Name"], r["Grid Size"], r["Block Size"], us))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--replayed", action="store_true", help="the last step that appends in place (place_rows)")
    a = ap.parse_args()
    rows = read(a.csv)
    starts = [i for i, r in enumerate(rows) if r[0].startswith("embedding")]
    if not starts:
        sys.exit(f"{a.csv}: no embedding kernel marks a step")
    steps = [rows[s:e] for s, e in zip(starts, starts[1:] + [len(rows)])]
    if a.replayed:
        steps = [s for s in steps if any(r[0].startswith("place_rows") for r in s)]
        if not steps:
            sys.exit(f"{a.csv}: no step appends in place (was the step replayed under --graph-profiling node?)")
    step = steps[-1]
    groups = defaultdict(lambda: [0, 0.0])
    for name, grid, block, us in step:
        g = groups[(name, grid, block)]
        g[0] += 1
        g[1] += us
    out = sorted(groups.items(), key=lambda kv: -kv[1][1])
    total = sum(r[3] for r in step)
    if a.json:
        print(json.dumps({"kernels": len(step), "sum_us": total, "groups": [
            {"kernel": k, "grid": g, "block": b, "count": c, "total_us": t, "mean_us": t / c}
            for (k, g, b), (c, t) in out]}))
        return
    print(f"{len(step)} kernels, {total:.1f} µs in all (each timed alone)")
    for (k, g, b), (c, t) in out:
        print(f"{t:8.1f} µs {c:4d} × {t / c:6.2f} µs  {k:48s} grid {g} block {b}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.stderr.close()
