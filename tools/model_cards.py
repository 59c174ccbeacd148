#!/usr/bin/env python3
"""Install trained checkpoints into models/, record PyTorch's and cheems' numbers, write the model cards and the
MQAR table of models/README.md.

    python3 tools/model_cards.py --unpack RESULTS_DIR       # the .tar.gz files that tools/gpu_train.sh wrote
    python3 tools/model_cards.py --pytorch --cheems target/release/cheems

`--pytorch` re-evaluates every checkpoint with the reference on the CPU in float32 (the `pytorch` block of
mqar.json, and ppl.json); `--cheems BIN` runs `cheems eval` on the same examples / windows and stores its result
in the `cheems` block (an MQAR folder's `.cheems-eval.json`, the saved output of `cheems eval mqar --json`, is used
instead of running it again, then removed). Without them the cards are rewritten from what the JSON files already hold.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference import write_atomic, write_json  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
# MODEL.md §11, read off the paper's figure (±0.02): {(seq, d): value}.
PAPER = {
    "ssd": {(256, 64): .45, (256, 128): .89, (512, 64): .41, (512, 128): .72},
    "ifa": {(256, 64): 1.0, (256, 128): 1.0, (512, 64): .59, (512, 128): 1.0},
    "ifa-nomask": {(256, 64): .60, (256, 128): .97, (512, 64): .46, (512, 128): .99},
    "dma": {(256, 64): 1.0, (256, 128): 1.0, (512, 64): .79, (512, 128): 1.0},
}
NAMES = {"ifa": "Inner Function Attention + learned mask (Doge-IFA)",
         "dma": "dynamic-mask attention (HF-native Doge)", "ssd": "SSD (Cheems, both layers SSD)"}
PAPER_COL = {"ifa": "IFA(V=2)+DynMask", "dma": "DMAttn (2412)", "ssd": "SSD(N=128)"}
TABLE_BEGIN = "<!-- mqar-table: written by tools/model_cards.py -->"
TABLE_END = "<!-- /mqar-table -->"


def sh(cmd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def unpack(results: str, models: str) -> None:
    for f in sorted(glob.glob(os.path.join(results, "*.tar.gz"))):
        if os.path.basename(f) == "logs.tar.gz":
            continue
        with tarfile.open(f) as t:
            t.extractall(models, filter="data")
        print(f"unpacked {f}")


def mqar_dirs(models: str):
    return sorted(d for d in glob.glob(os.path.join(models, "mqar-*")) if os.path.isfile(os.path.join(d, "mqar.json")))


def load_json(path):
    with open(path) as f:
        return json.load(f)


def run_pytorch(models: str) -> None:
    for d in mqar_dirs(models):
        sh([sys.executable, os.path.join(TOOLS, "train_mqar.py"), "--eval-only", d, "--device", "cpu"])
    lm = os.path.join(models, "cheems-py")
    if os.path.isfile(os.path.join(lm, "config.json")):
        context = load_json(os.path.join(lm, "train.json"))["train"]["context"]
        sh([sys.executable, os.path.join(TOOLS, "train_lm.py"), "eval", lm, "--device", "cpu", "--context",
            str(context)])


def run_cheems(models: str, binary: str) -> None:
    for d in mqar_dirs(models):
        saved = os.path.join(d, ".cheems-eval.json")
        if os.path.exists(saved):
            with open(saved) as f:
                r = json.load(f)
            os.unlink(saved)
        else:
            r = json.loads(sh([binary, "eval", "mqar", d, "--json"]))
        meta = load_json(os.path.join(d, "mqar.json"))
        meta["cheems"] = {"accuracy": r["accuracy"], "examples": r["examples"], "seed": r["seed"],
                          "fnv1a64": r["fnv1a64"], "identical_to_pytorch": (r.get("pytorch") or {}).get("identical"),
                          "fingerprint_matches_pytorch": r["fingerprint_matches_pytorch"],
                          "seconds": round(r["seconds"], 1)}
        write_json(os.path.join(d, "mqar.json"), meta)
    lm = os.path.join(models, "cheems-py")
    if os.path.isfile(os.path.join(lm, "ppl.json")):
        ppl = load_json(os.path.join(lm, "ppl.json"))
        r = json.loads(sh([binary, "eval", "ppl", lm, "--text", os.path.join(lm, "heldout.txt"),
                           "--context", str(ppl["context"]), "--json"]))
        ppl["cheems"] = {"ppl": r["ppl"], "nll": r["nll"], "predicted": r["predicted"],
                         "relative_difference": abs(r["ppl"] - ppl["ppl"]) / ppl["ppl"]}
        write_json(os.path.join(lm, "ppl.json"), ppl)


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}f}"


def mqar_card(d: str, meta: dict) -> str:
    t, tr, m = meta["task"], meta["train"], meta["model"]
    cfg = load_json(os.path.join(d, "config.json"))
    py, ch = meta.get("pytorch") or {}, meta.get("cheems") or {}
    name = os.path.basename(d)
    lines = [
        f"# {name}", "",
        f"2-layer {NAMES[m['kind']]} trained on multi-query associative recall (MODEL.md §11). "
        f"Layout `{m['variant']}`, d_model {m['d_model']}, {cfg['num_attention_heads']} heads, "
        f"intermediate {cfg['intermediate_size']}, vocab {t['vocab_size']}, tied embeddings; "
        f"{m['parameters'] / 1e6:.2f} M parameters stored as {m['store_dtype']}.", "",
        "| | |", "|---|---|",
        f"| task | `tools/mqar.py`: seq {t['seq_len']}, {t['num_kv_pairs']} key-value pairs, power_a {t['power_a']} |",
        f"| training data | {tr['examples']} examples, seed {tr['seed']} |",
        f"| training | {tr['steps']} steps of batch {tr['batch']} ({tr['seconds']:.0f} s on {tr['device']}, "
        f"{tr['precision']}), AdamW lr {tr['lr']} (warm-up, cosine), weight decay {tr['weight_decay']} |",
        f"| evaluation | {meta['eval']['examples']} examples, seed {meta['eval']['seed']} |",
        f"| PyTorch accuracy (CPU, float32, stored weights) | {fmt(py.get('accuracy'), 4)} |",
        f"| cheems accuracy (`cheems eval mqar`) | {fmt(ch.get('accuracy'), 4)} |",
        f"| per-example agreement | {ch.get('identical_to_pytorch', '—')} / {ch.get('examples', '—')} examples |",
        "",
        f"`mqar.json` holds the generator parameters, the seeds, the training log and PyTorch's per-example correct "
        f"counts; reproduce with `cargo run --release -- eval mqar models/{name}`.",
    ]
    if m["kind"] == "ifa":
        lines += ["", "The learned mask `dynamic_mask` receives no gradient in the reference formulation (only exact "
                  "zeros mask a key), so it stays at its initial ones; the inner-value router (`v_queries`, "
                  "`v_keys`) gets none either and keeps its random initialisation. RoPE rotates queries only "
                  "(the Doge-IFA reference)."]
    return "\n".join(lines) + "\n"


def lm_card(d: str) -> str:
    tr = load_json(os.path.join(d, "train.json"))
    cfg = load_json(os.path.join(d, "config.json"))
    ppl = load_json(os.path.join(d, "ppl.json")) if os.path.exists(os.path.join(d, "ppl.json")) else {}
    ch = ppl.get("cheems") or {}
    data, t, m = tr["data"], tr["train"], tr["model"]
    kinds = "".join("A" if i % cfg["attn_layer_period"] == cfg["attn_layer_offset"] else "S"
                    for i in range(cfg["num_hidden_layers"]))
    return "\n".join([
        "# cheems-py", "",
        f"A small Cheems language model (`cheems-head` layout): {cfg['num_hidden_layers']} layers `{kinds}` "
        f"(S: SSD with RoPE on C/B, A: dynamic-mask attention), D {cfg['hidden_size']}, {cfg['num_attention_heads']} "
        f"heads ({cfg['num_key_value_heads']} KV), CDMoE with {cfg['num_cdmoe_experts']} experts "
        f"({cfg['num_cdmoe_heads']} heads × {cfg['num_cdmoe_experts_per_head']}) beside a gated MLP of "
        f"{cfg['intermediate_size']}, vocab {cfg['vocab_size']} (byte-level BPE, `tokenizer.json`, EOS "
        f"`<|endoftext|>` = 0), tied embeddings; {m['parameters'] / 1e6:.2f} M parameters stored as "
        f"{m['store_dtype']}.", "",
        "| | |", "|---|---|",
        f"| data | the `.py` sources of the Python {data['python']} standard library: {data['files']} files, "
        f"{data['bytes'] / 1e6:.1f} MB, {data['tokens'] / 1e6:.2f} M tokens (no site-packages, `encodings/`, "
        f"`pydoc_data/`) |",
        f"| validation | {', '.join(data['validation_files'])} ({data['validation_tokens']} tokens; picks the kept "
        f"weights) |",
        f"| held out | `heldout.txt` = {', '.join(data['heldout_files'])} ({data['heldout_bytes']} bytes, "
        f"{data['heldout_tokens']} tokens) |",
        f"| training | {t['steps']} steps × {t['batch']} × {t['context']} tokens ({t['tokens_seen'] / 1e6:.1f} M "
        f"tokens, {t['seconds']:.0f} s on {t['device']}), AdamW lr {t['lr']}, weight decay {t['weight_decay']}; "
        f"kept step {t['kept']['step']} |",
        f"| PyTorch perplexity on heldout.txt (CPU, float32, windows of {ppl.get('context', '—')}) | "
        f"{fmt(ppl.get('ppl'), 4)} |",
        f"| cheems perplexity (`cheems eval ppl`) | {fmt(ch.get('ppl'), 4)} (relative difference "
        f"{ch.get('relative_difference', float('nan')):.1e}) |",
        "",
        "Made by `tools/train_lm.py` (prepare here, train, eval); `ppl.json` holds every window's negative "
        "log-likelihood. `cargo run --release -- generate` samples from it.",
    ]) + "\n"


def table(models: str) -> str:
    rows = {}
    for d in mqar_dirs(models):
        meta = load_json(os.path.join(d, "mqar.json"))
        rows[(meta["model"]["kind"], meta["task"]["seq_len"], meta["model"]["d_model"])] = meta
    out = [TABLE_BEGIN, "",
           "| model | seq | d | steps | PyTorch acc. | cheems acc. | identical examples | paper |",
           "|---|---|---|---|---|---|---|---|"]
    for kind in ("ifa", "dma", "ssd"):
        for seq in (256, 512, 1024):
            for d in (64, 128):
                meta = rows.get((kind, seq, d))
                if meta is None:
                    continue
                py, ch = meta.get("pytorch") or {}, meta.get("cheems") or {}
                paper = f"{fmt(PAPER[kind].get((seq, d)), 2)} ({PAPER_COL[kind]})"
                if kind == "ifa":
                    paper = f"{fmt(PAPER['ifa-nomask'].get((seq, d)), 2)} (IFA(V=2)) / {paper}"
                out.append(f"| `mqar-{kind}-{seq}-d{d}` | {seq} | {d} | {meta['train']['steps']} | "
                           f"{fmt(py.get('accuracy'))} | {fmt(ch.get('accuracy'))} | "
                           f"{ch.get('identical_to_pytorch', '—')} / {ch.get('examples', '—')} | {paper} |")
    out += ["", TABLE_END]
    return "\n".join(out)


def write_cards(models: str) -> None:
    for d in mqar_dirs(models):
        write_atomic(os.path.join(d, "README.md"), mqar_card(d, load_json(os.path.join(d, "mqar.json"))).encode())
    lm = os.path.join(models, "cheems-py")
    if os.path.exists(os.path.join(lm, "train.json")):
        write_atomic(os.path.join(lm, "README.md"), lm_card(lm).encode())
    readme = os.path.join(models, "README.md")
    with open(readme) as f:
        text = f.read()
    block = table(models)
    if TABLE_BEGIN in text and TABLE_END in text:
        a, b = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_atomic(readme, text.encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models")
    ap.add_argument("--unpack", metavar="RESULTS_DIR")
    ap.add_argument("--pytorch", action="store_true", help="re-evaluate with the reference (CPU, float32)")
    ap.add_argument("--cheems", metavar="BIN", help="run `BIN eval` on every checkpoint")
    args = ap.parse_args()
    if args.unpack:
        unpack(args.unpack, args.models)
    if args.pytorch:
        run_pytorch(args.models)
    if args.cheems:
        run_cheems(args.models, args.cheems)
    write_cards(args.models)


if __name__ == "__main__":
    main()
