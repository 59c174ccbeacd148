"""PyTorch reference of the Cheems and Doge variants of MODEL.md, with state-dict names equal to the checkpoint's.

* Cheems-v1 / Cheems-HEAD (§3, §4): SSD layers (RoPE on C and B, `A` used as stored, chunked dual form for prefill
  and the recurrence for decode) and dynamic-mask attention (boolean mask in v1, additive in HEAD), gated MLP or
  per-head product-key CDMoE, learned residual scales.
* transformers-native Doge (§5): q/k RMSNorm, `A`/`dt_proj` per KV head, additive mask with keep-window top-k,
  gated MLP or router CDMoE (with the `view(2, B·T, nk)` token mixing of the reference).
* Doge-IFA (§6.1): inner-function values, learned positional mask (exact zeros mask a key), RoPE on queries only,
  up/down CDMoE with the activation after the softmax weighting, plain residuals.

`forward` returns the final-norm hidden states (and optionally each layer's output); `logits` applies the LM head,
so training can project only the positions it scores. `fast=True` uses `scaled_dot_product_attention` with the same
additive bias (training); the default eager path reproduces the references' `finfo.min` semantics exactly, padded
query rows included.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import RefConfig

ACTS = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class RMSNorm(nn.Module):
    """`w ⊙ cast(x32 · rsqrt(mean(x32²) + ε))`."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        r = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * r.to(x.dtype)


