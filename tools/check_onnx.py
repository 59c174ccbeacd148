#!/usr/bin/env python3
"""Check an ONNX export of cheems against a golden fixture with onnxruntime.

    tools/check_onnx.py MODEL.onnx CASE_DIR [--inline-check] [--check-only] [--json] [--atol X]

1. `onnx.checker.check_model(MODEL, full_check=True)`.
2. Runs the fixture in onnxruntime (CPU): a prefill of `input_ids` / `attention_mask` from empty `past.*`
   tensors (past_sequence = 0, zero SSD states), then one decode step per column of `decode_input_ids`, feeding
   each `present.*` output back as the `past.*` input of the same name and the attention mask extended by ones.
3. Compares with `CASE_DIR/expected.safetensors`: `logits` over the unpadded rows, `decode_logits` over all rows;
   fails when max |diff| exceeds the tolerance (1e-4 for float32 exports, the native executor's tolerance).

With --inline-check the model is also passed through `onnx.inliner.inline_local_functions`, checked again and run
the same way. --check-only stops after the checkers (for bf16 exports, which onnxruntime's CPU provider cannot run). With --json one JSON object goes to stdout; the human-readable lines always go to stderr.
Exit status: 0 when every check passes, 1 on a mismatch or a checker/runtime error, 2 on bad arguments.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnxruntime as ort
from safetensors.numpy import load_file

DEFAULT_ATOL = {"tensor(float)": 1e-4, "tensor(float16)": 0.25, "tensor(bfloat16)": 1.0}
NUMPY_TYPE = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def empty_past(inp, batch):
    """A zero tensor for a `past.*` input: `batch` rows, past_sequence = 0."""
    dims = []
    for d in inp.shape:
        if d == "batch":
            dims.append(batch)
        elif d == "past_sequence":
            dims.append(0)
        elif isinstance(d, int):
            dims.append(d)
        else:
            raise ValueError(f"input {inp.name}: unexpected dimension {d!r}")
    if inp.type not in NUMPY_TYPE:
        raise ValueError(f"input {inp.name} has type {inp.type}, which numpy cannot feed")
    return np.zeros(dims, NUMPY_TYPE[inp.type])


def generate(session, inputs):
    """Prefill logits [B,T,V] and decode logits [B,N,V] (or None) of one generation."""
    ids = np.array(inputs["input_ids"], np.int64)
    batch, seq = ids.shape
    mask = inputs.get("attention_mask")
    mask = np.ones((batch, seq), np.int64) if mask is None else np.array(mask, np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    for inp in session.get_inputs():
        if inp.name.startswith("past."):
            feeds[inp.name] = empty_past(inp, batch)
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(names, feeds)))
    logits = outs["logits"].astype(np.float32)
    dec = inputs.get("decode_input_ids")
    if dec is None:
        return logits, None
    dec = np.array(dec, np.int64)
    steps = []
    for k in range(dec.shape[1]):
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        feeds = {"input_ids": dec[:, k : k + 1], "attention_mask": mask}
        for name, value in outs.items():
            if name.startswith("present."):
                feeds["past." + name[len("present.") :]] = value
        outs = dict(zip(names, session.run(names, feeds)))
        steps.append(outs["logits"][:, 0, :].astype(np.float32))
    return logits, np.stack(steps, axis=1)


def max_abs_diff(got, want, rows=None):
    """Largest |got - want| over the [B,T,:] rows selected by the boolean `rows` [B,T]; NaN counts as inf."""
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} differs from the expected {want.shape}")
    if rows is not None:
        got, want = got[rows], want[rows]
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    if np.isnan(diff).any():
        return float("inf")
    return float(diff.max()) if diff.size else 0.0


def check_run(form, session, inputs, expected, atol):
    logits, decode = generate(session, inputs)
    mask = inputs.get("attention_mask")
    rows = None if mask is None else np.array(mask) == 1
    result = {"form": form, "logits_max_abs_diff": max_abs_diff(logits, expected["logits"], rows)}
    if "decode_logits" in expected:
        if decode is None:
            raise ValueError("the fixture has decode_logits but no decode_input_ids")
        result["decode_logits_max_abs_diff"] = max_abs_diff(decode, expected["decode_logits"])
    worst = max(v for k, v in result.items() if k.endswith("_max_abs_diff"))
    result["ok"] = bool(worst <= atol)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("case", type=Path)
    ap.add_argument("--inline-check", action="store_true", help="also run onnx.inliner.inline_local_functions")
    ap.add_argument("--check-only", action="store_true", help="run onnx.checker only, not onnxruntime")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--atol", type=float, default=None, help="max |diff| of the logits (default by dtype)")
    args = ap.parse_args()

    report = {"model": str(args.model), "case": str(args.case), "runs": [], "ok": False}
    try:
        inputs = json.loads((args.case / "inputs.json").read_text())
        expected = load_file(str(args.case / "expected.safetensors"))
        onnx.checker.check_model(str(args.model), full_check=True)
        report["checker"] = "ok"
        log(f"{args.model}: onnx.checker full check ok")
        if args.check_only:
            if args.inline_check:
                inlined = onnx.inliner.inline_local_functions(onnx.load(str(args.model)))
                onnx.checker.check_model(inlined, full_check=True)
                log(f"{args.model}: onnx.checker full check of the inlined model ok")
            report["ok"] = True
            if args.json:
                print(json.dumps(report))
            return 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
        dtype = next(o.type for o in session.get_outputs() if o.name == "logits")
        atol = args.atol if args.atol is not None else DEFAULT_ATOL.get(dtype, 1e-4)
        report["logits_type"], report["atol"] = dtype, atol
        runs = [("onnxruntime", lambda: session)]
        if args.inline_check:
            def inlined():
                model = onnx.load(str(args.model))
                model = onnx.inliner.inline_local_functions(model)
                onnx.checker.check_model(model, full_check=True)
                return ort.InferenceSession(
                    model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                )

            runs.append(("onnx_inliner", inlined))
        for form, make in runs:
            r = check_run(form, make(), inputs, expected, atol)
            report["runs"].append(r)
            numbers = "  ".join(f"{k} {v:.3e}" for k, v in r.items() if k.endswith("_max_abs_diff"))
            log(f"{args.case.name:24} {form:14} {numbers}  {'ok' if r['ok'] else 'FAIL'} (atol {atol:g})")
        report["ok"] = all(r["ok"] for r in report["runs"])
    except Exception as e:  # noqa: BLE001 - every failure is reported, in JSON too
        report["error"] = f"{type(e).__name__}: {e}"
        log(f"error: {report['error']}")
    if args.json:
        print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
