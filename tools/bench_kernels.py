#!/usr/bin/env python3
"""Per-kernel benchmarks of cheems against PyTorch peers, all in one command on one GPU.

Runs `cheems bench-kernels` (when `--cheems PATH` is given) and, in this process, the peers on the same cases,
then prints one markdown table per kernel (times, cheems ÷ peer ratios, fractions of the roofline) and writes
everything as JSON (`--out`).

    python3 tools/bench_kernels.py --cheems .gpu/bin/cheems --out /tmp/bench_kernels.json
    python3 tools/bench_kernels.py --dry-run          # the cases, FLOPs and bytes; no GPU, no torch work
    python3 tools/bench_kernels.py --smoke            # every peer on tiny shapes on the CPU (no fla, no compile)

Cases (shapes of `tools/random_checkpoint.py`'s presets; bf16 inputs, seeded, uniform, never zeros):
* `ssd_prefill`: Cheems-350M SSD (16 heads, P = N = 64, chunk 64), batch 1, L = 1K/4K/16K. Peers: the
  reference's own chunked SSD (`tools/reference/model.py::ssd_chunked`, float32 inside, as the reference runs it)
  eager and under `torch.compile`; flash-linear-attention's `chunk_simple_gla` (fla-core).
* `ssd_decode`: one step for B = 1..256 sequences. Peers: the reference's `ssd_step` eager and compiled; fla's
  `fused_recurrent_simple_gla` with one token.
* `attn_prefill`: Doge-320M attention (8 query heads, 4 KV heads of 128, mask values per KV head), S = T =
  1K/4K/16K, modes `causal`, `additive` (dynamic mask values as an additive bias) and `additive_w2048` (plus the
  keep-window top-2048 per row of Doge-320M's config); and Cheems-350M attention (16 query heads, 4 KV heads of 64,
  mask values per query head), modes `causal` and `additive`, cases suffixed ` H16 Dh64`. Peers: SDPA with the
  flash backend, causal, no mask (GQA by `enable_gqa`); SDPA (bf16, backend chosen by PyTorch) with the
  `[B, H, S, T]` bias materialised as the reference builds it, outside the timing; the reference's eager attention
  (`attend`, float32 softmax) on that bias; and, for the dynamic modes, the reference's bias construction followed by
  SDPA, timed together.
* `attn_decode`: one query against a 4K KV cache, B = 1 and 16. Peers: SDPA flash (no mask) and SDPA with the
  reference's `[B, H, 1, T]` bias.
* `pk_topk`, `expert_mix`, `cdmoe`: Cheems-350M CDMoE (1024 experts, 32 keys per axis, 4 heads of 8, retrieval
  64, dim 1024), 1 and 4096 tokens. Peer: the reference's `ProductKeyCDMoE.forward` from the query projection's
  output to the expert sum (routing: similarities, the two top-k, the candidate top-k; mixing: the gathers, SiLU
  before the softmax weight, the weighted sum), eager and compiled. The query projection and the shared MLP are
  dense GEMMs outside both sides.

SSD as gated linear attention (fla): per head, `S_t = exp(g_t)·S_{t−1} + k_t v_tᵀ`, `o_t = S_tᵀ q_t` with
`q = C`, `k = B`, `v = Δ·x`, `g = Δ·A` (`Δ = softplus(dt)`, the log decay of each step), `scale = 1` and the
initial state transposed to fla's `[K, V]` = `[N, P]`: the same function as the Cheems SSD in real arithmetic. RoPE is
applied to C and B before the scan in the model, so every side here times the scan core only; fla's inputs `v`
and `g` are prepared outside its timing (`fla_chunk`), and again inside it (`fla_chunk+prep`), whereas cheems
computes `softplus`, `Δ·x` and `Δ·A` in its kernels. fla keeps its chunk states in bf16 in the forward pass;
cheems and the reference keep them in float32.

Timing (the same as `src/cli/bench_kernels.rs`): input sets rotate until together they pass 200 MB (four times the
L2); a warm-up pass over every set (it compiles), a calibration pass, then samples of back-to-back calls (at least
one per set and 2 ms of work) between two CUDA events; the median sample over `--runs` (fewer, down to 3, for calls
that would pass a 2 s budget per case). FLOPs and minimum bytes per case follow the formulas documented in
`src/cli/bench_kernels.rs` (computed here too, identically, so that a case cheems did not run still has them);
`roofline = max(flops / 790 TFLOP/s, bytes / 4.3 TB/s) / time`, the same floor for every side, whatever extra
bytes a peer moves. A peer that fails (Inductor errors, a missing package) records its error and the others run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback

ROTATE_BYTES = 200 << 20
MAX_SETS = 512
MIN_SAMPLE_MS = 2.0
CASE_BUDGET_MS = 2000.0
MIN_RUNS = 3

SSD_HEADS, SSD_DIM, SSD_CHUNK = 16, 64, 64
KEEP_WINDOW, DECODE_KV = 2048, 4096
DOGE_ATTN = dict(heads=8, kv_heads=4, head_dim=128, mask_heads=4)
CHEEMS_ATTN = dict(heads=16, kv_heads=4, head_dim=64, mask_heads=16)
MOE_DIM, MOE_EXPERTS, MOE_KEYS, MOE_HEADS, MOE_K, MOE_HALF = 1024, 1024, 32, 4, 8, 32
MODES = ("causal", "additive", "additive_w2048")

GOALS = {
    "ssd_prefill": "goal: cheems ≥ 1.5× the best peer",
    "ssd_decode": "goal: ≥ 80 % of HBM bandwidth at large batch",
    "attn_prefill": "goal at S ≥ 4K: ≥ 1.0× SDPA flash (no mask) and ≥ 3× SDPA with the materialised mask",
    "cdmoe": "goal: ≥ 5× the reference CDMoE; gather at ≥ 70 % of bandwidth",
}


# ----------------------------------------------------------------------------------------------------------------
# FLOP and byte counts (formulas documented in src/cli/bench_kernels.rs)

def ssd_prefill_counts(batch, length, h, p, n, c):
    bl = batch * length
    flops = bl * h * ((c + 1) * (n + p) + 4 * p * n + 2 * p * n / c)
    nbytes = 2 * bl * h * (p + 2 * n + 1) + 2 * bl * h * p + 8 * batch * h * p * n + 4 * h
    return float(flops), float(nbytes)


def ssd_decode_counts(batch, h, p, n):
    return float(5 * batch * h * p * n), float(8 * batch * h * p * n + 2 * batch * h * (p + 2 * n + 1)
                                                 + 2 * batch * h * p + 4 * h)


def causal_pairs(s, t):
    return s * (t - s) + s * (s + 1) / 2


def kept_pairs(s, t, w):
    """Pairs a keep window of w keys (of T > w) keeps: Σ_i min(T − S + i + 1, w)."""
    first = t - s + 1
    growing = min(max(w - first, 0), s)
    return growing * first + growing * (growing - 1) / 2 + (s - growing) * w


def attention_counts(batch, s, t, h, g, d, mask_heads, window=None):
    pairs = kept_pairs(s, t, window) if window is not None and window < t else causal_pairs(s, t)
    flops = 4 * batch * h * d * pairs
    nbytes = 4 * batch * s * h * d + 4 * batch * g * t * d + 8 * batch * t + 4 * batch * mask_heads * t
    return float(flops), float(nbytes)


def moe_counts(kernel, rows):
    r, he, k, nk, half, d = rows, MOE_HEADS, MOE_K, MOE_KEYS, MOE_HALF, MOE_DIM
    sel = 12 * r * he * k
    pk_flops = 4 * r * he * nk * half
    pk_in = 4 * r * he * half + 4 * he * nk * half
    distinct = min(r * he * k, MOE_EXPERTS)
    mix_flops = 4 * r * he * k * d
    mix_in = 4 * r * d + 4 * d * distinct
    gathered = float(4 * d * r * he * k)
    if kernel == "pk_topk":
        return float(pk_flops), float(pk_in + sel), None
    if kernel == "expert_mix":
        return float(mix_flops), float(mix_in + sel), gathered
    return float(pk_flops + mix_flops), float(pk_in + mix_in), gathered


def sets_for(nbytes):
    return max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / max(nbytes, 1))))


class Case:
    def __init__(self, kernel, case, shape, flops, nbytes, gathered=None):
        self.kernel, self.case, self.shape = kernel, case, shape
        self.flops, self.bytes, self.gathered = flops, nbytes, gathered


def attention_case(kernel, heads, mode, batch, s, t):
    """An attention case at `heads` (DOGE_ATTN or CHEEMS_ATTN), named as `cheems bench-kernels` names it:
    `{mode} S{s}` (prefill) or `{mode} B{batch}` (decode), then ` H{heads} Dh{head_dim}` for heads other than Doge's."""
    window = KEEP_WINDOW if mode == "additive_w2048" else None
    f, b = attention_counts(batch, s, t, heads["heads"], heads["kv_heads"], heads["head_dim"],
                            0 if mode == "causal" else heads["mask_heads"], window)
    name = f"{mode} B{batch}" if kernel == "attn_decode" else f"{mode} S{s}"
    if heads != DOGE_ATTN:
        name += f" H{heads['heads']} Dh{heads['head_dim']}"
    return Case(kernel, name, dict(batch=batch, q_len=s, kv_len=t, mode=mode, **heads), f, b)


