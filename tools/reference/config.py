"""Normalised model configuration: `config.json` plus the checkpoint's tensor names → :class:`RefConfig`.

Variant detection follows MODEL.md §5.4 (the same rules as cheems' `src/model/detect.rs`) for the four layouts the
reference implements: Cheems-v1, Cheems-HEAD, transformers-native Doge and Doge with Inner Function Attention.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

VARIANTS = ("cheems-v1", "cheems-head", "doge-native", "doge-ifa")


@dataclass
class RefConfig:
    """Everything the reference model needs, with each variant's defaults resolved."""

    variant: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    act: str = "silu"
    rope_theta: float = 10000.0
    rope_dynamic_factor: Optional[float] = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    layers: list = field(default_factory=list)
    bias: bool = False
    mlp_bias: bool = False
    ssd_chunk_size: int = 256
    dynamic_mask_ratio: float = 0.0
    keep_window_size: Optional[int] = 2048
    is_moe: bool = False
    num_experts: int = 0
    moe_heads: int = 1
    moe_per_head: int = 1
    moe_retrieval: int = 0
    top_k: int = 0
    norm_topk_prob: bool = False
    inner_values: int = 0
    inner_value_heads: int = 0
    value_per_head: int = 0
    inner_retrieval: int = 0

    @property
    def num_keys(self) -> int:
        """nk = floor(sqrt(E)): keys per product-key axis."""
        return math.isqrt(self.num_experts)


def detect_variant(cfg: dict, names: Iterable[str]) -> str:
    """The variant a checkpoint was written by, from its tensor names (and config keys for Cheems v1/HEAD)."""
    names = list(names)
    if any(".attn.v_queries." in n or n.endswith(".attn.dynamic_mask") for n in names):
        return "doge-ifa"
    if any(".ssd." in n or ".attn." in n for n in names):
        v1_keys = any(k.startswith("num_cdmmoe_") for k in cfg)
        head_keys = any(k.startswith("num_cdmoe_") for k in cfg) or "dynamic_mask_ratio" in cfg \
            or "num_key_value_heads" in cfg
        if v1_keys and not head_keys:
            return "cheems-v1"
        if head_keys and not v1_keys:
            return "cheems-head"
        return "cheems-v1" if cfg.get("model_type") == "doge" else "cheems-head"
    if any(n.endswith("self_attn.q_norm.weight") for n in names):
        return "doge-native"
    raise ValueError("unsupported checkpoint layout (the reference implements Cheems v1/HEAD, native Doge, Doge-IFA)")


def _rope(cfg: dict, variant: str):
    """(theta, dynamic factor or None) from `rope_parameters` (5.x) or `rope_theta` + `rope_scaling` (4.x)."""
    if cfg.get("rope_parameters") is not None:
        p = cfg["rope_parameters"]
        theta = p.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = p
    else:
        theta = cfg.get("rope_theta", 10000.0)
        if "rope_scaling" not in cfg and variant == "cheems-head":
            scaling = {"rope_type": "dynamic", "factor": 4.0}
        else:
            scaling = cfg.get("rope_scaling")
    if not scaling:
        return float(theta), None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return float(theta), None
    if kind != "dynamic":
        raise ValueError(f"unsupported rope_type {kind!r}")
    return float(theta), float(scaling["factor"])


def from_json(cfg: dict, names: Iterable[str] = (), variant: Optional[str] = None) -> RefConfig:
    """Normalises a parsed `config.json` against the checkpoint's tensor names (or for a given `variant`, when
    building a new model)."""
    names = list(names)
    variant = variant or detect_variant(cfg, names)
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
    d, h = cfg["hidden_size"], cfg["num_attention_heads"]
    g = cfg.get("num_key_value_heads") or h
    if variant in ("cheems-v1", "doge-ifa"):
        g = h
    head_dim = cfg.get("head_dim") if variant == "doge-native" and cfg.get("head_dim") else d // h
    theta, dyn = _rope(cfg, variant)
    n = cfg["num_hidden_layers"]
    if variant.startswith("cheems"):
        period, offset = cfg.get("attn_layer_period", 8), cfg.get("attn_layer_offset", 7)
        layers = ["attn" if i % period == offset else "ssd" for i in range(n)]
    else:
        layers = ["attn"] * n
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = "lm_head.weight" not in names if names else variant == "cheems-head"
    rc = RefConfig(
        variant=variant, vocab_size=cfg["vocab_size"], hidden_size=d,
        intermediate_size=cfg["intermediate_size"], num_layers=n, num_heads=h, num_kv_heads=g,
        head_dim=head_dim, rms_norm_eps=cfg.get("rms_norm_eps", 1e-6), act=cfg.get("hidden_act", "silu"),
        rope_theta=theta, rope_dynamic_factor=dyn,
        max_position_embeddings=cfg.get("max_position_embeddings", 16384 if variant == "doge-ifa" else 2048),
        tie_word_embeddings=bool(tie), layers=layers,
    )
    if variant == "doge-native":
        rc.bias = cfg.get("attention_bias", False)
        rc.mlp_bias = cfg.get("mlp_bias", False)
        rc.keep_window_size = cfg.get("keep_window_size", 2048)
        rc.is_moe = cfg.get("is_moe", False)
        rc.num_experts = cfg.get("num_experts", 16384)
        rc.top_k = cfg.get("num_experts_per_tok", 64)
        rc.norm_topk_prob = cfg.get("norm_topk_prob", False)
    else:
        rc.bias = rc.mlp_bias = cfg.get("hidden_bias", False)
        rc.ssd_chunk_size = cfg.get("ssd_chunk_size", 256)
        v1_style = variant in ("cheems-v1", "doge-ifa")
        pre = "num_cdmmoe_" if v1_style else "num_cdmoe_"
        defaults = {"cheems-v1": (4096, 4, 8, 256), "cheems-head": (16348, 4, 8, 64)}.get(variant, (None,) * 4)
        rc.is_moe = variant == "doge-ifa" or cfg.get("is_moe", False)
        rc.num_experts = cfg.get(pre + "experts", defaults[0])
        rc.moe_heads = cfg.get(pre + "heads", defaults[1])
        rc.moe_per_head = cfg.get(pre + "experts_per_head", defaults[2])
        key = "private_expert_retrieval_size" if variant == "doge-ifa" else "expert_retrieval_size"
        rc.moe_retrieval = cfg.get(key, defaults[3])
        if variant == "cheems-head":
            ratio = cfg.get("dynamic_mask_ratio", 0.0) or 0.0
            rc.dynamic_mask_ratio = ratio if 0.0 < ratio < 1.0 else 0.0
        if variant == "doge-ifa":
            rc.inner_values = cfg["num_inner_values"]
            rc.inner_value_heads = cfg["num_inner_value_heads"]
            rc.value_per_head = cfg["num_value_per_head"]
            rc.inner_retrieval = cfg["inner_values_retrieval_size"]
    return rc
