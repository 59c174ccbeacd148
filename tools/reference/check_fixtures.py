#!/usr/bin/env python3
"""Check the PyTorch reference against every golden fixture (CPU, float32).

For each case folder (config.json, model.safetensors, inputs.json, expected.safetensors): a fresh model runs the
prefill of `input_ids` (with `attention_mask`), then one cached decode step per column of `decode_input_ids`, as
the fixtures were made (fixtures README, "Conventions"). Prefill logits are compared over unpadded rows, decode
logits over all rows, hidden states relative to their largest magnitude; every case must reach max |Δ| ≤ 1e-4.

    python3 tools/reference/check_fixtures.py [FIXTURES_DIR]    (default: $CHEEMS_FIXTURES or ../shared/fixtures)
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reference import Cache, load  # noqa: E402

ATOL = 1e-4
REL = 1e-5


def masked_max(got, want, keep):
    diff = (got - want).abs().amax(dim=-1)
    scale = want.abs().amax(dim=-1)
    if keep is not None:
        diff, scale = diff[keep], scale[keep]
    return float(diff.max()), float(scale.max())


def check_case(case: str):
    model = load(case)
    with open(os.path.join(case, "inputs.json")) as f:
        inputs = json.load(f)
    want = load_file(os.path.join(case, "expected.safetensors"))
    ids = torch.tensor(inputs["input_ids"])
    mask = None if inputs.get("attention_mask") is None else torch.tensor(inputs["attention_mask"])
    keep = None if mask is None else mask == 1
    cache = Cache()
    hidden = []
    results = []
    with torch.no_grad():
        h = model(ids, mask, cache=cache, hidden=hidden)
        logits = model.logits(h)
        results.append(("logits", *masked_max(logits, want["logits"], keep), True))
        for i, hs in enumerate(hidden):
            results.append((f"hidden_states_layer{i}", *masked_max(hs, want[f"hidden_states_layer{i}"], keep), False))
        results.append(("final_norm_output", *masked_max(h, want["final_norm_output"], keep), False))
        dec = inputs.get("decode_input_ids")
        if dec is not None:
            dec = torch.tensor(dec)
            steps = [model.logits(model(dec[:, k:k + 1], cache=cache)) for k in range(dec.shape[1])]
            got = torch.cat(steps, dim=1)
            results.append(("decode_logits", *masked_max(got, want["decode_logits"], None), True))
    failures = []
    name = os.path.basename(case.rstrip("/"))
    for what, worst, scale, absolute in results:
        rel = worst / max(scale, 1e-30)
        ok = (worst <= ATOL if absolute else True) and rel <= REL
        print(f"{name:26} {what:22} max|Δ| {worst:.3e} rel {rel:.3e} {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"{name} {what}: max|Δ| {worst:.3e} rel {rel:.3e}")
    return failures


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CHEEMS_FIXTURES", "../shared/fixtures")
    cases = sorted(os.path.join(root, d) for d in os.listdir(root)
                   if os.path.exists(os.path.join(root, d, "expected.safetensors")))
    if not cases:
        sys.exit(f"no fixture cases under {root}")
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    failures = [f for c in cases for f in check_case(c)]
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        sys.exit(1)
    print(f"all {len(cases)} fixture cases agree (logits max|Δ| <= {ATOL})")


if __name__ == "__main__":
    main()
