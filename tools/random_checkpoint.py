#!/usr/bin/env python3
"""Write a random-weight checkpoint (config.json + model.safetensors) in the layout of a Cheems or Doge variant.

Weights follow the fixtures' conventions: linear weights N(0, 1/fan_in), embeddings N(0, 1), norms and residual
scales U(0.6, 1.4), SSD A in [-0.5, -0.1], attention A mixed sign, CDMoE keys N(0, 1). Used for benchmarks and
the tiny default model; needs numpy and safetensors.

    python3 tools/random_checkpoint.py --preset doge-20m -o /tmp/doge-20m
    python3 tools/random_checkpoint.py --preset cheems-8l -o /tmp/cheems-8l
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file

PRESETS = {
    # Doge-20M shape (MODEL.md §8): D256 I512 L8 H2 G1, vocab 32768, tied, dynamic NTK x4.
    "doge-20m": dict(kind="doge", vocab_size=32768, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                     num_attention_heads=2, num_key_value_heads=1, is_moe=False),
    # Cheems, 8 layers (7 SSD + 1 attention, the default period 8 / offset 7), CDMoE with 1024 experts.
    "cheems-8l": dict(kind="cheems", vocab_size=32768, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                      num_attention_heads=4, num_key_value_heads=2, attn_layer_period=8, attn_layer_offset=7,
                      is_moe=True, num_cdmoe_experts=1024, num_cdmoe_heads=2, num_cdmoe_experts_per_head=8,
                      expert_retrieval_size=64, ssd_chunk_size=64),
    # Doge-320M shape (MODEL.md §8): D1024 I2048 L32 H8 G4.
    "doge-320m": dict(kind="doge", vocab_size=32768, hidden_size=1024, intermediate_size=2048, num_hidden_layers=32,
                      num_attention_heads=8, num_key_value_heads=4, is_moe=False),
    # Cheems of about 350M parameters: 24 layers (period 8 / offset 7: 21 SSD + 3 attention), CDMoE 1024 experts.
    "cheems-350m": dict(kind="cheems", vocab_size=32768, hidden_size=1024, intermediate_size=2048,
                        num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=4, attn_layer_period=8,
                        attn_layer_offset=7, is_moe=True, num_cdmoe_experts=1024, num_cdmoe_heads=4,
                        num_cdmoe_experts_per_head=8, expert_retrieval_size=64, ssd_chunk_size=64),
    # The default model of README's first command: tiny, every layer family present.
    "cheems-tiny": dict(kind="cheems", vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                        num_attention_heads=4, num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1,
                        is_moe=True, num_cdmoe_experts=256, num_cdmoe_heads=2, num_cdmoe_experts_per_head=4,
                        expert_retrieval_size=16, ssd_chunk_size=16),
}


def cheems(p, rng):
    d, h, g, i, v = p["hidden_size"], p["num_attention_heads"], p["num_key_value_heads"], p["intermediate_size"], p["vocab_size"]
    dh = d // h
    cfg = {"architectures": ["CheemsForCausalLM"], "model_type": "cheems", "vocab_size": v, "hidden_size": d,
           "intermediate_size": i, "num_hidden_layers": p["num_hidden_layers"], "num_attention_heads": h,
           "num_key_value_heads": g, "hidden_bias": False, "hidden_act": "silu", "max_position_embeddings": 2048,
           "rope_theta": 10000.0,
           "rope_scaling": {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 2048},
           "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "ssd_chunk_size": p["ssd_chunk_size"],
           "attn_layer_period": p["attn_layer_period"], "attn_layer_offset": p["attn_layer_offset"],
           "dynamic_mask_ratio": 0.0, "is_moe": p["is_moe"], "num_cdmoe_experts": p.get("num_cdmoe_experts", 16384),
           "num_cdmoe_heads": p.get("num_cdmoe_heads", 4),
           "num_cdmoe_experts_per_head": p.get("num_cdmoe_experts_per_head", 8),
           "expert_retrieval_size": p.get("expert_retrieval_size", 64), "pad_token_id": 2, "bos_token_id": 0,
           "eos_token_id": 1, "torch_dtype": "float32"}
    t = {"model.word_embed.weight": rng.normal(0, 1, (v, d)), "model.final_layernorm.weight": scale(rng, d)}
    for li in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{li}"
        t[f"{pre}.pre_sequence_layernorm.weight"] = scale(rng, d)
        t[f"{pre}.post_sequence_residual.weight"] = scale(rng, d)
        t[f"{pre}.pre_state_layernorm.weight"] = scale(rng, d)
        t[f"{pre}.post_state_residual.weight"] = scale(rng, d)
        if li % cfg["attn_layer_period"] == cfg["attn_layer_offset"]:
            a = f"{pre}.attn"
            t[f"{a}.q_proj.weight"] = lin(rng, h * dh, d)
            t[f"{a}.k_proj.weight"] = lin(rng, g * dh, d)
            t[f"{a}.v_proj.weight"] = lin(rng, g * dh, d)
            t[f"{a}.dt_proj.weight"] = lin(rng, h, g * dh)
            t[f"{a}.A"] = rng.uniform(-1.0, 1.0, h)
            t[f"{a}.o_proj.weight"] = lin(rng, d, d)
        else:
            s = f"{pre}.ssd"
            for n in ("c_proj", "b_proj", "x_proj"):
                t[f"{s}.{n}.weight"] = lin(rng, h * dh, d)
            t[f"{s}.dt_proj.weight"] = lin(rng, h, d)
            t[f"{s}.A"] = rng.uniform(-0.5, -0.1, h)
            t[f"{s}.out_proj.weight"] = lin(rng, d, d)
        f = f"{pre}.feed_forward"
        mlp(t, f, rng, d, i)
        if cfg["is_moe"]:
            e, he, r = cfg["num_cdmoe_experts"], cfg["num_cdmoe_heads"], cfg["expert_retrieval_size"]
            nk = int(np.sqrt(e))
            t[f"{f}.queries.weight"] = lin(rng, he * r, d)
            t[f"{f}.keys"] = rng.normal(0, 1, (he, nk, 2, r // 2))
            t[f"{f}.down_embed.weight"] = rng.normal(0, 1 / np.sqrt(d), (e, d))
            t[f"{f}.up_embed.weight"] = rng.normal(0, 1 / np.sqrt(d), (e, d))
    return cfg, t


def doge(p, rng):
    d, h, g, i, v = p["hidden_size"], p["num_attention_heads"], p["num_key_value_heads"], p["intermediate_size"], p["vocab_size"]
    dh = d // h
    cfg = {"architectures": ["DogeForCausalLM"], "model_type": "doge", "vocab_size": v, "hidden_size": d,
           "intermediate_size": i, "num_hidden_layers": p["num_hidden_layers"], "num_attention_heads": h,
           "num_key_value_heads": g, "attention_bias": False, "mlp_bias": False, "hidden_act": "silu",
           "max_position_embeddings": 2048, "rope_theta": 10000.0,
           "rope_scaling": {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 2048},
           "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "keep_window_size": 2048, "is_moe": False,
           "num_experts": 16384, "num_experts_per_tok": 64, "norm_topk_prob": False, "sliding_window": None,
           "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}
    t = {"model.embed_tokens.weight": rng.normal(0, 1, (v, d)), "model.norm.weight": scale(rng, d)}
    for li in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{li}"
        a = f"{pre}.self_attn"
        t[f"{pre}.input_layernorm.weight"] = scale(rng, d)
        t[f"{pre}.input_residual"] = scale(rng, d)
        t[f"{pre}.post_attention_layernorm.weight"] = scale(rng, d)
        t[f"{pre}.post_attention_residual"] = scale(rng, d)
        t[f"{a}.q_proj.weight"] = lin(rng, h * dh, d)
        t[f"{a}.k_proj.weight"] = lin(rng, g * dh, d)
        t[f"{a}.v_proj.weight"] = lin(rng, g * dh, d)
        t[f"{a}.A"] = rng.uniform(-1.0, 1.0, g)
        t[f"{a}.dt_proj.weight"] = lin(rng, g, g * dh)
        t[f"{a}.o_proj.weight"] = lin(rng, d, h * dh)
        t[f"{a}.q_norm.weight"] = scale(rng, dh)
        t[f"{a}.k_norm.weight"] = scale(rng, dh)
        mlp(t, f"{pre}.mlp", rng, d, i)
    return cfg, t


def scale(rng, n):
    return rng.uniform(0.6, 1.4, n)


def lin(rng, out, inp):
    return rng.normal(0, 1 / np.sqrt(inp), (out, inp))


def mlp(t, pre, rng, d, i):
    t[f"{pre}.gate_proj.weight"] = lin(rng, i, d)
    t[f"{pre}.up_proj.weight"] = lin(rng, i, d)
    t[f"{pre}.down_proj.weight"] = lin(rng, d, i)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("-o", "--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = PRESETS[args.preset]
    rng = np.random.default_rng(args.seed)
    cfg, tensors = (cheems if p["kind"] == "cheems" else doge)(p, rng)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(tensors.items())},
              os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    n = sum(v.size for v in tensors.values())
    print(f"wrote {args.out}: {args.preset}, {n / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
