#!/usr/bin/env python3
"""Time the PyTorch reference (tools/reference) on a checkpoint: prefill of a prompt and incremental decode steps,
eager, under torch.compile of the whole model, and with each decoder layer under torch.compile, on CUDA in bf16 (or
`--dtype float16`). Prints
one JSON line per finished phase (`"partial": true`, so that a run stopped from outside keeps what it measured) and a
final one; a peer that fails records its error. Each phase runs once untimed before its `--runs` timed passes.

    python3 tools/bench_peers.py CKPT --prompt 4096 --decode 64 --batch 1
"""
import argparse
import json
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from reference.io import load  # noqa: E402
from reference.model import Cache  # noqa: E402

PEERS = ("eager", "compile", "compile-layers")


def warm_median(measure, runs):
    """The median of `runs` calls of measure() (seconds each), after one untimed call that warms up (and compiles)."""
    measure()
    return sorted(measure() for _ in range(runs))[runs // 2]


def timed(fn, runs):
    def once():
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t

    return warm_median(once, runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--prompt", type=int, default=4096)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="comma-separated: eager, compile (the whole model), compile-layers (each decoder layer: one "
                         "compile of a layer's code serves every layer of its kind; embedding, RoPE tables, masks and "
                         "the final norm stay eager)")
    ap.add_argument("--phases", default="prefill,decode", help="comma-separated: prefill, decode")
    ap.add_argument("--compile-budget", type=float, default=150.0,
                    help="seconds allowed to each torch.compile phase (prefill, decode), compilation included")
    args = ap.parse_args()
    wanted = args.peers.split(",")
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        ap.error(f"unknown peer(s) {', '.join(unknown)}: expected {', '.join(PEERS)}")
    model = load(args.ckpt, dtype=getattr(torch, args.dtype)).cuda()
    v = model.cfg.vocab_size
    ids = (torch.arange(args.batch * args.prompt, device="cuda").reshape(args.batch, args.prompt) * 31 + 7) % v
    result = {"checkpoint": args.ckpt, "dtype": args.dtype, "prompt": args.prompt, "decode": args.decode,
              "batch": args.batch, "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}

    def decode(m):
        with torch.no_grad():
            model.reset_rope()
            cache = Cache()
            h = m(ids, cache=cache)
            model.logits(h[:, -1:])
            torch.cuda.synchronize()
            t = time.perf_counter()
            for k in range(args.decode):
                step = torch.full((args.batch, 1), (3 + 13 * k) % v, device="cuda")
                model.logits(m(step, cache=cache))
            torch.cuda.synchronize()
            return time.perf_counter() - t

    def full(m):
        with torch.no_grad():
            model.reset_rope()
            model.logits(m(ids))

    layers = list(model.model.layers)

    def per_layer(**options):
        for i, layer in enumerate(layers):
            model.model.layers[i] = torch.compile(layer, **options)
        return model

    # The compiled peers: a static-shape compile for the prefill, a dynamic-shape one for the decode steps (the
    # cache grows by one position per step, which a static compile would recompile for). compile-layers comes last
    # in PEERS: it leaves the model's layers compiled.
    wraps = {"eager": (lambda: model, lambda: model),
             "compile": (lambda: torch.compile(model), lambda: torch.compile(model, dynamic=True)),
             "compile-layers": (lambda: per_layer(), lambda: per_layer(dynamic=True))}
    for name in PEERS:
        if name not in wanted:
            continue
        for_prefill, for_decode = wraps[name]
        r = {}
        for phase, wrap in (("prefill", for_prefill), ("decode", for_decode)):
            if phase not in args.phases.split(","):
                continue
            budget = args.compile_budget if name != "eager" else 0
            t0 = time.perf_counter()
            try:
                with time_limit(budget):
                    m = wrap()
                    if phase == "prefill":
                        p = timed(lambda: full(m), args.runs)
                        r.update(prefill_seconds=p, prefill_tokens_per_second=args.batch * args.prompt / p)
                    else:
                        d = warm_median(lambda: decode(m), args.runs)
                        r.update(decode_seconds=d, decode_tokens_per_second=args.batch * args.decode / d)
            except Exception as e:  # a peer that does not run is recorded with its error
                r[f"{phase}_error"] = f"{type(e).__name__}: {str(e)[:400]}"
            r[f"{phase}_wall_seconds"] = time.perf_counter() - t0
            result[name] = r
            print(json.dumps({"partial": True, **result}), flush=True)
    print(json.dumps(result), flush=True)


class PhaseTimeout(Exception):
    pass


class time_limit:
    """Raises PhaseTimeout in the main thread after `seconds` (0: no limit)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self):
        if self.seconds > 0:
            def fire(signum, frame):
                raise PhaseTimeout(f"did not finish within {self.seconds:.0f} s")
            signal.signal(signal.SIGALRM, fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.seconds > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return False


if __name__ == "__main__":
    main()