def all_cases(lengths, batches, attn_lengths, decode_batches, decode_kv, moe_tokens):
    cases = []
    for n in lengths:
        f, b = ssd_prefill_counts(1, n, SSD_HEADS, SSD_DIM, SSD_DIM, SSD_CHUNK)
        cases.append(Case("ssd_prefill", f"L{n}", dict(batch=1, seq=n), f, b))
    for n in batches:
        f, b = ssd_decode_counts(n, SSD_HEADS, SSD_DIM, SSD_DIM)
        cases.append(Case("ssd_decode", f"B{n}", dict(batch=n), f, b))
    for heads, modes in ((DOGE_ATTN, MODES), (CHEEMS_ATTN, MODES[:2])):
        cases += [attention_case("attn_prefill", heads, m, 1, n, n) for n in attn_lengths for m in modes]
    cases += [attention_case("attn_decode", DOGE_ATTN, m, n, 1, decode_kv) for n in decode_batches for m in MODES]
    for n in moe_tokens:
        for k in ("pk_topk", "expert_mix", "cdmoe"):
            f, b, g = moe_counts(k, n)
            cases.append(Case(k, f"N{n}", dict(tokens=n), f, b, g))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Timing

class Timer:
    def __init__(self, torch, device, runs):
        self.torch, self.device, self.runs = torch, device, runs
        self.cuda = device == "cuda"

    def _now_ms(self, fn, calls):
        """Milliseconds of `calls()`: between CUDA events on the GPU, by the host clock on the CPU."""
        if self.cuda:
            s, e = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
            s.record()
            calls()
            e.record()
            e.synchronize()
            return s.elapsed_time(e)
        t = time.perf_counter()
        calls()
        return (time.perf_counter() - t) * 1e3

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time(self, sets, fn):
        """Median ms of one `fn(i)` call, rotating over `sets` input sets (module documentation)."""
        for i in range(max(sets, 2)):
            fn(i % sets)
        self.sync()

        def one_pass():
            for i in range(sets):
                fn(i)

        est = max(self._now_ms(fn, one_pass) / sets, 1e-4)
        iters = min(max(sets, math.ceil(MIN_SAMPLE_MS / est)), 1 << 16)
        runs = int(CASE_BUDGET_MS / (est * iters))
        runs = max(min(MIN_RUNS, self.runs), min(runs, self.runs))
        k = [0]

        def sample():
            for _ in range(iters):
                fn(k[0] % sets)
                k[0] += 1

        samples = sorted(self._now_ms(fn, sample) / iters for _ in range(runs))
        mid = len(samples) // 2
        median = samples[mid] if len(samples) % 2 else (samples[mid - 1] + samples[mid]) / 2
        return dict(median_ms=median, min_ms=samples[0], max_ms=samples[-1], samples=runs,
                    calls_per_sample=iters, input_sets=sets)