class Residual(nn.Module):
    """Learned residual scale stored as `<name>.weight`: `w ⊙ residual + out`."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, residual, out):
        return self.weight * residual + out


class Rotary:
    """RoPE tables with the stateful dynamic-NTK update of transformers (MODEL.md §2)."""

    def __init__(self, cfg: RefConfig):
        self.dim = cfg.head_dim
        self.theta = cfg.rope_theta
        self.factor = cfg.rope_dynamic_factor
        self.max_pos = cfg.max_position_embeddings
        self.original = self._inv_freq(self.theta)
        self.inv_freq = self.original
        self.cached = self.max_pos

    def _inv_freq(self, base):
        return 1.0 / (base ** (torch.arange(0, self.dim, 2, dtype=torch.int64).float() / self.dim))

    def _update(self, positions):
        if self.factor is None:
            return
        seq_len = positions.max().cpu() + 1
        if int(seq_len) > self.cached:
            base = self.theta * ((self.factor * seq_len / self.max_pos) - (self.factor - 1)) ** (
                self.dim / (self.dim - 2))
            self.inv_freq = self._inv_freq(base)
            self.cached = int(seq_len)
        if int(seq_len) < self.max_pos and self.cached > self.max_pos:
            self.inv_freq = self.original
            self.cached = self.max_pos

    def tables(self, positions, dtype):
        """cos, sin `[B, T, Dh]` for integer positions `[B, T]`."""
        self._update(positions)
        freqs = positions[..., None].float() * self.inv_freq.to(positions.device)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin, dim: int):
    """Rotates `x` whose sequence axis is 1 (`dim` = 2, `[B,T,H,Dh]`) or 2 (`dim` = 1, `[B,H,T,Dh]`)."""
    cos, sin = cos.unsqueeze(dim), sin.unsqueeze(dim)
    return x * cos + rotate_half(x) * sin


def segsum(x):
    """`out[..., i, j] = Σ_{k=j+1..i} x[..., k]` for i ≥ j, −inf above the diagonal."""
    n = x.shape[-1]
    x = x[..., None].expand(*x.shape, n)
    lower = torch.tril(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=-1)
    x = x.masked_fill(~lower, 0)
    s = torch.cumsum(x, dim=-2)
    keep = torch.tril(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=0)
    return s.masked_fill(~keep, -torch.inf)


def ssd_chunked(X, dt, A, Bm, C, chunk: int, state=None):
    """SSD over a whole sequence in the chunked dual form, in float32 (MODEL.md §3.2 step 5).

    X `[b,t,h,p]`, dt `[b,t,h]` (after softplus), A `[h]` (as stored), Bm/C `[b,t,h,n]`, state `[b,h,p,n]` or None.
    Returns Y `[b,t,h,p]` and the final state `[b,h,p,n]`.
    """
    with torch.autocast(device_type=X.device.type, enabled=False):
        return _ssd_chunked(X.float(), dt.float(), A.float(), Bm.float(), C.float(), chunk, state)


def _ssd_chunked(X, dt, A, Bm, C, chunk, state):
    b, t, h, p = X.shape
    n = Bm.shape[-1]
    pad = (-t) % chunk
    if pad:
        X, Bm, C = (F.pad(v, (0, 0, 0, 0, 0, pad)) for v in (X, Bm, C))
        dt = F.pad(dt, (0, 0, 0, pad))
    c = (t + pad) // chunk
    Xd = (X * dt[..., None]).view(b, c, chunk, h, p)
    Bm, C = Bm.view(b, c, chunk, h, n), C.view(b, c, chunk, h, n)
    a = (dt * A).view(b, c, chunk, h).permute(0, 3, 1, 2)
    a_cum = torch.cumsum(a, dim=-1)
    decay = torch.exp(segsum(a))
    cb = torch.einsum("bclhn,bcshn->bchls", C, Bm) * decay.permute(0, 2, 1, 3, 4)
    y = torch.einsum("bchls,bcshp->bclhp", cb, Xd)
    decay_states = torch.exp(a_cum[..., -1:] - a_cum)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bm, decay_states, Xd)
    init = torch.zeros(b, 1, h, p, n, device=X.device) if state is None else state.float()[:, None]
    states = torch.cat([init, states], dim=1)
    decay_chunk = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = states[:, :-1], states[:, -1]
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states, torch.exp(a_cum))
    return y.reshape(b, c * chunk, h, p)[:, :t], final


def ssd_step(state, X, dt, A, Bm, C):
    """One recurrence step: `S ← exp(A·Δ)·S + Δ·X⊗B`, `y = S·C` (float32). X/Bm/C `[b,h,p]`, dt `[b,h]`."""
    X, dt, A, Bm, C = (v.float() for v in (X, dt, A, Bm, C))
    state = torch.exp(dt * A)[..., None, None] * state + (dt[..., None] * X)[..., None] * Bm[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", state, C)
    return y, state


def min_of(dtype):
    return torch.finfo(dtype).min


def attend(q, k, v, bias, fast: bool):
    """softmax(q·kᵀ/√Dh + bias)·v with k, v already repeated to the query heads; softmax in float32."""
    if fast:
        with torch.autocast(device_type=q.device.type, enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.float())
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1]) + bias
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


def repeat_kv(x, n: int):
    return x if n == 1 else x.repeat_interleave(n, dim=1)


class Ctx:
    """Per-call values shared by the layers."""

    def __init__(self, cos, sin, allowed, mask2d, ssd_mask, fast, dtype):
        self.cos, self.sin = cos, sin
        self.allowed = allowed  # [B,1,T,S] bool: causal and not padding
        self.mask2d = mask2d  # [B,S] long
        self.ssd_mask = ssd_mask  # [B,T] or None
        self.fast = fast
        self.dtype = dtype

    def min(self):
        return min_of(self.dtype)


class CheemsSSD(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, h, dh, bias = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.bias
        self.h, self.dh, self.chunk = h, dh, cfg.ssd_chunk_size
        self.c_proj = nn.Linear(d, h * dh, bias=bias)
        self.b_proj = nn.Linear(d, h * dh, bias=bias)
        self.dt_proj = nn.Linear(d, h, bias=bias)
        self.x_proj = nn.Linear(d, h * dh, bias=bias)
        self.out_proj = nn.Linear(h * dh, d, bias=bias)
        self.A = nn.Parameter(torch.ones(h))

    def forward(self, x, ctx: Ctx, cache: Optional[dict]):
        b, t, _ = x.shape
        if ctx.ssd_mask is not None:
            x = x * ctx.ssd_mask[:, :, None].to(x.dtype)
        c = apply_rope(self.c_proj(x).view(b, t, self.h, self.dh), ctx.cos, ctx.sin, 2)
        bm = apply_rope(self.b_proj(x).view(b, t, self.h, self.dh), ctx.cos, ctx.sin, 2)
        dt = F.softplus(self.dt_proj(x).float())
        xs = self.x_proj(x).view(b, t, self.h, self.dh)
        state = None if cache is None else cache.get("state")
        if state is not None and t == 1:
            y, state = ssd_step(state, xs[:, 0], dt[:, 0], self.A, bm[:, 0], c[:, 0])
            y = y[:, None]
        else:
            y, state = ssd_chunked(xs, dt, self.A, bm, c, self.chunk, state)
        if cache is not None:
            cache["state"] = state
        return self.out_proj(y.to(x.dtype).reshape(b, t, self.h * self.dh))


class CheemsAttention(nn.Module):
    """Cheems dynamic-mask attention: v1 boolean (`m < 1` drops the key), HEAD additive (GQA, optional ratio)."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, h, g, dh, bias = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.bias
        self.h, self.g, self.dh = h, g, dh
        self.boolean = cfg.variant == "cheems-v1"
        self.ratio = cfg.dynamic_mask_ratio
        self.q_proj = nn.Linear(d, h * dh, bias=bias)
        self.k_proj = nn.Linear(d, g * dh, bias=bias)
        self.v_proj = nn.Linear(d, g * dh, bias=bias)
        self.A = nn.Parameter(torch.ones(h))
        self.dt_proj = nn.Linear(g * dh, h, bias=bias)
        self.o_proj = nn.Linear(h * dh, d, bias=bias)

    def forward(self, x, ctx: Ctx, cache: Optional[dict]):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        q, k = apply_rope(q, ctx.cos, ctx.sin, 1), apply_rope(k, ctx.cos, ctx.sin, 1)
        k, v = update_kv(cache, k, v)
        s = k.shape[2]
        dt = self.dt_proj(v.transpose(1, 2).reshape(b, s, self.g * self.dh))
        m = torch.exp(self.A * F.softplus(dt)).transpose(1, 2)  # [B,H,S]
        neg = ctx.min()
        if self.boolean:
            bias = torch.where(ctx.allowed & ~(m < 1.0)[:, :, None, :], 0.0, neg).to(x.dtype)
        else:
            m = m[:, :, None, :]
            if self.ratio > 0:
                n = int(s * self.ratio)
                if n > 0:
                    tau = torch.kthvalue(m, n, dim=-1, keepdim=True).values
                    m = m.masked_fill(m < tau, neg)
            bias = torch.where(ctx.allowed, m, torch.tensor(neg, dtype=m.dtype, device=m.device))
        n_rep = self.h // self.g
        o = attend(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), bias, ctx.fast)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.h * self.dh))


