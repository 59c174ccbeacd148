#!/usr/bin/env python3
"""A small Cheems language model trained on the Python standard library's own `.py` sources.

Three steps, each a subcommand:

  prepare  (here, CPU; needs `tokenizers`): collect the stdlib sources of the running interpreter (no
           site-packages, no `encodings/` code tables, no `pydoc_data/`), hold out a few modules as `heldout.txt`,
           train a byte-level BPE tokenizer with the EOS token `<|endoftext|>` (id 0), write `tokenizer.json` and
           `heldout.txt` into the model folder and the token ids (uint16, one EOS after each file) of the training
           files and of a few validation modules to `--data`. The ids are prepared here so that the GPU machine, with
           another Python, trains on the same text.
  train    (GPU): a Cheems-HEAD hybrid (SSD + attention layers, CDMoE) on random 512-token crops of the ids, bf16
           autocast, until `--max-steps` or `--time-budget`; keeps the weights with the best validation loss and
           writes them in `--store-dtype`.
  eval     perplexity of `heldout.txt` with the stored weights in float32, written to `ppl.json` with a greedy
           continuation of a fixed prompt decoded through the reference's cache (for `cheems generate`).

Perplexity windowing (the same in `cheems eval ppl`): ids = the tokenizer's encoding of the whole file without
special tokens; consecutive non-overlapping windows of `context` ids (the last one may be shorter, a window of one
id is skipped); each window runs from an empty state; its negative log-likelihood sums −log p(w[t+1] | w[..t]) over
t = 0..len(w)−2; perplexity = exp(Σ NLL / Σ (len(w) − 1)).

    python3 tools/train_lm.py prepare --model models/cheems-py --data .train
    python3 tools/train_lm.py train --data .train --model models/cheems-py --out OUT/cheems-py
    python3 tools/train_lm.py eval models/cheems-py --device cpu
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import sysconfig
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference import (Cache, Model, from_json, init_weights, load, parametrize_for_training,  # noqa: E402
                       remove_training_parametrization, save, write_atomic, write_json)

EOS = "<|endoftext|>"
HELDOUT = ["colorsys.py", "fnmatch.py", "glob.py", "heapq.py", "shlex.py", "textwrap.py"]
VALIDATION = ["bisect.py", "calendar.py", "getopt.py", "pprint.py", "sched.py"]
SKIP_DIRS = {"site-packages", "encodings", "pydoc_data", "__pycache__"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PRECISION = {True: "bf16 autocast, float32 master weights", False: "float32"}


PRESETS = {
    # 6 layers [ssd, ssd, attn, ssd, ssd, attn], D256, 4 heads (GQA 2), CDMoE 256 experts 2 x 4: 5.75 M parameters.
    "base": {},
    # 4 layers [ssd, attn, ssd, attn], D128, 2 heads (MQA), CDMoE 256 experts 2 x 4: 1.45 M parameters.
    "small": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 2,
              "num_key_value_heads": 1, "attn_layer_period": 2, "attn_layer_offset": 1},
}


def model_config(vocab: int, preset: str = "base") -> dict:
    """The config.json of a preset (see PRESETS); tied embeddings, no RoPE scaling."""
    return {**_base_config(vocab), **PRESETS[preset]}


def _base_config(vocab: int) -> dict:
    return {"architectures": ["CheemsForCausalLM"], "model_type": "cheems", "vocab_size": vocab,
            "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6, "num_attention_heads": 4,
            "num_key_value_heads": 2, "hidden_bias": False, "hidden_act": "silu", "max_position_embeddings": 2048,
            "rope_theta": 10000.0, "rope_scaling": None, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "ssd_chunk_size": 64, "attn_layer_period": 3, "attn_layer_offset": 2, "dynamic_mask_ratio": 0.0,
            "is_moe": True, "num_cdmoe_experts": 256, "num_cdmoe_heads": 2, "num_cdmoe_experts_per_head": 4,
            "expert_retrieval_size": 32, "pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0,
            "torch_dtype": "float32"}


def stdlib_files(root: str):
    """Sorted relative paths of the stdlib `.py` files used as corpus."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            if f.endswith(".py"):
                out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def read_text(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (UnicodeDecodeError, OSError):
        return None


def prepare(args) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    root = sysconfig.get_paths()["stdlib"]
    files = stdlib_files(root)
    train_texts, names = [], []
    for rel in files:
        if rel in HELDOUT or rel in VALIDATION:
            continue
        text = read_text(os.path.join(root, rel))
        if text:
            train_texts.append(text)
            names.append(rel)
    heldout = "".join(f"# ---- {name} ----\n" + read_text(os.path.join(root, name)) for name in HELDOUT)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=[EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(train_texts, trainer)
    assert tok.token_to_id(EOS) == 0
    os.makedirs(args.model, exist_ok=True)
    os.makedirs(args.data, exist_ok=True)
    tok.save(os.path.join(args.model, "tokenizer.json"))
    write_atomic(os.path.join(args.model, "heldout.txt"), heldout.encode())
    ids = []
    for enc in tok.encode_batch(train_texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(0)
    arr = np.asarray(ids, dtype=np.uint16)
    np.save(os.path.join(args.data, "lm_tokens.npy"), arr)
    val = []
    for name in VALIDATION:
        val.extend(tok.encode(read_text(os.path.join(root, name)), add_special_tokens=False).ids)
        val.append(0)
    np.save(os.path.join(args.data, "lm_val.npy"), np.asarray(val, dtype=np.uint16))
    meta = {"python": sys.version.split()[0], "stdlib": root, "files": len(names),
            "bytes": sum(len(t.encode()) for t in train_texts), "tokens": int(arr.size),
            "vocab_size": tok.get_vocab_size(), "validation_files": VALIDATION, "validation_tokens": len(val),
            "heldout_files": HELDOUT,
            "heldout_bytes": len(heldout.encode()),
            "heldout_tokens": len(tok.encode(heldout, add_special_tokens=False).ids)}
    write_json(os.path.join(args.data, "lm_meta.json"), meta)
    print(json.dumps(meta))


def windows(ids, context: int):
    return [(s, ids[s:s + context]) for s in range(0, len(ids), context) if len(ids[s:s + context]) >= 2]


@torch.no_grad()
def perplexity(model: Model, ids, context: int, device) -> dict:
    """The windowed perplexity of the module docstring, in float32; per-window NLL sums are kept."""
    model.eval()
    out, total, count = [], 0.0, 0
    for start, w in windows(ids, context):
        x = torch.tensor([w], device=device)
        model.reset_rope()
        logp = F.log_softmax(model.logits(model(x)).float(), dim=-1)[0, :-1]
        nll = -logp.gather(-1, x[0, 1:, None]).sum().item()
        out.append({"start": start, "tokens": len(w), "nll": nll})
        total += nll
        count += len(w) - 1
    return {"context": context, "windows": out, "nll": total, "predicted": count, "ppl": math.exp(total / count)}


@torch.no_grad()
def validation_loss(model: Model, val, amp) -> float:
    model.eval()
    total = 0.0
    for s in range(0, len(val), 16):
        x = val[s:s + 16]
        with amp:
            logits = model.logits(model(x, fast=True)).float()
        total += F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                 reduction="sum").item()
    return total / (len(val) * (val.shape[1] - 1))


def heldout_ids(model_dir: str):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    with open(os.path.join(model_dir, "heldout.txt"), encoding="utf-8") as f:
        return tok.encode(f.read(), add_special_tokens=False).ids


def train(args) -> None:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    data = torch.from_numpy(np.load(os.path.join(args.data, "lm_tokens.npy")).astype(np.int64)).to(device)
    with open(os.path.join(args.data, "lm_meta.json")) as f:
        data_meta = json.load(f)
    held = heldout_ids(args.model)
    val = np.load(os.path.join(args.data, "lm_val.npy")).astype(np.int64)
    n_val = len(val) // args.context
    val = torch.from_numpy(val[:n_val * args.context].reshape(n_val, args.context)).to(device)
    cfg = model_config(data_meta["vocab_size"], args.preset)
    model = Model(from_json(cfg, variant="cheems-head"))
    init_weights(model, generator=torch.Generator().manual_seed(args.seed))
    if args.init:
        model.load_state_dict(load(args.init).state_dict())
    parametrize_for_training(model)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"[lm] {n_params / 1e6:.2f} M parameters, {data.numel()} training tokens", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    t = args.context
    step, start, log = 0, time.time(), []
    v = cfg["vocab_size"]
    best = (float("inf"), 0, None)
    while True:
        elapsed = time.time() - start
        progress = max(step / args.max_steps, elapsed / args.time_budget)
        if progress >= 1.0:
            break
        warm = 0.03
        lr = args.lr * (progress / warm if progress < warm else
                        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, data.numel() - t - 1, (args.batch,), device=device, generator=gen)
        crop = data[starts[:, None] + torch.arange(t + 1, device=device)[None, :]]
        model.train()
        with amp:
            logits = model.logits(model(crop[:, :-1], fast=True)).float()
        loss = F.cross_entropy(logits.view(-1, v), crop[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            rec = {"step": step, "time": round(time.time() - start, 1), "lr": round(lr, 6),
                   "loss": round(loss.item(), 4)}
            if step % (args.log_every * 3) == 0:
                rec["val_loss"] = round(validation_loss(model, val, amp), 4)
                if rec["val_loss"] < best[0]:
                    best = (rec["val_loss"], step, {k: x.detach().clone() for k, x in model.state_dict().items()})
            log.append(rec)
            print(f"[lm] {json.dumps(rec)}", flush=True)
    seconds = time.time() - start
    last_val = validation_loss(model, val, amp)
    if best[2] is not None and best[0] < last_val:
        model.load_state_dict(best[2])
        kept = {"step": best[1], "val_loss": best[0], "last_val_loss": last_val}
    else:
        kept = {"step": step, "val_loss": last_val}
    print(f"[lm] keeping the weights of step {kept['step']} (validation loss {kept['val_loss']:.4f})", flush=True)
    remove_training_parametrization(model)
    save(model, cfg, args.out, DTYPES[args.store_dtype])
    for f in ("tokenizer.json", "heldout.txt"):
        shutil.copyfile(os.path.join(args.model, f), os.path.join(args.out, f))
    stored = load(args.out).to(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    ppl = perplexity(stored, held, t, device)
    meta = {"data": data_meta, "model": {"variant": "cheems-head", "preset": args.preset, "parameters": n_params,
                                         "store_dtype": args.store_dtype},
            "train": {"init": args.init, "steps": step, "batch": args.batch, "context": t,
                      "tokens_seen": step * args.batch * t,
                      "lr": args.lr, "weight_decay": args.weight_decay, "seconds": round(seconds, 1),
                      "device": str(device), "precision": PRECISION[device.type == "cuda"],
                      "kept": kept, "log": log},
            "pytorch_train_device": {"ppl": ppl["ppl"], "context": t, "device": str(device)}}
    write_json(os.path.join(args.out, "train.json"), meta)
    print(f"[lm] done: {step} steps in {seconds:.0f}s, heldout ppl {ppl['ppl']:.3f}", flush=True)


GREEDY_PROMPT = "def add(a, b):"


@torch.no_grad()
def greedy(model: Model, prompt_ids, n: int, eos: int, device):
    """Greedy continuation through the reference's decoding cache (prefill, then one step per token)."""
    model.reset_rope()
    cache = Cache()
    logits = model.logits(model(torch.tensor([prompt_ids], device=device), cache=cache))[0, -1]
    out = []
    while len(out) < n:
        nxt = int(logits.argmax())
        if nxt == eos:
            break
        out.append(nxt)
        logits = model.logits(model(torch.tensor([[nxt]], device=device), cache=cache))[0, -1]
    return out


def evaluate(args) -> None:
    from tokenizers import Tokenizer

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = load(args.ckpt).to(args.device)
    res = perplexity(model, heldout_ids(args.ckpt), args.context, args.device)
    tok = Tokenizer.from_file(os.path.join(args.ckpt, "tokenizer.json"))
    with open(os.path.join(args.ckpt, "config.json")) as f:
        cfg = json.load(f)
    prompt = [cfg["bos_token_id"]] + tok.encode(GREEDY_PROMPT, add_special_tokens=False).ids
    res["greedy"] = {"prompt": GREEDY_PROMPT, "prompt_ids": prompt,
                     "ids": greedy(model, prompt, 48, cfg["eos_token_id"], args.device)}
    res.update({"text": "heldout.txt", "device": args.device, "torch": torch.__version__,
                "dtype": "float32 compute on the stored weights"})
    write_json(os.path.join(args.ckpt, "ppl.json"), res)
    print(f"{args.ckpt}: heldout perplexity {res['ppl']:.4f} ({res['predicted']} predictions, context "
          f"{args.context})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--model", required=True, help="model folder that receives tokenizer.json and heldout.txt")
    p.add_argument("--data", required=True, help="folder for the training token ids")
    p.add_argument("--vocab-size", type=int, default=4096)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--model", required=True, help="folder holding tokenizer.json and heldout.txt")
    t.add_argument("--out", required=True)
    t.add_argument("--context", type=int, default=512)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--preset", choices=sorted(PRESETS), default="base")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    t.add_argument("--init", metavar="CKPT", help="start from the weights of a checkpoint of the same preset")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--max-steps", type=int, default=1_000_000)
    t.add_argument("--time-budget", type=float, default=400.0)
    t.add_argument("--log-every", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    t.add_argument("--store-dtype", choices=sorted(DTYPES), default="bfloat16")
    e = sub.add_parser("eval")
    e.add_argument("ckpt")
    e.add_argument("--context", type=int, default=512)
    e.add_argument("--device", default="cpu")
    args = ap.parse_args()
    {"prepare": prepare, "train": train, "eval": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
