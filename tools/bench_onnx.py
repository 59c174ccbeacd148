#!/usr/bin/env python3
"""CPU throughput of cheems native vs onnxruntime vs tract on the same exported model, in one command.

    python3 tools/bench_onnx.py [--cheems target/release/cheems] [--threads 2] [--prompt 128] [--decode 32]
                                [--runs 5] [--rounds 1] [--presets doge-20m,cheems-8l] [--work /tmp/cheems-bench-onnx]
                                [--json-out FILE] [--label NAME]

For each preset: makes the random checkpoint (`tools/random_checkpoint.py --preset P --seed 1`) when absent,
exports it with `cheems export-onnx` (f32: the functions form, and `--inline`), then times, one engine after the
other, a prefill of a `--prompt`-token prompt followed by `--decode` single-token decode steps at batch `--batch`,
the same token ids for every engine; each engine runs one untimed generation first, then `--runs` timed ones,
and the medians of the prefill time and of the decode time (all steps together) give tokens/s (with --rounds N the
whole sequence of engines is repeated N times, interleaved, and the table gives the median over the rounds):

* native: `cheems bench CKPT --json` (the CPU executor on the checkpoint the export was made from);
* onnxruntime (CPU provider, intra_op_num_threads = inter_op = --threads / 1, default graph optimisations) on
  the functions form and on the `--inline` form, in a child python (this script with `--ort-worker`): the
  `present.*` outputs are fed back as `past.*`;
* tract: `cheems run-onnx --repeat RUNS --json` on the functions form (tract with the `ai.cheems` ops evaluated
  by the cheems-ops kernels) and `--plain` on the `--inline` form (standard ops only).

Every child gets RAYON_NUM_THREADS = OMP_NUM_THREADS = --threads (the native executor and its `gemm` calls use
rayon's pool; tract's own kernels are single-threaded in this build, tract-linalg without `multithread-mm`) and,
when the machine has more CPUs than --threads, is pinned to the first --threads CPUs of this process's affinity
set (--no-pin to leave it). The load average is read before and after every measurement.

Prints a markdown table (ratios are native ÷ engine, higher is better for native) and writes one JSON object to
--json-out (default `$OUT/bench_onnx.json` when $OUT is set, else WORK/bench_onnx.json). Needs numpy and
safetensors (checkpoints) and onnxruntime (its rows) in the python that runs it.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def prompt_ids(batch, prompt, vocab):
    """The prompt `cheems bench` uses: row b, position t -> (7 + 31 t + 17 b) mod V."""
    return [[(7 + 31 * t + 17 * b) % vocab for t in range(prompt)] for b in range(batch)]


def decode_ids(batch, steps, vocab):
    """The decode ids `cheems bench` uses: step k, row b -> (3 + 13 k + b) mod V; returned as [B][steps]."""
    return [[(3 + 13 * k + b) % vocab for k in range(steps)] for b in range(batch)]


# ---------------------------------------------------------------------------------------------- onnxruntime child


def ort_worker(a):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.ort_worker, so, providers=["CPUExecutionProvider"])
    load_s = time.perf_counter() - t0
    inputs = sess.get_inputs()
    outputs = [o.name for o in sess.get_outputs()]
    past_of = {o: "past." + o[len("present."):] for o in outputs if o.startswith("present.")}
    ids = np.array(prompt_ids(a.batch, a.prompt, a.vocab), np.int64)
    dec = np.array(decode_ids(a.batch, a.decode, a.vocab), np.int64)

    def empty(inp):
        dims = [a.batch if d == "batch" else 0 if d == "past_sequence" else d for d in inp.shape]
        assert all(isinstance(d, int) for d in dims), f"{inp.name}: {inp.shape}"
        return np.zeros(dims, np.float32 if inp.type == "tensor(float)" else np.float16)

    def generation():
        feeds = {"input_ids": ids, "attention_mask": np.ones((a.batch, a.prompt), np.int64)}
        for inp in inputs:
            if inp.name.startswith("past."):
                feeds[inp.name] = empty(inp)
        t0 = time.perf_counter()
        out = sess.run(outputs, feeds)
        prefill = time.perf_counter() - t0
        t1 = time.perf_counter()
        for k in range(a.decode):
            feeds = {
                "input_ids": dec[:, k : k + 1],
                "attention_mask": np.ones((a.batch, a.prompt + k + 1), np.int64),
            }
            for name, value in zip(outputs, out):
                if name in past_of:
                    feeds[past_of[name]] = value
            out = sess.run(outputs, feeds)
        return prefill, time.perf_counter() - t1

    generation()
    runs = [generation() for _ in range(a.runs)]
    p = statistics.median(r[0] for r in runs)
    d = statistics.median(r[1] for r in runs)
    print(
        json.dumps(
            {
                "onnxruntime": ort.__version__,
                "load_seconds": load_s,
                "prefill_seconds_median": p,
                "decode_seconds_median": d,
                "prefill_tokens_per_second": a.batch * a.prompt / p,
                "decode_tokens_per_second": a.batch * a.decode / d if a.decode else 0.0,
                "prefill_seconds": [r[0] for r in runs],
                "decode_seconds": [r[1] for r in runs],
            }
        )
    )


# ------------------------------------------------------------------------------------------------------ driver


def sh(cmd, env=None, capture=True):
    r = subprocess.run(cmd, env=env, capture_output=capture, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {r.returncode}: {(r.stderr or '')[-2000:]}")
    return r.stdout


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON line in {text[-500:]!r}")


def machine_info():
    info = {"hostname": platform.node(), "cpus": os.cpu_count(), "kernel": platform.release()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("Model name", "Socket(s)", "Core(s) per socket", "Thread(s) per core", "Flags"):
                if k.strip() == "Flags":
                    flags = v.split()
                    info["avx512f"] = "avx512f" in flags
                    info["avx2"] = "avx2" in flags
                else:
                    info[k.strip()] = v.strip()
    except OSError:
        pass
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return info


def build_info(cheems):
    info = {"cheems": str(cheems), "version": sh([str(cheems), "--version"]).strip()}
    try:
        info["commit"] = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).strip()
        info["tree_modified"] = bool(dirty)
    except (RuntimeError, OSError):
        info["commit"] = None
    return info


def measure(name, fn):
    before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        r = fn()
    except Exception as e:  # a failing engine records its error and the run goes on
        log(f"  {name}: FAILED: {e}")
        r = {"error": str(e)}
    r["wall_seconds"] = time.perf_counter() - t0
    r["load_before"] = [round(x, 2) for x in before]
    r["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if "error" not in r:
        log(
            f"  {name}: prefill {r['prefill_tokens_per_second']:.1f} tok/s, decode "
            f"{r['decode_tokens_per_second']:.1f} tok/s (load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f})"
        )
    return r


def fmt_ratio(native, other, key):
    if "error" in native or "error" in other or not other.get(key):
        return "—"
    return f"{native[key] / other[key]:.2f}×"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cheems", default=str(ROOT / "target/release/cheems"), help="cheems binary")
    ap.add_argument("--presets", default="doge-20m,cheems-8l")
    ap.add_argument("--engines", default="native,ort,ort-inline,tract,tract-inline")
    ap.add_argument("--work", default="/tmp/cheems-bench-onnx", help="checkpoints and exports go here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole sequence of engines; the table gives the median over rounds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-pin", action="store_true", help="do not pin the children to --threads CPUs")
    ap.add_argument("--label", default=None, help="a name for this run, kept in the JSON")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--ort-worker", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_worker:
        return ort_worker(a)

    cheems = Path(a.cheems).resolve()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.json_out:
        out_path = Path(a.json_out)
    elif os.environ.get("OUT"):
        out_path = Path(os.environ["OUT"]) / "bench_onnx.json"
    else:
        out_path = work / "bench_onnx.json"
    engines = a.engines.split(",")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), OMP_NUM_THREADS=str(a.threads))
    pinned = None
    affinity = sorted(os.sched_getaffinity(0))
    if not a.no_pin and len(affinity) > a.threads:
        pinned = affinity[: a.threads]
        os.sched_setaffinity(0, pinned)  # inherited by every child
    started = datetime.datetime.now(datetime.timezone.utc)
    result = {
        "label": a.label,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "build": build_info(cheems),
        "python": sys.version.split()[0],
        "settings": {
            "threads": a.threads, "prompt": a.prompt, "decode": a.decode, "batch": a.batch, "runs": a.runs,
            "rounds": a.rounds, "seed": a.seed, "pinned_cpus": pinned, "dtype": "f32",
        },
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "models": {},
    }
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        result["onnxruntime"] = None
    log(f"machine: {result['machine'].get('Model name')} ({result['machine']['cpus']} CPUs), "
        f"load {result['load_start']}, pinned to {pinned}")

    for preset in a.presets.split(","):
        ckpt = work / preset
        if not (ckpt / "config.json").exists():
            log(f"{preset}: writing the random checkpoint to {ckpt}")
            sh([sys.executable, str(ROOT / "tools/random_checkpoint.py"), "--preset", preset, "-o", str(ckpt),
                "--seed", str(a.seed)])
        config = json.loads((ckpt / "config.json").read_text())
        vocab = config["vocab_size"]
        fn_onnx, inline_onnx = work / f"{preset}.onnx", work / f"{preset}.inline.onnx"
        exports = {}
        for path, extra in ((fn_onnx, []), (inline_onnx, ["--inline"])):
            exports["inline" if extra else "functions"] = last_json(
                sh([str(cheems), "export-onnx", str(ckpt), "-o", str(path), "--json", *extra])
            )
        inputs_json = work / f"{preset}.inputs.json"
        inputs_json.write_text(json.dumps({
            "input_ids": prompt_ids(a.batch, a.prompt, vocab),
            "attention_mask": None,
            "decode_input_ids": decode_ids(a.batch, a.decode, vocab),
        }))
        common = ["--prompt", str(a.prompt), "--decode", str(a.decode), "--batch", str(a.batch),
                  "--runs", str(a.runs)]
        rows = {}
        log(f"{preset}: {exports['functions']['variant']}, {exports['functions']['nodes']} nodes "
            f"(functions form), {exports['inline']['nodes']} (inline)")

        def native():
            r = last_json(sh([str(cheems), "bench", str(ckpt), *common, "--json"], env=env))
            r["command"] = f"cheems bench {ckpt} {' '.join(common)} --json"
            return r

        def ort(model):
            def go():
                cmd = [sys.executable, str(Path(__file__).resolve()), "--ort-worker", str(model), "--vocab", str(vocab), "--threads", str(a.threads), *common]
                r = last_json(sh(cmd, env=env))
                r["command"] = f"onnxruntime {model.name} (intra_op {a.threads}, inter_op 1)"
                return r
            return go

        def tract(model, plain):
            def go():
                cmd = [str(cheems), "run-onnx", str(model), "--inputs", str(inputs_json), "--out",
                       str(work / f"{preset}.tract.safetensors"), "--repeat", str(a.runs), "--json"]
                if plain:
                    cmd.append("--plain")
                r = last_json(sh(cmd, env=env))
                r["command"] = " ".join(["cheems", *cmd[1:]])
                return r
            return go

        plan = {
            "native": ("native", "checkpoint", native),
            "ort": ("onnxruntime", "functions", ort(fn_onnx)),
            "ort-inline": ("onnxruntime", "inline", ort(inline_onnx)),
            "tract": ("tract", "functions (ai.cheems ops in cheems-ops kernels)", tract(fn_onnx, False)),
            "tract-inline": ("tract", "inline (standard ops only)", tract(inline_onnx, True)),
        }
        rounds = {e: [] for e in engines}
        for k in range(a.rounds):
            for e in engines:
                rounds[e].append(measure(f"{preset} {e} (round {k + 1}/{a.rounds})", plan[e][2]))
        for e in engines:
            ok = [r for r in rounds[e] if "error" not in r]
            r = dict(ok[0] if ok else rounds[e][0])
            if ok:
                for key in ("prefill_tokens_per_second", "decode_tokens_per_second"):
                    r[key] = statistics.median(x[key] for x in ok)
            r["load_before"] = rounds[e][0]["load_before"]
            r["load_after"] = rounds[e][-1]["load_after"]
            r["rounds"] = rounds[e]
            r.update(engine=plan[e][0], form=plan[e][1])
            rows[e] = r
        result["models"][preset] = {
            "variant": exports["functions"]["variant"],
            "parameters": rows.get("native", {}).get("parameters"),
            "exports": exports,
            "rows": rows,
        }

    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")

    threads_of = {"native": a.threads, "onnxruntime": a.threads, "tract": f"1 ({a.threads} in ai.cheems ops)"}
    print(f"\n{result['machine'].get('Model name')}, {result['machine']['cpus']} CPUs, {result['date']}; "
          f"build {result['build'].get('commit')}{' (modified tree)' if result['build'].get('tree_modified') else ''}; "
          f"batch {a.batch}, prompt {a.prompt}, {a.decode} decode steps, median of {a.runs} after a warm-up"
          f"{f', median over {a.rounds} rounds of all engines' if a.rounds > 1 else ''}\n")
    print("| model | engine | form | threads | prefill tok/s | decode tok/s | native ÷ it, prefill | native ÷ it, decode | load avg (1 min) before → after |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, m in result["models"].items():
        nat = m["rows"].get("native", {"error": "not run"})
        for e, r in m["rows"].items():
            thr = threads_of[r["engine"]]
            if r["engine"] == "tract" and "plain" in r.get("command", ""):
                thr = "1"
            if "error" in r:
                p = d = "failed"
            else:
                p, d = f"{r['prefill_tokens_per_second']:.0f}", f"{r['decode_tokens_per_second']:.1f}"
            rp = "—" if e == "native" else fmt_ratio(nat, r, "prefill_tokens_per_second")
            rd = "—" if e == "native" else fmt_ratio(nat, r, "decode_tokens_per_second")
            print(f"| {preset} | {r['engine']} | {r['form']} | {thr} | {p} | {d} | {rp} | {rd} | "
                  f"{r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} |")
    print(f"\nJSON: {out_path}")


if __name__ == "__main__":
    sys.exit(main())
