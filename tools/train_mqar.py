#!/usr/bin/env python3
"""Train a 2-layer model on multi-query associative recall (MQAR, MODEL.md §11) and write a cheems checkpoint.

Variants (all 2 layers, tied embeddings, vocab 8192 by default):
  ifa  Doge with Inner Function Attention and its learned mask (Doge-IFA layout, paper v6)
  dma  dynamic-mask attention (transformers-native Doge layout)
  ssd  state space duality (Cheems-HEAD layout with attn_layer_period 8 / offset 7, so both layers are SSD)

Data come from `tools/mqar.py` (train seed 0, eval seed 1 by default). Training uses bf16 autocast and the
reference's SDPA path, scores only the query positions, and runs until `--max-steps` or `--time-budget` seconds
(the learning-rate schedule follows whichever is further along). The checkpoint is written in `--store-dtype`,
re-loaded, and evaluated in float32; `mqar.json` records the generator parameters, the eval seed and count, the
accuracy and the per-example correct counts, so `cheems eval mqar` can be compared example by example.

    python3 tools/train_mqar.py --variant dma --seq-len 256 --d-model 64 --out models/mqar-dma-256-d64
    python3 tools/train_mqar.py --eval-only models/mqar-dma-256-d64 --device cpu    # recompute the numbers
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mqar  # noqa: E402
from reference import (Model, from_json, init_weights, load, parametrize_for_training,  # noqa: E402
                       remove_training_parametrization, save, write_json)

KV_PAIRS = {64: 4, 128: 8, 256: 16, 512: 64, 1024: 128}
VARIANT = {"ifa": "doge-ifa", "dma": "doge-native", "ssd": "cheems-head"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
PRECISION = {True: "bf16 autocast, float32 master weights", False: "float32"}


def model_config(kind: str, vocab: int, d: int, seq_len: int) -> dict:
    """config.json of a 2-layer MQAR model of the given kind."""
    common = {"vocab_size": vocab, "hidden_size": d, "intermediate_size": 2 * d, "num_hidden_layers": 2,
              "hidden_act": "silu", "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "rope_theta": 10000.0,
              "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    if kind == "ifa":
        return {**common, "architectures": ["DogeForCausalLM"], "model_type": "doge", "num_attention_heads": 2,
                "hidden_bias": False, "max_position_embeddings": seq_len, "rope_scaling": None,
                "num_inner_values": 64, "num_inner_value_heads": 2, "num_value_per_head": 2,
                "inner_values_retrieval_size": 16, "num_cdmmoe_experts": 64, "num_cdmmoe_heads": 1,
                "num_cdmmoe_experts_per_head": 2, "private_expert_retrieval_size": 16}
    if kind == "dma":
        return {**common, "architectures": ["DogeForCausalLM"], "model_type": "doge", "num_attention_heads": 2,
                "num_key_value_heads": 2, "attention_bias": False, "mlp_bias": False,
                "max_position_embeddings": 2048, "rope_scaling": None, "keep_window_size": 2048, "is_moe": False}
    if kind == "ssd":
        heads = max(1, d // 64)
        return {**common, "architectures": ["CheemsForCausalLM"], "model_type": "cheems",
                "num_attention_heads": heads, "num_key_value_heads": heads, "hidden_bias": False,
                "max_position_embeddings": 2048, "rope_scaling": None, "attn_layer_period": 8,
                "attn_layer_offset": 7, "ssd_chunk_size": 64, "dynamic_mask_ratio": 0.0, "is_moe": False}
    raise ValueError(kind)


@torch.no_grad()
def evaluate(model: Model, tokens, pos, values, batch: int, device) -> list:
    """Per-example number of queries answered correctly (argmax of float32 logits at the query positions)."""
    model.eval()
    correct = []
    d = model.cfg.hidden_size
    for s in range(0, len(tokens), batch):
        x = torch.as_tensor(tokens[s:s + batch], device=device)
        p = torch.as_tensor(pos[s:s + batch], device=device)
        v = torch.as_tensor(values[s:s + batch], device=device)
        model.reset_rope()
        h = model(x)
        hq = h.gather(1, p[..., None].expand(-1, -1, d))
        pred = model.logits(hq).argmax(-1)
        correct.extend((pred == v).sum(-1).tolist())
    return correct


def eval_block(model, params: dict, seed: int, n: int, batch: int, device) -> dict:
    tok, pos, val = mqar.generate(n, seed, params["vocab_size"], params["seq_len"], params["num_kv_pairs"],
                                  params["power_a"])
    correct = evaluate(model, tok, pos, val, batch, device)
    k = params["num_kv_pairs"]
    return {"seed": seed, "examples": n, "fnv1a64": f"{mqar.fingerprint(tok, pos, val):#018x}",
            "accuracy": sum(correct) / (n * k), "correct": correct}


def reference_numbers(path: str, device: str, batch: int) -> dict:
    """Re-evaluates a stored checkpoint in float32 on `device`; returns the `pytorch` block of mqar.json."""
    with open(os.path.join(path, "mqar.json")) as f:
        meta = json.load(f)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load(path).to(device)
    e = meta["eval"]
    block = eval_block(model, meta["task"], e["seed"], e["examples"], batch, device)
    block.update({"device": device, "dtype": "float32 compute on the stored weights",
                  "torch": torch.__version__})
    return block


def train(args) -> None:
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    k = args.kv or KV_PAIRS[args.seq_len]
    params = {"generator": "tools/mqar.py (SplitMix64, zoology-style MQAR)", "vocab_size": args.vocab_size,
              "seq_len": args.seq_len, "num_kv_pairs": k, "power_a": args.power_a}
    t0 = time.time()
    tok, pos, val = mqar.generate(args.train_examples, args.train_seed, args.vocab_size, args.seq_len, k,
                                  args.power_a)
    tok, pos, val = (torch.as_tensor(a, device=device) for a in (tok, pos, val))
    print(f"[{args.name}] {args.train_examples} training examples in {time.time() - t0:.1f}s", flush=True)
    cfg = model_config(args.variant, args.vocab_size, args.d_model, args.seq_len)
    model = Model(from_json(cfg, variant=VARIANT[args.variant])).to(device)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    init_weights(model, generator=gen, ssd_decay=(0.005, 0.1), qk_norm=args.qk_norm_init)
    parametrize_for_training(model)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98),
                            fused=device.type == "cuda")
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    d = args.d_model
    step, start = 0, time.time()
    log = []
    while True:
        elapsed = time.time() - start
        progress = max(step / args.max_steps, elapsed / args.time_budget)
        if progress >= 1.0:
            break
        warm = 0.05
        lr = args.lr * (progress / warm if progress < warm else
                        0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm))))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(tok), (args.batch,), device=device)
        x, p, v = tok[idx], pos[idx], val[idx]
        model.train()
        with amp:
            h = model(x, fast=True)
            hq = h.gather(1, p[..., None].expand(-1, -1, d))
            logits = model.logits(hq).float()
        loss = F.cross_entropy(logits.view(-1, args.vocab_size), v.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            acc = (logits.argmax(-1) == v).float().mean().item()
            rec = {"step": step, "time": round(time.time() - start, 1), "lr": lr, "loss": round(loss.item(), 4),
                   "batch_acc": round(acc, 4)}
            log.append(rec)
            print(f"[{args.name}] {json.dumps(rec)}", flush=True)
    train_time = time.time() - start
    meta = {"task": params,
            "train": {"seed": args.train_seed, "examples": args.train_examples, "steps": step,
                      "batch": args.batch, "lr": args.lr, "weight_decay": args.weight_decay,
                      "init": {"std": 0.02, "ssd_decay": [0.005, 0.1], "qk_norm": args.qk_norm_init,
                               "attention_A": 0.0, "ssd_A": "trained as -exp(a)"},
                      "seconds": round(train_time, 1), "device": str(device),
                      "precision": PRECISION[device.type == "cuda"], "log": log},
            "model": {"variant": VARIANT[args.variant], "kind": args.variant, "d_model": d, "layers": 2,
                      "parameters": n_params, "store_dtype": args.store_dtype},
            "eval": {"seed": args.eval_seed, "examples": args.eval_examples}}
    remove_training_parametrization(model)
    save(model, cfg, args.out, DTYPES[args.store_dtype])
    write_json(os.path.join(args.out, "mqar.json"), meta)
    stored = load(args.out).to(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    block = eval_block(stored, params, args.eval_seed, args.eval_examples, args.eval_batch, device)
    block.update({"device": str(device), "dtype": "float32 compute on the stored weights", "torch": torch.__version__})
    meta["pytorch_train_device"] = block
    write_json(os.path.join(args.out, "mqar.json"), meta)
    print(f"[{args.name}] done: {step} steps in {train_time:.0f}s, eval accuracy {block['accuracy']:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=sorted(VARIANT))
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--kv", type=int, default=0, help="key-value pairs (default: zoology's count for the length)")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--power-a", type=float, default=0.01)
    ap.add_argument("--train-examples", type=int, default=100_000)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--eval-examples", type=int, default=3000)
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=0, help="default 256 (T <= 256) or 128")
    ap.add_argument("--eval-batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--qk-norm-init", type=float, default=1.5, help="initial q/k RMSNorm weights (dma)")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--time-budget", type=float, default=240.0, help="seconds of training")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--store-dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--out")
    ap.add_argument("--eval-only", metavar="CKPT", help="re-evaluate a checkpoint and rewrite its `pytorch` block")
    args = ap.parse_args()
    if args.eval_only:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        block = reference_numbers(args.eval_only, args.device, args.eval_batch)
        path = os.path.join(args.eval_only, "mqar.json")
        with open(path) as f:
            meta = json.load(f)
        meta["pytorch"] = block
        write_json(path, meta)
        print(f"{args.eval_only}: accuracy {block['accuracy']:.4f} over {block['examples']} examples ({args.device})")
        return
    if not (args.variant and args.out):
        ap.error("--variant and --out are required to train")
    args.batch = args.batch or (256 if args.seq_len <= 256 else 128)
    args.name = os.path.basename(os.path.normpath(args.out))
    train(args)


if __name__ == "__main__":
    main()
