#!/usr/bin/env python3
"""Run the GPU kernel tests under compute-sanitizer (memcheck or racecheck) in several processes at once, each
with its own time limit, and summarise: per process the tests that passed, every error or hazard line, and whether
the tool's summary line was reached. Exit status 1 when any error or hazard was reported or a test failed, else 2
when a process hit its time limit (its tests after that point were not checked), else 0.

    python3 tools/sanitize_kernels.py --bin .gpu/tests/cheems_ops-XXXX --tool racecheck --jobs 6 --timeout 300 \\
        --out $OUT/racecheck

The tests are the binary's `::gpu` tests that are not ignored (`--skip-random` leaves out the proptest `random*` suites, which take
long under the tools), dealt to the processes longest-first by a weight per test name (`--weights` NAME=N,...;
unknown names weigh 1), so that slow suites do not share a process. `--only WORD,...` keeps the tests whose full
name contains one of the words (to finish the tests an earlier run left unchecked). `--dry-run` prints the
partition only.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

ERROR = re.compile(r"(Error|Race reported|Hazard|hazard detected|Invalid __global__|Program hit)", re.I)
SUMMARY = re.compile(r"(ERROR SUMMARY|RACECHECK SUMMARY):\s*(\d+)")


def listed(binary, *extra):
    out = subprocess.run([binary, "--list", *extra], capture_output=True, text=True, check=True).stdout
    return [line[: -len(": test")] for line in out.splitlines() if line.endswith(": test")]


def gpu_tests(binary, skip_random):
    ignored = set(listed(binary, "--ignored"))
    names = [n for n in listed(binary) if "::gpu" in n and n not in ignored]
    if skip_random:
        names = [n for n in names if not n.rsplit("::", 1)[-1].startswith("random")]
    return names


def partition(names, jobs, weights):
    def weight(n):
        return max((w for key, w in weights.items() if key in n), default=1)

    bins = [[0, []] for _ in range(max(1, jobs))]
    for n in sorted(names, key=lambda n: (-weight(n), n)):
        b = min(bins, key=lambda b: b[0])
        b[0] += weight(n)
        b[1].append(n)
    return [b[1] for b in bins if b[1]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the cheems-ops test binary")
    ap.add_argument("--tool", choices=["memcheck", "racecheck"], default="memcheck")
    ap.add_argument("--jobs", type=int, default=4, help="processes at once")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per process")
    ap.add_argument("--out", default="sanitize-logs", help="folder for one log per process")
    ap.add_argument("--skip-random", action="store_true", help="leave out the proptest random* suites")
    ap.add_argument("--weights", default="edge_shapes=4,long=3,model_shapes=3,thousands=3",
                    help="NAME=N,...: relative cost of tests whose name contains NAME")
    ap.add_argument("--only", help="WORD,...: keep the tests whose full name contains one of the words")
    ap.add_argument("--dry-run", action="store_true", help="print the partition and stop")
    args = ap.parse_args()

    weights = {}
    for item in filter(None, args.weights.split(",")):
        key, _, w = item.partition("=")
        weights[key] = int(w)
    names = gpu_tests(args.bin, args.skip_random)
    if args.only:
        words = [w for w in args.only.split(",") if w]
        names = [n for n in names if any(w in n for w in words)]
    if not names:
        sys.exit(f"{args.bin} lists no ::gpu tests" + (f" matching --only {args.only}" if args.only else ""))
    groups = partition(names, args.jobs, weights)
    if args.dry_run:
        for i, g in enumerate(groups):
            print(f"job {i}: {len(g)} tests: {' '.join(n.rsplit('::', 1)[-1] for n in g)}")
        return
    if shutil.which("compute-sanitizer") is None:
        sys.exit("compute-sanitizer is not on PATH (it comes with the CUDA toolkit: /usr/local/cuda/bin)")
    os.makedirs(args.out, exist_ok=True)
    procs = []
    for i, g in enumerate(groups):
        log = open(os.path.join(args.out, f"{args.tool}-{i}.log"), "w")
        cmd = ["timeout", str(int(args.timeout)), "compute-sanitizer", "--tool", args.tool, "--error-exitcode", "9",
               args.bin, "--exact", *g, "--test-threads=1"]
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        procs.append((i, g, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), time.time()))
    bad = cut = False
    for i, g, log, p, t0 in procs:
        rc = p.wait()
        log.close()
        text = open(log.name).read()
        passed = len(re.findall(r"^test .* \.\.\. ok$", text, re.M))
        failed = re.findall(r"^test (.*) \.\.\. FAILED$", text, re.M)
        errors = [line for line in text.splitlines()[1:] if ERROR.search(line) and "ERROR SUMMARY: 0" not in line
                  and "0 hazards" not in line and "0 errors" not in line]
        summary = SUMMARY.findall(text)
        state = "finished" if rc in (0, 9, 101) else ("time limit" if rc == 124 else f"exit {rc}")
        print(f"job {i}: {passed}/{len(g)} passed, {state} after {time.time() - t0:.0f} s, "
              f"summary {'/'.join(f'{k} {v}' for k, v in summary) or 'not reached'}")
        for f in failed:
            print(f"  FAILED {f}")
        for e in errors[:20]:
            print(f"  {e}")
        bad |= bool(failed or errors or rc not in (0, 124))
        cut |= rc == 124
    sys.exit(1 if bad else 2 if cut else 0)


if __name__ == "__main__":
    main()
