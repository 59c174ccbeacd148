#!/usr/bin/env python3
"""Run the GPU kernel tests under compute-sanitizer (memcheck or racecheck) in several jobs at once, each job with
its own time limit, and summarise: per process the tests that passed, every error or hazard line, and whether the
tool's summary line was reached. Exit status 1 when any error or hazard was reported or a test failed, else 2 when a
test was not checked clean in full (a job hit its time limit, or a process ended without its tests passing), else 0.

    python3 tools/sanitize_kernels.py --bin .gpu/tests/cheems_ops-XXXX --tool racecheck --jobs 6 --timeout 300 \\
        --out $OUT/racecheck

The tests are the binary's `::gpu` tests that are not ignored (`--skip-random` leaves out the proptest `random*` suites, which take
long under the tools), dealt to the jobs longest-first by a weight per test name (`--weights` NAME=N,...;
unknown names weigh 1), so that slow suites do not share a job. `--shard NAME=K,...` splits each test whose name
contains NAME into K processes, process i running it with `CHEEMS_TEST_SHARD=i/K` (the tests that loop over cases
take every K-th case from the i-th; `testutil::in_shard`), each shard weighing the test's weight / K. A job runs its
unsharded tests in one process, then each of its shards in a process of its own. `--only WORD,...` keeps the tests
whose full name contains one of the words (to finish the tests an earlier run left unchecked), `--skip WORD,...`
leaves out those that contain one. `--alone WORD,...` runs the processes of the tests whose name contains one of the
words after every job has ended, one at a time, each test or shard in a process of its own (racecheck processes of
the expert-mix edge shapes have ended abnormally beside other sanitizer processes, and passed alone). `--dry-run`
prints the partition only. A process whose tests never touch the GPU (the tool reports that the application ended
before its first CUDA call) counts as clean.

After one line per process, the summary counts the tests checked clean in full (every process or shard of the test
reached the tool's summary with no error, and the test passed) and names the others (cut short, failed or with an
error), with the `--only` and `--shard` options that run exactly them again. A process that its job could not start
before the time limit says so.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time

ERROR = re.compile(r"(Error|Race reported|Hazard|hazard detected|Invalid __global__|Program hit)", re.I)
NO_GPU = "Target application terminated before first instrumented API call"
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


def weight_of(name, weights):
    return max((w for key, w in weights.items() if key in name), default=1)


def units_of(names, weights, shards):
    """(weight, test name, shard or None) per process-sized unit of work."""
    units = []
    for n in names:
        k = max((k for key, k in shards.items() if key in n), default=1)
        w = weight_of(n, weights)
        units += [(w / k, n, (i, k)) for i in range(k)] if k > 1 else [(w, n, None)]
    return units


def partition(units, jobs):
    bins = [[0, []] for _ in range(max(1, jobs))]
    for u in sorted(units, key=lambda u: (-u[0], u[1], u[2] or (0, 0))):
        b = min(bins, key=lambda b: b[0])
        b[0] += u[0]
        b[1].append(u)
    return [b[1] for b in bins if b[1]]


def processes(job):
    """The job's processes: (tests, shard or None), its unsharded tests together first."""
    plain = [n for _, n, sh in job if sh is None]
    return ([(plain, None)] if plain else []) + [([n], sh) for _, n, sh in job if sh is not None]


def words(text):
    return [w for w in (text or "").split(",") if w]


def pairs(text):
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, _, v = item.partition("=")
        out[key] = int(v)
    return out


