#!/usr/bin/env python3
"""Compare a `cheems run` output with a fixture's expected logits (unpadded rows for the prefill, all decode rows).

    python3 tools/compare_logits.py OUT.safetensors CASE_DIR [--atol A | --rel R]

Prints one JSON line with max |Δ| and max |ref| per tensor; exits 1 when a bound is exceeded.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("case")
    ap.add_argument("--atol", type=float)
    ap.add_argument("--rel", type=float, help="bound relative to max |reference|")
    args = ap.parse_args()
    got = load_file(args.out)
    want = load_file(os.path.join(args.case, "expected.safetensors"))
    with open(os.path.join(args.case, "inputs.json")) as f:
        mask = json.load(f).get("attention_mask")
    result, ok = {"case": os.path.basename(args.case.rstrip("/"))}, True
    for name in ("logits", "decode_logits"):
        g, w = got[name].astype(np.float64), want[name].astype(np.float64)
        keep = np.ones(w.shape[:2], bool) if (name == "decode_logits" or mask is None) else np.array(mask) == 1
        diff = np.where(np.isnan(g), np.inf, np.abs(g - w))[keep]
        worst, scale = float(diff.max()), float(np.abs(w[keep]).max())
        bound = args.atol if args.atol is not None else args.rel * scale
        result[name] = {"max_abs_diff": worst, "max_abs_ref": scale, "bound": bound}
        ok &= worst <= bound
    result["ok"] = bool(ok)
    print(json.dumps(result))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