class DogeAttention(nn.Module):
    """transformers-native Doge attention: q/k RMSNorm before RoPE, additive mask per KV head, keep-window top-k."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, h, g, dh, bias = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.bias
        self.h, self.g, self.dh, self.keep = h, g, dh, cfg.keep_window_size
        self.q_proj = nn.Linear(d, h * dh, bias=bias)
        self.k_proj = nn.Linear(d, g * dh, bias=bias)
        self.v_proj = nn.Linear(d, g * dh, bias=bias)
        self.A = nn.Parameter(torch.zeros(g))
        self.dt_proj = nn.Linear(g * dh, g, bias=bias)
        self.o_proj = nn.Linear(h * dh, d, bias=bias)
        self.q_norm = RMSNorm(dh, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(dh, cfg.rms_norm_eps)

    def forward(self, x, ctx: Ctx, cache: Optional[dict]):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.h, self.dh)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.g, self.dh)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.g, self.dh).transpose(1, 2)
        q, k = apply_rope(q, ctx.cos, ctx.sin, 1), apply_rope(k, ctx.cos, ctx.sin, 1)
        k, v = update_kv(cache, k, v)
        s = k.shape[2]
        dt = self.dt_proj(v.transpose(1, 2).reshape(b, s, self.g * self.dh))
        m = torch.exp(self.A * F.softplus(dt)).transpose(1, 2)[:, :, None, :]  # [B,G,1,S]
        neg = torch.tensor(ctx.min(), dtype=m.dtype, device=m.device)
        bias = torch.where(ctx.allowed, m, neg)
        if self.keep is not None and s > self.keep:
            idx = bias.topk(self.keep, dim=-1, sorted=False).indices
            keep = torch.zeros_like(bias, dtype=torch.bool).scatter(-1, idx, True)
            bias = bias.masked_fill(~keep, neg)
        n_rep = self.h // self.g
        o = attend(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), repeat_kv(bias, n_rep), ctx.fast)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.h * self.dh))


class InnerFuncAttention(nn.Module):
    """Doge-IFA attention: values `x ⊙ Σ v_embed[topk(v_q·v_keys)]`, learned mask, RoPE on queries only."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, h, dh, bias = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.bias
        self.h, self.dh = h, dh
        self.hv, self.rv, self.k = cfg.inner_value_heads, cfg.inner_retrieval, cfg.value_per_head
        self.q_proj = nn.Linear(d, h * dh, bias=bias)
        self.k_proj = nn.Linear(d, h * dh, bias=bias)
        self.dynamic_mask = nn.Parameter(torch.ones(h, cfg.max_position_embeddings))
        self.v_queries = nn.Linear(d, self.hv * self.rv, bias=bias)
        self.v_keys = nn.Parameter(torch.zeros(self.hv, self.rv, cfg.inner_values))
        self.v_embed = nn.Embedding(cfg.inner_values, d)
        self.o_proj = nn.Linear(h * dh, d, bias=bias)

    def forward(self, x, ctx: Ctx, cache: Optional[dict]):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.h, self.dh).transpose(1, 2)
        vq = self.v_queries(x).view(b, t, self.hv, self.rv)
        sim = torch.einsum("bthr,hrn->bthn", vq, self.v_keys)
        idx = sim.topk(self.k, dim=-1).indices
        values = x * self.v_embed(idx).sum(dim=(2, 3))
        v = values.view(b, t, self.h, self.dh).transpose(1, 2)
        q = apply_rope(q, ctx.cos, ctx.sin, 1)
        k, v = update_kv(cache, k, v)
        s = k.shape[2]
        learned = ctx.mask2d[:, None, :].to(self.dynamic_mask.dtype) * self.dynamic_mask[None, :, :s]
        allowed = ctx.allowed & (learned != 0)[:, :, None, :]
        bias = torch.where(allowed, 0.0, ctx.min()).to(x.dtype)
        o = attend(q, k, v, bias, ctx.fast)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.h * self.dh))