def run_job(i, procs, args, deadline, results):
    """Runs the processes one after another until the deadline; appends one record per process."""
    for j, (tests, shard) in enumerate(procs):
        left = deadline - time.time()
        name = os.path.join(args.out, f"{args.tool}-{i}-{j}.log")
        if left < 1:
            results.append((i, j, tests, shard, name, None, 0.0))
            continue
        env = dict(os.environ)
        if shard:
            env["CHEEMS_TEST_SHARD"] = f"{shard[0]}/{shard[1]}"
        cmd = ["timeout", str(int(left)), "compute-sanitizer", "--tool", args.tool, "--error-exitcode", "9",
               args.bin, "--exact", *tests, "--test-threads=1"]
        t0 = time.time()
        with open(name, "w") as log:
            prefix = f"CHEEMS_TEST_SHARD={env['CHEEMS_TEST_SHARD']} " if shard else ""
            log.write(prefix + "$ " + " ".join(cmd) + "\n")
            log.flush()
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        results.append((i, j, tests, shard, name, rc, time.time() - t0))


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
    ap.add_argument("--shard", default="", help="NAME=K,...: split the tests whose name contains NAME into K processes")
    ap.add_argument("--only", help="WORD,...: keep the tests whose full name contains one of the words")
    ap.add_argument("--skip", help="WORD,...: leave out the tests whose full name contains one of the words")
    ap.add_argument("--alone", help="WORD,...: run the tests whose full name contains one of the words after the "
                    "other jobs, one process at a time")
    ap.add_argument("--dry-run", action="store_true", help="print the partition and stop")
    args = ap.parse_args()

    weights, shards = pairs(args.weights), pairs(args.shard)
    names = gpu_tests(args.bin, args.skip_random)
    only, skip = words(args.only), words(args.skip)
    if only:
        names = [n for n in names if any(w in n for w in only)]
    names = [n for n in names if not any(w in n for w in skip)]
    if not names:
        sys.exit(f"{args.bin} lists no ::gpu tests" + (f" matching --only {args.only}" if args.only else ""))
    alone = words(args.alone)
    units = units_of(names, weights, shards)
    solo = sorted((u for u in units if any(w in u[1] for w in alone)), key=lambda u: (u[1], u[2] or (0, 0)))
    # Each job's processes, run side by side; then, one at a time, a process per test or shard of `solo`.
    together = [processes(job) for job in partition([u for u in units if u not in solo], args.jobs)]
    apart = [([n], sh) for _, n, sh in solo]
    plan = together + ([apart] if apart else [])
    if args.dry_run:
        for i, procs in enumerate(plan):
            after = " (alone, after the others)" if i == len(together) else ""
            for j, (tests, shard) in enumerate(procs):
                part = f" shard {shard[0]}/{shard[1]}" if shard else ""
                print(f"job {i}.{j}{after}: {len(tests)} tests{part}: "
                      f"{' '.join(n.rsplit('::', 1)[-1] for n in tests)}")
        return
    if shutil.which("compute-sanitizer") is None:
        sys.exit("compute-sanitizer is not on PATH (it comes with the CUDA toolkit: /usr/local/cuda/bin)")
    os.makedirs(args.out, exist_ok=True)
    deadline = time.time() + args.timeout
    results = []
    threads = [threading.Thread(target=run_job, args=(i, procs, args, deadline, results))
               for i, procs in enumerate(together)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run_job(len(together), apart, args, deadline, results)
    bad = cut = False
    checked = {}
    for i, j, tests, shard, name, rc, secs in sorted(results, key=lambda r: (r[0], r[1])):
        part = f" shard {shard[0]}/{shard[1]}" if shard else ""
        if rc is None:
            print(f"job {i}.{j}{part}: not started, the time limit had passed ({len(tests)} test"
                  f"{'' if len(tests) == 1 else 's'})")
            cut = True
            for n in tests:
                checked.setdefault(n, []).append(False)
            continue
        text = open(name).read() if os.path.exists(name) else ""
        ok = set(re.findall(r"^test (.*) \.\.\. ok$", text, re.M))
        passed = len(ok)
        failed = re.findall(r"^test (.*) \.\.\. FAILED$", text, re.M)
        no_gpu = NO_GPU in text
        errors = [line for line in text.splitlines()[1:] if ERROR.search(line) and "ERROR SUMMARY: 0" not in line
                  and "0 hazards" not in line and "0 errors" not in line and NO_GPU not in line]
        summary = SUMMARY.findall(text)
        if no_gpu and passed == len(tests):
            state = "finished, no GPU work"
        else:
            state = "finished" if rc in (0, 9, 101) else ("time limit" if rc == 124 else f"exit {rc}")
        print(f"job {i}.{j}{part}: {passed}/{len(tests)} passed, {state} after {secs:.0f} s, "
              f"summary {'/'.join(f'{k} {v}' for k, v in summary) or 'not reached'}")
        for f in failed:
            print(f"  FAILED {f}")
        for e in errors[:20]:
            print(f"  {e}")
        clean_exit = rc in (0, 124) or (no_gpu and passed == len(tests))
        bad |= bool(failed or errors or not clean_exit)
        cut |= rc == 124
        clean_summary = bool(summary) and all(v == "0" for _, v in summary)
        reached = (no_gpu or clean_summary) and not errors and rc != 124
        for n in tests:
            checked.setdefault(n, []).append(reached and n in ok)
    left = sorted(n for n, parts in checked.items() if not all(parts))
    print(f"checked clean in full: {len(checked) - len(left)} of {len(checked)} tests")
    if left:
        print("not checked clean: " + ", ".join(n.rsplit("::", 1)[-1] for n in left))
        again = sorted((key, k) for key, k in shards.items() if any(key in n for n in left))
        print("to run them again: --only " + ",".join(left)
              + (" --shard " + ",".join(f"{key}={k}" for key, k in again) if again else ""))
    sys.exit(1 if bad else 2 if cut or left else 0)


if __name__ == "__main__":
    main()
