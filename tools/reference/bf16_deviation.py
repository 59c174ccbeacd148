#!/usr/bin/env python3
"""Record how far the PyTorch reference itself lands from each fixture's float32 logits when it runs in bfloat16
(or, with `--dtype float16`, in float16).

For each case folder the reference model is loaded in that dtype (weights and activations, CPU), runs the fixture's
prefill and decode steps exactly as `check_fixtures.py` does, and the worst absolute logit difference from
`expected.safetensors` is stored with the logit scale (prefill over unpadded rows, decode over all rows). The CUDA
tests use it as the floor of their 16-bit bounds: an executor in bfloat16 or float16 is held to what that
arithmetic of the reference implementation reaches, since top-k routing can flip under its rounding. Where the
reference's logits are not all finite (float16 overflows past 65504), `max_abs_diff` is null and `finite` false.

    python3 tools/reference/bf16_deviation.py [FIXTURES_DIR] -o tests/reference/bf16_deviation.json
    python3 tools/reference/bf16_deviation.py [FIXTURES_DIR] --dtype float16 -o tests/reference/f16_deviation.json
"""
import argparse
import json
import os
import platform
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reference import Cache, load, write_json  # noqa: E402
from reference.check_fixtures import masked_max  # noqa: E402


def deviation(case: str, dtype: torch.dtype) -> dict:
    model = load(case, dtype=dtype)
    with open(os.path.join(case, "inputs.json")) as f:
        inputs = json.load(f)
    want = load_file(os.path.join(case, "expected.safetensors"))
    ids = torch.tensor(inputs["input_ids"])
    mask = None if inputs.get("attention_mask") is None else torch.tensor(inputs["attention_mask"])
    keep = None if mask is None else mask == 1
    cache = Cache()
    out = {}
    with torch.no_grad():
        logits = model.logits(model(ids, mask, cache=cache)).float()
        out["logits"] = summary(logits, want["logits"], keep)
        dec = inputs.get("decode_input_ids")
        if dec is not None:
            dec = torch.tensor(dec)
            steps = [model.logits(model(dec[:, k:k + 1], cache=cache)).float() for k in range(dec.shape[1])]
            out["decode_logits"] = summary(torch.cat(steps, dim=1), want["decode_logits"], None)
    return out


def summary(got: torch.Tensor, want: torch.Tensor, keep) -> dict:
    rows = got if keep is None else got[keep]
    if not torch.isfinite(rows).all():
        _, scale = masked_max(want, want, keep)
        return {"max_abs_diff": None, "max_abs_ref": scale, "finite": False}
    worst, scale = masked_max(got, want, keep)
    return {"max_abs_diff": worst, "max_abs_ref": scale}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixtures", nargs="?", default=os.environ.get("CHEEMS_FIXTURES", "../shared/fixtures"))
    ap.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = sorted(d for d in os.listdir(args.fixtures)
                   if os.path.exists(os.path.join(args.fixtures, d, "expected.safetensors")))
    res = {"made_by": "tools/reference/bf16_deviation.py", "torch": torch.__version__,
           "device": f"cpu ({platform.machine()})", "dtype": f"{args.dtype} weights and activations",
           "cases": {c: deviation(os.path.join(args.fixtures, c), getattr(torch, args.dtype)) for c in cases}}
    write_json(args.out, res)
    for c, r in res["cases"].items():
        print(c, {k: "not finite" if v["max_abs_diff"] is None else f"{v['max_abs_diff'] / v['max_abs_ref'] * 100:.1f}%"
                  for k, v in r.items()})


if __name__ == "__main__":
    main()