def update_kv(cache: Optional[dict], k, v):
    if cache is None:
        return k, v
    if "k" in cache:
        k = torch.cat([cache["k"], k], dim=2)
        v = torch.cat([cache["v"], v], dim=2)
    cache["k"], cache["v"] = k, v
    return k, v


class GatedMLP(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, i, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(d, i, bias=bias)
        self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)
        self.act = ACTS[cfg.act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class ProductKeyCDMoE(nn.Module):
    """Cheems / Doge-IFA CDMoE: shared MLP plus per-head product-key private experts (MODEL.md §3.2, §6.1)."""

    def __init__(self, cfg: RefConfig, gated: bool):
        super().__init__()
        d, i, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gated = gated
        if gated:
            self.gate_proj = nn.Linear(d, i, bias=bias)
        self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)
        self.act = ACTS[cfg.act]
        self.he, self.ke, self.r, self.nk = cfg.moe_heads, cfg.moe_per_head, cfg.moe_retrieval, cfg.num_keys
        self.queries = nn.Linear(d, self.he * self.r, bias=False)
        self.keys = nn.Parameter(torch.zeros(self.he, self.nk, 2, self.r // 2))
        self.down_embed = nn.Embedding(cfg.num_experts, d)
        self.up_embed = nn.Embedding(cfg.num_experts, d)

    def forward(self, x):
        b, t, d = x.shape
        if self.gated:
            shared = self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        else:
            shared = self.down_proj(self.act(self.up_proj(x)))
        q = self.queries(x).view(b, t, 2, self.he, self.r // 2)
        sim = torch.einsum("btphn,hkpn->btphk", q, self.keys)
        sx, ix = sim[:, :, 0].topk(self.ke, dim=-1)
        sy, iy = sim[:, :, 1].topk(self.ke, dim=-1)
        cand = (sx[..., :, None] + sy[..., None, :]).flatten(-2)
        cidx = (ix[..., :, None] * self.nk + iy[..., None, :]).flatten(-2)
        s, j = cand.topk(self.ke, dim=-1)
        e = cidx.gather(-1, j)  # [B,T,He,Ke]
        w = torch.einsum("btd,bthkd->bthk", x, self.down_embed(e))
        p = F.softmax(s, dim=-1)
        w = self.act(w) * p if self.gated else self.act(w * p)
        return shared + torch.einsum("bthk,bthkd->btd", w, self.up_embed(e))


class RouterCDMoE(nn.Module):
    """transformers Doge CDMoE: one router, `view(2, B·T, nk)` over the contiguous logits (MODEL.md §5.2 step 7)."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        d, i, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(d, i, bias=bias)
        self.up_proj = nn.Linear(d, i, bias=bias)
        self.down_proj = nn.Linear(i, d, bias=bias)
        self.act = ACTS[cfg.act]
        self.nk, self.top_k, self.norm = cfg.num_keys, cfg.top_k, cfg.norm_topk_prob
        self.router_gate = nn.Linear(d, 2 * self.nk, bias=False)
        self.down_embed = nn.Embedding(cfg.num_experts, d)
        self.up_embed = nn.Embedding(cfg.num_experts, d)

    def forward(self, x):
        b, t, d = x.shape
        n = b * t
        logits = self.router_gate(x).reshape(2, n, self.nk)
        (sx, sy), (ix, iy) = logits.topk(self.nk, dim=-1)
        cand = (sx[:, :, None] + sy[:, None, :]).view(n, -1)
        cidx = (ix[:, :, None] * self.nk + iy[:, None, :]).view(n, -1)
        s, j = cand.topk(self.top_k, dim=-1)
        e = cidx.gather(-1, j)
        p = F.softmax(s, dim=-1)
        if self.norm:
            p = p / p.sum(dim=-1, keepdim=True)
        w = torch.matmul(self.down_embed(e), x.reshape(n, d, 1)).view(n, -1)
        w = self.act(w) * p
        experts = torch.matmul(w.view(n, 1, -1), self.up_embed(e)).view(b, t, d)
        shared = self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return shared + experts


class CheemsLayer(nn.Module):
    def __init__(self, cfg: RefConfig, kind: str):
        super().__init__()
        d = cfg.hidden_size
        self.kind = kind
        self.pre_sequence_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        if kind == "ssd":
            self.ssd = CheemsSSD(cfg)
        else:
            self.attn = CheemsAttention(cfg)
        self.post_sequence_residual = Residual(d)
        self.pre_state_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.feed_forward = ProductKeyCDMoE(cfg, gated=True) if cfg.is_moe else GatedMLP(cfg)
        self.post_state_residual = Residual(d)

    def forward(self, h, ctx, cache):
        mixer = self.ssd if self.kind == "ssd" else self.attn
        h = self.post_sequence_residual(h, mixer(self.pre_sequence_layernorm(h), ctx, cache))
        return self.post_state_residual(h, self.feed_forward(self.pre_state_layernorm(h)))


class DogeLayer(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        d = cfg.hidden_size
        self.input_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.self_attn = DogeAttention(cfg)
        self.input_residual = nn.Parameter(torch.ones(d))
        self.post_attention_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.mlp = RouterCDMoE(cfg) if cfg.is_moe else GatedMLP(cfg)
        self.post_attention_residual = nn.Parameter(torch.ones(d))

    def forward(self, h, ctx, cache):
        h = self.input_residual * h + self.self_attn(self.input_layernorm(h), ctx, cache)
        return self.post_attention_residual * h + self.mlp(self.post_attention_layernorm(h))


class IfaLayer(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        d = cfg.hidden_size
        self.in_attn_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.attn = InnerFuncAttention(cfg)
        self.in_ff_layernorm = RMSNorm(d, cfg.rms_norm_eps)
        self.feed_forward = ProductKeyCDMoE(cfg, gated=False)

    def forward(self, h, ctx, cache):
        h = h + self.attn(self.in_attn_layernorm(h), ctx, cache)
        return h + self.feed_forward(self.in_ff_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, cfg: RefConfig):
        super().__init__()
        d = cfg.hidden_size
        native = cfg.variant == "doge-native"
        embed = nn.Embedding(cfg.vocab_size, d)
        norm = RMSNorm(d, cfg.rms_norm_eps)
        if native:
            self.embed_tokens, self.norm = embed, norm
            self.layers = nn.ModuleList(DogeLayer(cfg) for _ in range(cfg.num_layers))
        else:
            self.word_embed, self.final_layernorm = embed, norm
            if cfg.variant == "doge-ifa":
                self.layers = nn.ModuleList(IfaLayer(cfg) for _ in range(cfg.num_layers))
            else:
                self.layers = nn.ModuleList(CheemsLayer(cfg, k) for k in cfg.layers)
        self._names = ("embed_tokens", "norm") if native else ("word_embed", "final_layernorm")

    @property
    def embed(self) -> nn.Embedding:
        return getattr(self, self._names[0])

    @property
    def final_norm(self) -> RMSNorm:
        return getattr(self, self._names[1])


class Cache:
    """Decoding state: per layer K/V or SSD state, and the number of tokens seen."""

    def __init__(self):
        self.past = 0
        self.mask = None
        self.layers: dict = {}


class Model(nn.Module):
    """A whole causal LM of one variant; `state_dict()` names equal the checkpoint's tensor names."""

    def __init__(self, cfg: RefConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg)

    def reset_rope(self):
        """Back to a freshly loaded model's RoPE state (dynamic NTK is stateful)."""
        self.rotary = Rotary(self.cfg)

    def head_weight(self):
        return self.model.embed.weight if self.cfg.tie_word_embeddings else self.lm_head.weight

    def logits(self, h):
        return torch.matmul(h, self.head_weight().t().to(h.dtype))

    def forward(self, ids, attention_mask=None, cache: Optional[Cache] = None, fast=False, hidden=None):
        """Final-norm hidden states `[B,T,D]` of the new tokens `ids` `[B,T]`.

        `attention_mask` `[B,T]` (prefill) is 1 for tokens, 0 for left padding; with a cache the mask of the cached
        tokens is kept and extended with ones. Positions are `arange(P, P+T)` over the padded sequence. When
        `hidden` is a list, each layer's output is appended to it.
        """
        b, t = ids.shape
        dev = ids.device
        past = cache.past if cache is not None else 0
        s = past + t
        if cache is not None and cache.mask is not None:
            new = attention_mask if attention_mask is not None else torch.ones(b, t, dtype=torch.long, device=dev)
            mask2d = torch.cat([cache.mask, new.long()], dim=1)
        elif attention_mask is not None:
            mask2d = attention_mask.long()
        else:
            mask2d = torch.ones(b, s, dtype=torch.long, device=dev)
        pos = torch.arange(past, s, device=dev)
        causal = torch.arange(s, device=dev)[None, :] <= pos[:, None]
        allowed = causal[None, None] & (mask2d[:, None, None, :] == 1)
        ssd_mask = None
        if past == 0 and attention_mask is not None and not bool((mask2d == 1).all()):
            ssd_mask = mask2d[:, past:]
        h = self.model.embed(ids)
        cos, sin = self.rotary.tables(pos[None].expand(b, t), h.dtype)
        ctx = Ctx(cos, sin, allowed, mask2d, ssd_mask, fast, h.dtype)
        for i, layer in enumerate(self.model.layers):
            lc = None if cache is None else cache.layers.setdefault(i, {})
            h = layer(h, ctx, lc)
            if hidden is not None:
                hidden.append(h)
        if cache is not None:
            cache.past = s
            cache.mask = mask2d
        return self.model.final_norm(h)


def init_weights(model: Model, std: float = 0.02, generator=None, ssd_decay=(0.01, 0.5), qk_norm: float = 1.0):
    """Training initialisation: normal(0, std) linears and embeddings (zero biases), norms and residuals at one
    (q/k norms of native Doge at `qk_norm`), SSD `A` = −u with u log-uniform in `ssd_decay` (a decaying state),
    attention `A` at zero (every dynamic-mask value starts at exp(0) = 1, as transformers' Doge initialises it)."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        fresh = torch.empty(p.shape)
        with torch.no_grad():
            if name.endswith("ssd.A"):
                lo, hi = math.log(ssd_decay[0]), math.log(ssd_decay[1])
                p.copy_(-torch.exp(fresh.uniform_(lo, hi, generator=generator)))
            elif leaf == "A":
                p.zero_()
            elif name.endswith(("q_norm.weight", "k_norm.weight")):
                p.fill_(qk_norm)
            elif leaf == "dynamic_mask" or "norm" in name or "residual" in name:
                continue
            elif leaf == "bias":
                p.zero_()
            else:
                p.copy_(fresh.normal_(0.0, std, generator=generator))


class NegExp(nn.Module):
    """`A = −exp(a)`: keeps an SSD decay rate negative while training."""

    def forward(self, a):
        return -torch.exp(a)

    def right_inverse(self, A):
        return torch.log(-A)


def parametrize_for_training(model: Model) -> None:
    """Trains every SSD `A` through `A = −exp(a)` (the stored `A` stays the plain tensor the checkpoint holds)."""
    from torch.nn.utils import parametrize

    for m in model.modules():
        if isinstance(m, CheemsSSD):
            parametrize.register_parametrization(m, "A", NegExp())


def remove_training_parametrization(model: Model) -> None:
    """Turns the parametrised `A`s back into plain parameters holding −exp(a)."""
    from torch.nn.utils import parametrize

    for m in model.modules():
        if isinstance(m, CheemsSSD) and parametrize.is_parametrized(m, "A"):
            parametrize.remove_parametrizations(m, "A", leave_parametrized=True)