# ----------------------------------------------------------------------------------------------------------------
# Peers

class Peers:
    def __init__(self, args, torch, device):
        self.args, self.torch, self.device = args, torch, device
        self.F = torch.nn.functional
        self.timer = Timer(torch, device, args.runs)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(args.seed)
        self.records = []
        self.compile_spent = 0.0
        self.want = set(args.peers.split(","))
        self.fla = None
        self.fla_error = None
        if "fla" in self.want and device == "cuda":
            try:
                from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
                import fla
                self.fla = (chunk_simple_gla, fused_recurrent_simple_gla, getattr(fla, "__version__", "?"))
            except Exception as e:  # recorded for each fla peer
                self.fla_error = f"import fla: {type(e).__name__}: {e}"
        elif "fla" in self.want:
            self.fla_error = "fla needs a CUDA device (Triton)"
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from reference import model as ref  # noqa: E402
        self.ref = ref
        self.compiled = {}

    def rand(self, shape, lo, hi, dtype):
        t = self.torch
        x = t.rand(shape, generator=self.gen, device=self.device, dtype=t.float32)
        return (lo + (hi - lo) * x).to(dtype)

    def free(self):
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    def compile(self, key, fn):
        """`torch.compile(fn)`, once per key; compile time is charged to the `--compile-budget`."""
        if key not in self.compiled:
            self.compiled[key] = self.torch.compile(fn, dynamic=False)
        return self.compiled[key]

    def run(self, case, peer, sets, fn, note=None, compiled=False, check=None):
        """Times `fn(i)` for `case`, recording the result or the error; `check()` returns extra fields."""
        rec = dict(kernel=case.kernel, case=case.case, peer=peer, flops=case.flops, bytes=case.bytes)
        if note:
            rec["note"] = note
        if peer.split("_")[0] not in self.want and peer not in self.want:
            return
        if compiled and self.args.no_compile:
            return
        if compiled and self.compile_spent > self.args.compile_budget:
            rec["error"] = f"skipped: the compile budget of {self.args.compile_budget} s is spent"
            self.records.append(rec)
            return
        t0 = time.perf_counter()
        try:
            if compiled:
                fn(0)
                self.timer.sync()
                self.compile_spent += time.perf_counter() - t0
            rec.update(self.timer.time(sets, fn))
            s = rec["median_ms"] * 1e-3
            rec["tflops"] = case.flops / s / 1e12
            rec["gbps"] = case.bytes / s / 1e9
            rec["roofline_fraction"] = max(case.flops / (self.args.peak_tflops * 1e12),
                                           case.bytes / (self.args.peak_gbps * 1e9)) / s
            if case.gathered:
                rec["gather_gbps"] = case.gathered / s / 1e9
            if check is not None:
                rec.update(check())
        except Exception as e:
            rec["error"] = f"{type(e).__name__}: {str(e)[:600]}"
            if self.args.verbose:
                traceback.print_exc()
        finally:
            if compiled and "median_ms" not in rec:
                self.compile_spent += time.perf_counter() - t0
        self.records.append(rec)
        print(f"  {case.kernel:<13} {case.case:<22} {peer:<18} "
              + (f"{rec['median_ms']:10.4f} ms  {100 * rec['roofline_fraction']:5.1f} % roofline"
                 if "median_ms" in rec else rec["error"][:160]), flush=True)

    def rel_err(self, out, ref):
        out, ref = out.double(), ref.double()
        return float((out - ref).norm() / ref.norm().clamp_min(1e-30))

    # ---- SSD -------------------------------------------------------------------------------------------------

    def ssd_inputs(self, batch, length, nsets):
        t, bf = self.torch, self.torch.bfloat16
        h, p, n = SSD_HEADS, SSD_DIM, SSD_DIM
        return [dict(x=self.rand((batch, length, h, p), -1, 1, bf), dt=self.rand((batch, length, h), -3, 1, bf),
                     A=self.rand((h,), -0.5, -0.1, t.float32), B=self.rand((batch, length, h, n), -1, 1, bf),
                     C=self.rand((batch, length, h, n), -1, 1, bf),
                     state=self.rand((batch, h, p, n), -1, 1, t.float32)) for _ in range(nsets)]

    def fla_inputs(self, s):
        """q, k, v, g and the initial state of the GLA form of the SSD (module documentation)."""
        delta = self.F.softplus(s["dt"].float())
        v = (s["x"].float() * delta[..., None]).to(s["x"].dtype)
        g = delta * s["A"]
        return s["C"], s["B"], v, g, s["state"].transpose(-1, -2).contiguous()

    def ssd_prefill(self, case):
        ref = self.ref
        length = case.shape["seq"]
        sets = self.ssd_inputs(1, length, sets_for(case.bytes))
        n = len(sets)

        def core(x, dt, A, B, C, state):
            return ref.ssd_chunked(x, self.F.softplus(dt.float()), A, B, C, SSD_CHUNK, state)

        def call(f):
            return lambda i: f(sets[i]["x"], sets[i]["dt"], sets[i]["A"], sets[i]["B"], sets[i]["C"], sets[i]["state"])

        y_eager = None

        def check_vs_eager(f):
            def check():
                nonlocal y_eager
                if y_eager is None:
                    y_eager = call(core)(0)[0]
                y = f(0)
                return dict(rel_err_vs_eager=self.rel_err(y, y_eager))
            return check

        self.run(case, "torch_eager", n, call(core), note="reference ssd_chunked, float32 inside")
        cf = self.compile("ssd_chunked", core)
        self.run(case, "torch_compile", n, call(cf), note="torch.compile of reference ssd_chunked", compiled=True,
                 check=check_vs_eager(lambda i: call(cf)(i)[0]))
        self.fla_peers_prefill(case, sets, core, check_vs_eager)
        sets.clear()
        self.free()

    def fla_peers_prefill(self, case, sets, core, check_vs_eager):
        if "fla" not in self.want:
            return
        if self.fla is None:
            self.records.append(dict(kernel=case.kernel, case=case.case, peer="fla_chunk", error=self.fla_error))
            return
        chunk = self.fla[0]
        prepped = [self.fla_inputs(s) for s in sets]

        def fla_core(i):
            q, k, v, g, h0 = prepped[i]
            return chunk(q, k, v, g=g, scale=1.0, initial_state=h0, output_final_state=True)

        def fla_prep(i):
            q, k, v, g, h0 = self.fla_inputs(sets[i])
            return chunk(q, k, v, g=g, scale=1.0, initial_state=h0, output_final_state=True)

        note = f"fla-core {self.fla[2]} chunk_simple_gla, q=C k=B v=Δx g=ΔA scale=1"
        self.run(case, "fla_chunk", len(sets), fla_core, note=note + " (v, g prepared outside the timing)",
                 check=check_vs_eager(lambda i: fla_core(i)[0]))
        self.run(case, "fla_chunk+prep", len(sets), fla_prep, note=note + " (softplus, Δx, ΔA timed too)")
        prepped.clear()

    def ssd_decode(self, case):
        ref = self.ref
        batch = case.shape["batch"]
        sets = self.ssd_inputs(batch, 1, sets_for(case.bytes))
        for s in sets:
            for key in ("x", "dt", "B", "C"):
                s[key] = s[key][:, 0].contiguous()
        n = len(sets)

        def core(state, x, dt, A, B, C):
            return ref.ssd_step(state, x, self.F.softplus(dt.float()), A, B, C)

        def call(f):
            return lambda i: f(sets[i]["state"], sets[i]["x"], sets[i]["dt"], sets[i]["A"], sets[i]["B"], sets[i]["C"])

        self.run(case, "torch_eager", n, call(core), note="reference ssd_step (returns a new state)")
        self.run(case, "torch_compile", n, call(self.compile("ssd_step", core)), compiled=True,
                 note="torch.compile of reference ssd_step")
        if "fla" in self.want:
            if self.fla is None:
                self.records.append(dict(kernel=case.kernel, case=case.case, peer="fla_recurrent",
                                         error=self.fla_error))
            else:
                rec = self.fla[1]
                prepped = []
                for s in sets:
                    one = {k: (v[:, None] if k in ("x", "dt", "B", "C") else v) for k, v in s.items()}
                    prepped.append([t.contiguous() for t in self.fla_inputs(one)])

                def fla_step(i):
                    q, k, v, g, h0 = prepped[i]
                    return rec(q, k, v, g=g, scale=1.0, initial_state=h0, output_final_state=True)

                self.run(case, "fla_recurrent", n, fla_step,
                         note=f"fla-core {self.fla[2]} fused_recurrent_simple_gla, one token, v and g prepared")
        sets.clear()
        self.free()

    # ---- attention -------------------------------------------------------------------------------------------

    def attn_bias(self, m, s, t, mode, h):
        """The reference's `[B, H, S, T]` bias (DogeAttention.forward): `where(allowed, m, MIN)` with m `[B, Hm, T]`,
        keep-window top-k when `T > W` (additive_w2048), `repeat_kv` from the Hm mask heads to the H query heads;
        `causal` is `where(allowed, 0, MIN)`."""
        torch, ref = self.torch, self.ref
        bf = torch.bfloat16
        neg = torch.tensor(ref.min_of(bf), dtype=bf, device=self.device)
        pos = torch.arange(t - s, t, device=self.device)
        allowed = (torch.arange(t, device=self.device)[None, :] <= pos[:, None])[None, None]
        if mode == "causal":
            bias = torch.where(allowed, torch.zeros((), dtype=bf, device=self.device), neg)
            bias = bias.expand(m.shape[0], m.shape[1], s, t)
        else:
            bias = torch.where(allowed, m.to(bf)[:, :, None, :], neg)
            if mode == "additive_w2048" and t > KEEP_WINDOW:
                idx = bias.topk(KEEP_WINDOW, dim=-1, sorted=False).indices
                keep = torch.zeros_like(bias, dtype=torch.bool).scatter(-1, idx, True)
                bias = bias.masked_fill(~keep, neg)
        return ref.repeat_kv(bias, h // m.shape[1]).contiguous()

    def attention(self, case):
        torch, F, ref = self.torch, self.F, self.ref
        from torch.nn.attention import SDPBackend, sdpa_kernel
        bf = torch.bfloat16
        b, s, t, mode = case.shape["batch"], case.shape["q_len"], case.shape["kv_len"], case.shape["mode"]
        h, g, d, hm = (case.shape[k] for k in ("heads", "kv_heads", "head_dim", "mask_heads"))
        mask_bytes = 2 * b * h * s * t
        n = sets_for(case.bytes + mask_bytes)
        sets = [dict(q=self.rand((b, h, s, d), -1, 1, bf), k=self.rand((b, g, t, d), -1, 1, bf),
                     v=self.rand((b, g, t, d), -1, 1, bf), m=self.rand((b, hm, t), 0.2, 3.0, torch.float32))
                for _ in range(n)]
        causal = s > 1
        backend = SDPBackend.FLASH_ATTENTION if self.device == "cuda" else SDPBackend.MATH

        rep = h // g

        def flash_gqa(i):
            st = sets[i]
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(st["q"], st["k"], st["v"], is_causal=causal, enable_gqa=True)

        def flash_repeated(i):
            st = sets[i]
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(st["q"], st["kr"], st["vr"], is_causal=causal)

        note = "SDPA flash backend, no mask" + (", is_causal" if causal else "")
        try:
            flash_gqa(0)
            self.run(case, "sdpa_flash", n, flash_gqa, note=note + ", enable_gqa")
        except Exception as e:  # this backend without GQA support: K/V repeated to the query heads beforehand
            for st in sets:
                st["kr"], st["vr"] = ref.repeat_kv(st["k"], rep), ref.repeat_kv(st["v"], rep)
            self.run(case, "sdpa_flash", n, flash_repeated,
                     note=note + f", K/V repeated outside the timing (enable_gqa failed: {type(e).__name__})")
        try:
            for st in sets:
                st["bias"] = self.attn_bias(st["m"], s, t, mode, h)
                st["kr"], st["vr"] = ref.repeat_kv(st["k"], rep), ref.repeat_kv(st["v"], rep)
        except Exception as e:
            self.records.append(dict(kernel=case.kernel, case=case.case, peer="sdpa_mask",
                                     error=f"building the bias: {type(e).__name__}: {str(e)[:400]}"))
        else:
            def masked(i):
                st = sets[i]
                return F.scaled_dot_product_attention(st["q"], st["kr"], st["vr"], attn_mask=st["bias"])

            def eager(i):
                st = sets[i]
                return ref.attend(st["q"], st["kr"], st["vr"], st["bias"], False)

            self.run(case, "sdpa_mask", n, masked,
                     note="SDPA bf16 with the materialised [B,H,S,T] bias (built outside the timing), repeated K/V")
            self.run(case, "ref_eager", n, eager,
                     note="reference attend(): matmul, float32 softmax, matmul, on the materialised bias")
            for st in sets:
                del st["bias"], st["kr"], st["vr"]
            self.free()
            if mode != "causal":
                def build_and_sdpa(i):
                    st = sets[i]
                    bias = self.attn_bias(st["m"], s, t, mode, h)
                    return F.scaled_dot_product_attention(st["q"], ref.repeat_kv(st["k"], rep),
                                                          ref.repeat_kv(st["v"], rep), attn_mask=bias)

                self.run(case, "ref_mask+sdpa", n, build_and_sdpa,
                         note="the reference's bias construction (where, keep-window top-k, repeat_kv) + SDPA bf16")
        sets.clear()
        self.free()

    # ---- CDMoE -----------------------------------------------------------------------------------------------

    def moe(self, case):
        torch = self.torch
        bf = torch.bfloat16
        rows, kernel = case.shape["tokens"], case.kernel
        n = sets_for(case.bytes)
        scale = 1.0 / math.sqrt(MOE_DIM)
        sets = []
        for _ in range(n):
            st = dict(x=self.rand((1, rows, MOE_DIM), -1, 1, bf),
                      q=self.rand((1, rows, 2, MOE_HEADS, MOE_HALF), -1, 1, bf),
                      keys=self.rand((MOE_HEADS, MOE_KEYS, 2, MOE_HALF), -1, 1, bf),
                      down=self.rand((MOE_EXPERTS, MOE_DIM), -scale, scale, bf),
                      up=self.rand((MOE_EXPERTS, MOE_DIM), -scale, scale, bf))
            st["s"] = self.rand((1, rows, MOE_HEADS, MOE_K), -2, 2, torch.float32).to(bf)
            st["e"] = torch.randint(0, MOE_EXPERTS, (1, rows, MOE_HEADS, MOE_K), generator=self.gen,
                                    device=self.device)
            sets.append(st)

        fns = {"pk_topk": (route, ("q", "keys")), "expert_mix": (mix, ("x", "s", "e", "down", "up")),
               "cdmoe": (route_and_mix, ("x", "q", "keys", "down", "up"))}
        fn, keys = fns[kernel]

        def call(f):
            return lambda i: f(*(sets[i][k] for k in keys))

        note = "reference ProductKeyCDMoE.forward after the query projection, without the shared MLP"
        self.run(case, "ref_eager", n, call(fn), note=note)
        self.run(case, "ref_compile", n, call(self.compile(kernel, fn)), note="torch.compile of the same",
                 compiled=True)
        sets.clear()
        self.free()


# The reference's product-key routing and expert mixture (tools/reference/model.py ProductKeyCDMoE.forward, from
# `q = self.queries(x)` viewed as [B, T, 2, He, R/2] to the expert sum), split at the selected experts.
def route(q, keys):
    import torch
    nk, ke = keys.shape[1], MOE_K
    sim = torch.einsum("btphn,hkpn->btphk", q, keys)
    sx, ix = sim[:, :, 0].topk(ke, dim=-1)
    sy, iy = sim[:, :, 1].topk(ke, dim=-1)
    cand = (sx[..., :, None] + sy[..., None, :]).flatten(-2)
    cidx = (ix[..., :, None] * nk + iy[..., None, :]).flatten(-2)
    s, j = cand.topk(ke, dim=-1)
    return s, cidx.gather(-1, j)


def mix(x, s, e, down, up):
    import torch
    import torch.nn.functional as F
    w = torch.einsum("btd,bthkd->bthk", x, F.embedding(e, down))
    w = F.silu(w) * F.softmax(s, dim=-1)
    return torch.einsum("bthk,bthkd->btd", w, F.embedding(e, up))


def route_and_mix(x, q, keys, down, up):
    s, e = route(q, keys)
    return mix(x, s, e, down, up)


# ----------------------------------------------------------------------------------------------------------------
# Report

def fmt_ms(v):
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 100 else f"{v:.1f}"


def tables(cases, cheems, peers):
    """One markdown table per kernel: cheems, then each peer's time, its roofline fraction and cheems' ratio."""
    by = {}
    for r in cheems:
        by[(r["kernel"], r["case"], "cheems")] = r
    for r in peers:
        by[(r["kernel"], r["case"], r["peer"])] = r
    out = []
    for kernel in dict.fromkeys(c.kernel for c in cases):
        kc = [c for c in cases if c.kernel == kernel]
        names = list(dict.fromkeys(r["peer"] for r in peers if r["kernel"] == kernel))
        head = ["case", "cheems ms", "TFLOP/s", "GB/s", "roofline"]
        if kernel in ("expert_mix", "cdmoe"):
            head.append("gather GB/s")
        for p in names:
            head += [f"{p} ms", "roofline", "cheems ×"]
        if names:
            head.append("cheems × best peer")
        lines = [f"### {kernel}", ""]
        if kernel in GOALS:
            lines += [GOALS[kernel], ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in kc:
            ch = by.get((kernel, c.case, "cheems"))
            row = [c.case]
            if ch:
                row += [fmt_ms(ch["median_ms"]), f"{ch['tflops']:.2f}", f"{ch['gbps']:.0f}",
                        f"{100 * ch['roofline_fraction']:.1f} %"]
                if kernel in ("expert_mix", "cdmoe"):
                    row.append(f"{ch.get('gather_gbps', 0):.0f}")
            else:
                row += ["—"] * (5 if kernel in ("expert_mix", "cdmoe") else 4)
            best = None
            for p in names:
                r = by.get((kernel, c.case, p))
                if r is None or "median_ms" not in r:
                    row += ["failed" if r else "—", "", ""]
                    continue
                ratio = r["median_ms"] / ch["median_ms"] if ch else None
                row += [fmt_ms(r["median_ms"]), f"{100 * r['roofline_fraction']:.1f} %",
                        f"{ratio:.2f}×" if ratio else "—"]
                if ratio and (best is None or ratio < best[0]):
                    best = (ratio, p)
            if names:
                row.append(f"**{best[0]:.2f}×** ({best[1]})" if best else "—")
            lines.append("| " + " | ".join(row) + " |")
        errs = {}
        for r in peers:
            if r["kernel"] == kernel and "error" in r:
                errs.setdefault((r["peer"], r["error"][:300]), []).append(r["case"])
        if errs:
            lines.append("")
        for (peer, err), where in errs.items():
            lines.append(f"- {peer} failed at {', '.join(where)}: {err}")
        out.append("\n".join(lines))
    return out


def run_cheems(args):
    cmd = [args.cheems, "bench-kernels", "--json", "--runs", str(args.runs),
           "--lengths", ",".join(map(str, args.lengths)), "--decode-batches", ",".join(map(str, args.decode_batches)),
           "--peak-tflops", str(args.peak_tflops), "--peak-gbps", str(args.peak_gbps), "--seed", str(args.seed)]
    if args.kernel:
        cmd += ["--kernel", args.kernel]
    print("running " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.cheems_timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return dict(error=f"{type(e).__name__}: {e}")
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        return dict(error=f"exit {p.returncode}: {p.stderr[-800:]}")
    rep = json.loads(p.stdout)
    rep["wall_seconds"] = time.perf_counter() - t
    for r in rep["records"]:
        print(f"  {r['kernel']:<13} {r['case']:<22} {'cheems':<18} {r['median_ms']:10.4f} ms  "
              f"{100 * r['roofline_fraction']:5.1f} % roofline", flush=True)
    return rep


def int_list(text):
    """`4096,16384` as [4096, 16384]; argparse's nargs gathers the space-separated ones."""
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cheems", help="path of the cheems binary; its bench-kernels runs first, in this command")
    ap.add_argument("--cheems-timeout", type=float, default=200.0, help="seconds given to cheems bench-kernels")
    ap.add_argument("--out", help="write the JSON report here")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kernel", help="comma-separated words; only kernels whose name contains one")
    ap.add_argument("--peers", default="torch,sdpa,ref,fla",
                    help="comma-separated peer families: torch (eager/compile SSD), sdpa, ref (reference attention "
                         "and CDMoE), fla; or exact peer names")
    ap.add_argument("--lengths", type=int_list, nargs="+", default=[[1024, 4096, 16384]],
                    help="sequence lengths of the prefill cases, comma- or space-separated")
    ap.add_argument("--decode-batches", type=int_list, nargs="+", default=[[1, 4, 16, 64, 256]],
                    help="batch sizes of the decode cases, comma- or space-separated")
    ap.add_argument("--compile-budget", type=float, default=120.0,
                    help="seconds of torch.compile warm-up after which the remaining compiled peers are skipped")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--budget", type=float, default=320.0,
                    help="seconds (from the start, cheems included) after which the remaining peer cases are skipped")
    ap.add_argument("--peak-tflops", type=float, default=790.0)
    ap.add_argument("--peak-gbps", type=float, default=4300.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dry-run", action="store_true", help="list the cases with their FLOPs and bytes only")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the peers' code paths")
    ap.add_argument("--smoke-compile", action="store_true", help="with --smoke: run the torch.compile peers too")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    args.lengths = [n for part in args.lengths for n in part]
    args.decode_batches = [n for part in args.decode_batches for n in part]

    attn_lengths, decode_kv, decode_batches, moe_tokens = args.lengths, DECODE_KV, [1, 16], [1, 4096]
    if args.smoke:
        args.lengths, args.decode_batches, attn_lengths = [128], [2], [96]
        decode_kv, decode_batches, moe_tokens = 128, [2], [1, 8]
        args.runs = min(args.runs, 3)
        args.peers = ",".join(p for p in args.peers.split(",") if p != "fla")
        args.no_compile = args.no_compile or not args.smoke_compile
        global ROTATE_BYTES, MIN_SAMPLE_MS, CASE_BUDGET_MS
        ROTATE_BYTES, MIN_SAMPLE_MS, CASE_BUDGET_MS = 1 << 20, 0.1, 50.0
    cases = all_cases(args.lengths, args.decode_batches, attn_lengths, decode_batches, decode_kv, moe_tokens)
    if args.kernel:
        words = [w for w in args.kernel.split(",") if w]
        cases = [c for c in cases if any(w in c.kernel for w in words)]
    if args.dry_run:
        for c in cases:
            floor = max(c.flops / (args.peak_tflops * 1e12), c.bytes / (args.peak_gbps * 1e9)) * 1e3
            print(f"{c.kernel:<13} {c.case:<22} {c.flops / 1e9:12.4f} GFLOP {c.bytes / 1e6:12.3f} MB "
                  f"floor {floor:.5f} ms  sets {sets_for(c.bytes)}")
        return

    t_start = time.perf_counter()
    report = dict(command=sys.argv, cases=len(cases))
    if args.cheems:
        report["cheems"] = run_cheems(args)
    import torch
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on the GPU machine, or use --smoke on the CPU")
    report.update(torch=torch.__version__, device=torch.cuda.get_device_name() if device == "cuda" else "cpu")
    if args.no_compile:
        args.compile_budget = -1.0
    peers = Peers(args, torch, device)
    report["fla"] = peers.fla[2] if peers.fla else peers.fla_error
    if device == "cuda":
        a = torch.empty(1 << 28, dtype=torch.float32, device=device).uniform_()
        b = torch.empty_like(a)
        t = peers.timer.time(1, lambda i: b.copy_(a))
        report["copy_gbps_torch"] = 2 * a.numel() * 4 / (t["median_ms"] * 1e-3) / 1e9
        print(f"device copy (torch, 1 GiB): {report['copy_gbps_torch']:.0f} GB/s", flush=True)
        del a, b
    print(f"peers: {args.peers}; torch {torch.__version__}; fla: {report['fla']}", flush=True)
    for c in cases:
        if time.perf_counter() - t_start > args.budget:
            peers.records.append(dict(kernel=c.kernel, case=c.case, peer="(all)",
                                      error=f"skipped: the run passed its --budget of {args.budget:g} s"))
            continue
        try:
            if c.kernel == "ssd_prefill":
                peers.ssd_prefill(c)
            elif c.kernel == "ssd_decode":
                peers.ssd_decode(c)
            elif c.kernel.startswith("attn"):
                peers.attention(c)
            else:
                peers.moe(c)
        except Exception as e:  # a case whose inputs cannot be built (memory) is recorded, the rest run
            peers.records.append(dict(kernel=c.kernel, case=c.case, peer="(inputs)",
                                      error=f"{type(e).__name__}: {str(e)[:400]}"))
            peers.free()
        if args.out:  # what is done so far survives a kill
            with open(args.out, "w") as f:
                json.dump(dict(report, peers=peers.records, partial=True), f, indent=1)
    report["peers"] = peers.records
    report["compile_seconds"] = peers.compile_spent
    cheems = report.get("cheems", {}).get("records", [])
    md = tables(cases, cheems, peers.records)
    report["tables"] = md
    report["wall_seconds"] = time.perf_counter() - t_start
    header = (f"{report['device']}, torch {report['torch']}, fla {report['fla']}; bf16; medians; roofline = "
              f"max(FLOPs/{args.peak_tflops:g} TFLOP/s, bytes/{args.peak_gbps:g} GB/s) / time; "
              f"cheems × = peer time / cheems time")
    if "copy_gbps_torch" in report:
        header += f"; device copy measured in this run: {report['copy_gbps_torch']:.0f} GB/s (torch)"
    cp = [r for r in cheems if r["kernel"] == "copy"]
    if cp:
        header += f", {cp[0]['gbps']:.0f} GB/s (cheems)"
    text = header + "\n\n" + "\n\n".join(md) + "\n"
    print("\n" + text, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(f"total {report['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
