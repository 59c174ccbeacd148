//! Builds the graph IR of a checkpoint: semantic ops (embedding, RMSNorm, scaled residual, RoPE, linear, SSD
//! scan, dynamic-mask attention, CDMoE, gated MLP, LM head) wired over the checkpoint's weights.
//!
//! One graph serves prefill and decode. Inputs: `input_ids i64[B,S]`, `attention_mask i64[B,P+S]`,
//! `position_ids i64[B,S]`, `past.rope_len i64[1]` and, per layer, its `past.*` state; outputs: `logits f32[B,S,V]`
//! and the matching `present.*` states.

use super::checkpoint::Weights;
use super::config::{Ffn, LayerKind, MaskMode, ModelConfig, Residual, Router, Variant};
use crate::ir::op::{
    Act, Attention, AttentionMask, Const, ExpertMix, InnerValues, Norm, PkTopK, Rotary, RouterTopK,
    Ssd,
};
use crate::ir::{DType, Dim, Fact, Graph, Op, ValueId};
use anyhow::{bail, Context, Result};
use smallvec::smallvec;
use std::collections::BTreeMap;

/// What a piece of recurrent state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StateKind {
    /// Rotary frequency state (`max_seq_len_cached`), starts at `max_position_embeddings`.
    RopeLen,
    /// Keys `[B,G,P,Dh]`, grows with P.
    Key,
    /// Values `[B,G,P,Dh]`, grows with P.
    Value,
    /// Per-key dynamic mask values `[B,Hm,P]`, grows with P.
    MaskValues,
    /// SSD state `[B,H,Dh,Dh]` in f32, fixed size.
    SsdState,
}

/// A state carried from one call to the next: read from input `past`, written to output `present`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StateSpec {
    pub past: String,
    pub present: String,
    pub kind: StateKind,
    /// Layer index, `None` for model-wide state.
    pub layer: Option<usize>,
    pub fact: Fact,
}

/// How the graph is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildOptions {
    /// The export form: positions computed in the graph (`P + arange(S)`), RoPE frequencies from the call's
    /// positions alone, per-key mask values recomputed from the cached values; the only state is the KV cache and
    /// the SSD state. Without it, positions are an input and the session keeps the RoPE length and the per-key
    /// mask values as state.
    pub stateless: bool,
}

/// A built model: its config, graph and states.
#[derive(Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub graph: Graph,
    pub states: Vec<StateSpec>,
}

/// Tensor names of the layer blocks of each layout.
struct Names {
    embed: &'static str,
    final_norm: &'static str,
    norm1: &'static str,
    residual1: &'static str,
    norm2: &'static str,
    residual2: &'static str,
    attn: &'static str,
    ffn: &'static str,
}

fn names(v: Variant) -> Names {
    match v {
        Variant::CheemsV1 | Variant::CheemsHead => Names {
            embed: "model.word_embed.weight",
            final_norm: "model.final_layernorm.weight",
            norm1: "pre_sequence_layernorm.weight",
            residual1: "post_sequence_residual.weight",
            norm2: "pre_state_layernorm.weight",
            residual2: "post_state_residual.weight",
            attn: "attn",
            ffn: "feed_forward",
        },
        Variant::DogeNative | Variant::DogeLate => Names {
            embed: "model.embed_tokens.weight",
            final_norm: "model.norm.weight",
            norm1: "input_layernorm.weight",
            residual1: "input_residual",
            norm2: "post_attention_layernorm.weight",
            residual2: "post_attention_residual",
            attn: "self_attn",
            ffn: "mlp",
        },
        Variant::DogeRemote => Names {
            embed: "model.word_embed.weight",
            final_norm: "model.final_layernorm.weight",
            norm1: "pre_layernorm.weight",
            residual1: "pre_residual.weight",
            norm2: "post_layernorm.weight",
            residual2: "post_residual.weight",
            attn: "self_attn",
            ffn: "feed_forward",
        },
        Variant::DogeIfa => Names {
            embed: "model.word_embed.weight",
            final_norm: "model.final_layernorm.weight",
            norm1: "in_attn_layernorm.weight",
            residual1: "",
            norm2: "in_ff_layernorm.weight",
            residual2: "",
            attn: "attn",
            ffn: "feed_forward",
        },
    }
}

struct Builder<'a> {
    g: Graph,
    w: &'a Weights,
    cfg: &'a ModelConfig,
    consts: BTreeMap<String, ValueId>,
    states: Vec<StateSpec>,
    b: Dim,
    s: Dim,
    p: Dim,
    opts: BuildOptions,
}

/// Builds the graph of `cfg` over `w`; every stored tensor must be used, and every needed one present.
pub fn build(cfg: &ModelConfig, w: &Weights) -> Result<Model> {
    build_with(cfg, w, BuildOptions::default())
}

/// [`build`] with options.
pub fn build_with(cfg: &ModelConfig, w: &Weights, opts: BuildOptions) -> Result<Model> {
    let (b, s, p) = (Dim::sym("B"), Dim::sym("S"), Dim::sym("P"));
    let mut bld = Builder {
        g: Graph::new(),
        w,
        cfg,
        consts: BTreeMap::new(),
        states: Vec::new(),
        b,
        s,
        p,
        opts,
    };
    bld.model()?;
    let unused = w.unused();
    if !unused.is_empty() {
        let shown: Vec<&str> = unused.iter().take(8).map(String::as_str).collect();
        bail!(
            "{} unexpected tensor(s) for a {} model: {}{}",
            unused.len(),
            cfg.variant.name(),
            shown.join(", "),
            if unused.len() > shown.len() { ", ..." } else { "" }
        );
    }
    bld.g.verify().context("verifying the built graph")?;
    Ok(Model { config: cfg.clone(), graph: bld.g, states: bld.states })
}

impl Builder<'_> {
    /// The weight `name` as a Const node (one node per tensor, shared by every reader).
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<ValueId> {
        if let Some(v) = self.consts.get(name) {
            let f = self.g.fact(*v)?;
            if f.shape.iter().map(|d| d.as_konst()).ne(shape.iter().map(|&d| Some(d as i64))) {
                bail!("tensor `{name}` is used with shapes {f} and {shape:?}");
            }
            return Ok(*v);
        }
        let t = self.w.take(name, shape)?;
        let v = self.g.wire(name, Op::Const(Const(t)), &[])?;
        self.consts.insert(name.to_string(), v);
        Ok(v)
    }

    fn wire(&mut self, name: impl Into<String>, op: Op, inputs: &[ValueId]) -> Result<ValueId> {
        self.g.wire(name, op, inputs)
    }

    /// A state input `past.{name}` of `fact`; `present.{name}` is declared by [`Builder::present`].
    fn past(
        &mut self,
        name: &str,
        kind: StateKind,
        layer: Option<usize>,
        fact: Fact,
    ) -> Result<ValueId> {
        let past = format!("past.{name}");
        self.states.push(StateSpec {
            past: past.clone(),
            present: format!("present.{name}"),
            kind,
            layer,
            fact: fact.clone(),
        });
        self.g.input(&past, fact)
    }

    fn present(&mut self, name: &str, v: ValueId) -> Result<()> {
        self.g.output(&format!("present.{name}"), v)
    }

    /// `x Wᵀ (+ b)` with `W [out, in]` named `{prefix}.weight` and, when `bias`, `{prefix}.bias`.
    fn linear(
        &mut self,
        prefix: &str,
        x: ValueId,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> Result<ValueId> {
        let w = self.weight(&format!("{prefix}.weight"), &[out, inp])?;
        let mut ins = vec![x, w];
        if bias {
            ins.push(self.weight(&format!("{prefix}.bias"), &[out])?);
        }
        self.wire(prefix, Op::Linear { bias }, &ins)
    }

    fn rms_norm(&mut self, node: &str, tensor: &str, x: ValueId, dim: usize) -> Result<ValueId> {
        let w = self.weight(tensor, &[dim])?;
        let eps = self.cfg.rms_norm_eps as f32;
        self.wire(node, Op::RmsNorm(Norm { eps }), &[x, w])
    }

    fn model(&mut self) -> Result<()> {
        let cfg = self.cfg;
        let (d, v) = (cfg.hidden_size, cfg.vocab_size);
        let n = names(cfg.variant);
        let (b, s, p) = (self.b.clone(), self.s.clone(), self.p.clone());
        let ids = self.g.input("input_ids", Fact::new(DType::I64, [b.clone(), s.clone()]))?;
        let mask = self.g.input("attention_mask", Fact::new(DType::I64, [b.clone(), &p + &s]))?;
        let stateful = !self.opts.stateless;
        let rotary = Rotary {
            dim: cfg.rope.dim,
            theta: cfg.rope.theta,
            dynamic: cfg.rope.dynamic.clone(),
            stateful,
        };
        let cos = if stateful {
            let pos = self.g.input("position_ids", Fact::new(DType::I64, [b, s]))?;
            let rope_len =
                self.past("rope_len", StateKind::RopeLen, None, Fact::konst(DType::I64, &[1]))?;
            let cos = self.wire("rotary", Op::RotaryTables(rotary), &[pos, rope_len])?;
            self.present("rope_len", ValueId { node: cos.node, port: 2 })?;
            cos
        } else {
            let pos = self.wire("positions", Op::Positions, &[ids, mask])?;
            self.wire("rotary", Op::RotaryTables(rotary), &[pos])?
        };
        let sin = ValueId { node: cos.node, port: 1 };

        let table = self.weight(n.embed, &[v, d])?;
        let mut h = self.wire("embed", Op::Embedding, &[ids, table])?;
        for (i, kind) in cfg.layers.iter().enumerate() {
            h = self
                .layer(i, *kind, &n, h, mask, cos, sin)
                .with_context(|| format!("building layer {i}"))?;
        }
        let h = self.rms_norm("final_norm", n.final_norm, h, d)?;
        let lm = if cfg.tie_word_embeddings {
            n.embed.to_string()
        } else {
            "lm_head.weight".to_string()
        };
        let lm = self.weight(&lm, &[v, d])?;
        let logits = self.wire("lm_head", Op::Linear { bias: false }, &[h, lm])?;
        self.g.output("logits", logits)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        i: usize,
        kind: LayerKind,
        n: &Names,
        h: ValueId,
        mask: ValueId,
        cos: ValueId,
        sin: ValueId,
    ) -> Result<ValueId> {
        let d = self.cfg.hidden_size;
        let pre = format!("model.layers.{i}");
        let x = self.rms_norm(&format!("layers.{i}.norm1"), &format!("{pre}.{}", n.norm1), h, d)?;
        let mixed = match kind {
            LayerKind::Ssd => self.ssd(i, x, mask, cos, sin)?,
            LayerKind::Attention => {
                self.attention(i, &format!("{pre}.{}", n.attn), x, mask, cos, sin)?
            }
        };
        let h = self.residual(
            &format!("layers.{i}.residual1"),
            &format!("{pre}.{}", n.residual1),
            h,
            mixed,
        )?;
        let x = self.rms_norm(&format!("layers.{i}.norm2"), &format!("{pre}.{}", n.norm2), h, d)?;
        let ffn = self.ffn(i, &format!("{pre}.{}", n.ffn), x)?;
        self.residual(&format!("layers.{i}.residual2"), &format!("{pre}.{}", n.residual2), h, ffn)
    }

    fn residual(&mut self, node: &str, tensor: &str, r: ValueId, f: ValueId) -> Result<ValueId> {
        match self.cfg.residual {
            Residual::Plain => self.wire(node, Op::Add, &[r, f]),
            Residual::ScaledWeight | Residual::ScaledBare => {
                let w = self.weight(tensor, &[self.cfg.hidden_size])?;
                self.wire(node, Op::ScaledResidual, &[w, r, f])
            }
        }
    }

    fn heads(&mut self, name: String, x: ValueId, parts: usize) -> Result<ValueId> {
        self.wire(name, Op::SplitLast { parts }, &[x])
    }

    fn ssd(
        &mut self,
        i: usize,
        x: ValueId,
        mask: ValueId,
        cos: ValueId,
        sin: ValueId,
    ) -> Result<ValueId> {
        let cfg = self.cfg;
        let (d, h, dh, bias) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.ssd_bias);
        let Some(chunk) = cfg.ssd_chunk_size else { bail!("an SSD layer needs `ssd_chunk_size`") };
        let pre = format!("model.layers.{i}.ssd");
        let x = self.wire(format!("layers.{i}.ssd.masked_input"), Op::MaskTokens, &[x, mask])?;
        let c = self.linear(&format!("{pre}.c_proj"), x, d, h * dh, bias)?;
        let c = self.heads(format!("layers.{i}.ssd.c_heads"), c, h)?;
        let c = self.wire(format!("layers.{i}.ssd.c_rope"), Op::Rope, &[c, cos, sin])?;
        let bm = self.linear(&format!("{pre}.b_proj"), x, d, h * dh, bias)?;
        let bm = self.heads(format!("layers.{i}.ssd.b_heads"), bm, h)?;
        let bm = self.wire(format!("layers.{i}.ssd.b_rope"), Op::Rope, &[bm, cos, sin])?;
        let dt = self.linear(&format!("{pre}.dt_proj"), x, d, h, bias)?;
        let xs = self.linear(&format!("{pre}.x_proj"), x, d, h * dh, bias)?;
        let xs = self.heads(format!("layers.{i}.ssd.x_heads"), xs, h)?;
        let a = self.weight(&format!("{pre}.A"), &[h])?;
        let state_fact = Fact::new(DType::F32, [self.b.clone(), h.into(), dh.into(), dh.into()]);
        let state =
            self.past(&format!("{i}.ssd_state"), StateKind::SsdState, Some(i), state_fact)?;
        let ssd = Ssd { heads: h, head_dim: dh, state_dim: dh, chunk, rope: false };
        let y = self.wire(
            format!("layers.{i}.ssd.scan"),
            Op::SsdScan(ssd),
            &[xs, dt, a, bm, c, state],
        )?;
        self.present(&format!("{i}.ssd_state"), ValueId { node: y.node, port: 1 })?;
        let y = self.wire(format!("layers.{i}.ssd.merge"), Op::MergeLast, &[y])?;
        self.linear(&format!("{pre}.out_proj"), y, h * dh, d, bias)
    }

    /// Appends the new `[B,S,X,Dh]` heads to the `[B,X,P,Dh]` cache `past.{i}.{what}`.
    fn cache(
        &mut self,
        i: usize,
        what: &str,
        kind: StateKind,
        new: ValueId,
        heads: usize,
    ) -> Result<ValueId> {
        let dh = self.cfg.head_dim;
        let fact = Fact::new(DType::F32, [self.b.clone(), heads.into(), self.p.clone(), dh.into()]);
        let past = self.past(&format!("{i}.{what}"), kind, Some(i), fact)?;
        let t = self.wire(
            format!("layers.{i}.attn.{what}_t"),
            Op::Permute { perm: smallvec![0, 2, 1, 3] },
            &[new],
        )?;
        let all =
            self.wire(format!("layers.{i}.attn.{what}_all"), Op::Concat { axis: 2 }, &[past, t])?;
        self.present(&format!("{i}.{what}"), all)?;
        Ok(all)
    }

    fn attention(
        &mut self,
        i: usize,
        pre: &str,
        x: ValueId,
        mask: ValueId,
        cos: ValueId,
        sin: ValueId,
    ) -> Result<ValueId> {
        let cfg = self.cfg;
        let ac = &cfg.attention;
        let (d, h, g, dh, bias) =
            (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, ac.bias);
        let node = |s: &str| format!("layers.{i}.attn.{s}");
        let q = self.linear(&format!("{pre}.q_proj"), x, d, h * dh, bias)?;
        let mut q = self.heads(node("q_heads"), q, h)?;
        let k = self.linear(&format!("{pre}.k_proj"), x, d, g * dh, bias)?;
        let mut k = self.heads(node("k_heads"), k, g)?;
        let v_flat = match &cfg.inner_values {
            Some(iv) => {
                let vq =
                    self.linear(&format!("{pre}.v_queries"), x, d, iv.heads * iv.retrieval, bias)?;
                let keys = self
                    .weight(&format!("{pre}.v_keys"), &[iv.heads, iv.retrieval, iv.num_values])?;
                let embed = self.weight(&format!("{pre}.v_embed.weight"), &[iv.num_values, d])?;
                let op = Op::InnerValues(InnerValues { heads: iv.heads, k: iv.per_head });
                self.wire(node("inner_values"), op, &[x, vq, keys, embed])?
            }
            None => self.linear(&format!("{pre}.v_proj"), x, d, g * dh, bias)?,
        };
        let v = self.heads(node("v_heads"), v_flat, g)?;
        if ac.qk_norm {
            q = self.rms_norm(&node("q_norm"), &format!("{pre}.q_norm.weight"), q, dh)?;
            k = self.rms_norm(&node("k_norm"), &format!("{pre}.k_norm.weight"), k, dh)?;
        }
        let q = self.wire(node("q_rope"), Op::Rope, &[q, cos, sin])?;
        if ac.rope_keys {
            k = self.wire(node("k_rope"), Op::Rope, &[k, cos, sin])?;
        }
        let k_all = self.cache(i, "key", StateKind::Key, k, g)?;
        let v_all = self.cache(i, "value", StateKind::Value, v, g)?;
        let mut ins = vec![q, k_all, v_all, mask];
        let mode = match &ac.mask {
            MaskMode::Boolean | MaskMode::Additive { .. } => {
                let hm = ac.mask_heads;
                let values = if self.opts.stateless {
                    let t = self.wire(
                        node("value_rows"),
                        Op::Permute { perm: smallvec![0, 2, 1, 3] },
                        &[v_all],
                    )?;
                    self.wire(node("value_rows_flat"), Op::MergeLast, &[t])?
                } else {
                    v_flat
                };
                let dt = self.linear(&format!("{pre}.dt_proj"), values, g * dh, hm, bias)?;
                let a = self.weight(&format!("{pre}.A"), &[hm])?;
                let m = self.wire(node("mask_values"), Op::DynamicMaskValues, &[dt, a])?;
                let all = if self.opts.stateless {
                    m
                } else {
                    let fact = Fact::new(DType::F32, [self.b.clone(), hm.into(), self.p.clone()]);
                    let past =
                        self.past(&format!("{i}.mask"), StateKind::MaskValues, Some(i), fact)?;
                    let all = self.wire(node("mask_all"), Op::Concat { axis: 2 }, &[past, m])?;
                    self.present(&format!("{i}.mask"), all)?;
                    all
                };
                ins.push(all);
                match ac.mask {
                    MaskMode::Boolean => AttentionMask::Boolean,
                    MaskMode::Additive { ratio, keep_window } => {
                        AttentionMask::Additive { ratio: ratio as f32, keep_window }
                    }
                    MaskMode::Learned => unreachable!("matched above"),
                }
            }
            MaskMode::Learned => {
                let learned =
                    self.weight(&format!("{pre}.dynamic_mask"), &[h, cfg.max_position_embeddings])?;
                ins.push(learned);
                AttentionMask::Learned
            }
        };
        let att = Attention {
            heads: h,
            kv_heads: g,
            head_dim: dh,
            scale: 1.0 / (dh as f32).sqrt(),
            mask: mode,
        };
        let o = self.wire(node("attention"), Op::MaskedAttention(att), &ins)?;
        let o = self.wire(node("merge"), Op::MergeLast, &[o])?;
        self.linear(&format!("{pre}.o_proj"), o, h * dh, d, bias)
    }

    fn ffn(&mut self, i: usize, pre: &str, x: ValueId) -> Result<ValueId> {
        let cfg = self.cfg;
        let (d, inter, bias, act) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, cfg.act);
        let node = |s: &str| format!("layers.{i}.ffn.{s}");
        let (shared, moe) = match &cfg.ffn {
            Ffn::GatedMlp => (self.gated_mlp(&node("mlp"), pre, x, act)?, None),
            Ffn::Cdmoe(m) => (self.gated_mlp(&node("mlp"), pre, x, act)?, Some(m)),
            Ffn::UpDownCdmoe(m) => {
                let up = self.weight(&format!("{pre}.up_proj.weight"), &[inter, d])?;
                let down = self.weight(&format!("{pre}.down_proj.weight"), &[d, inter])?;
                let mut ins = vec![x, up, down];
                if bias {
                    ins.push(self.weight(&format!("{pre}.up_proj.bias"), &[inter])?);
                    ins.push(self.weight(&format!("{pre}.down_proj.bias"), &[d])?);
                }
                (self.wire(node("mlp"), Op::Mlp { act, bias }, &ins)?, Some(m))
            }
        };
        let Some(m) = moe else { return Ok(shared) };
        let (scores, ids) = match &m.router {
            Router::ProductKeys { heads, per_head, retrieval } => {
                let q = self.linear(&format!("{pre}.queries"), x, d, heads * retrieval, false)?;
                let keys =
                    self.weight(&format!("{pre}.keys"), &[*heads, m.num_keys, 2, retrieval / 2])?;
                let op = Op::PkTopK(PkTopK { heads: *heads, num_keys: m.num_keys, k: *per_head });
                let r = self.wire(node("route"), op, &[q, keys])?;
                (r, ValueId { node: r.node, port: 1 })
            }
            Router::Gate { top_k, .. } => {
                let gb = self.w.contains(&format!("{pre}.router_gate.bias"));
                let logits =
                    self.linear(&format!("{pre}.router_gate"), x, d, 2 * m.num_keys, gb)?;
                let op = Op::RouterTopK(RouterTopK { num_keys: m.num_keys, k: *top_k });
                let r = self.wire(node("route"), op, &[logits])?;
                (r, ValueId { node: r.node, port: 1 })
            }
        };
        let norm_topk = matches!(m.router, Router::Gate { norm_topk_prob: true, .. });
        let down = self.weight(&format!("{pre}.down_embed.weight"), &[m.num_experts, d])?;
        let up = self.weight(&format!("{pre}.up_embed.weight"), &[m.num_experts, d])?;
        let op = Op::ExpertMix(ExpertMix { act, order: m.expert_act, norm_topk, add: false });
        let experts = self.wire(node("experts"), op, &[x, scores, ids, down, up])?;
        self.wire(node("sum"), Op::Add, &[shared, experts])
    }

    fn gated_mlp(&mut self, node: &str, pre: &str, x: ValueId, act: Act) -> Result<ValueId> {
        let (d, inter, bias) =
            (self.cfg.hidden_size, self.cfg.intermediate_size, self.cfg.mlp_bias);
        let gate = self.weight(&format!("{pre}.gate_proj.weight"), &[inter, d])?;
        let up = self.weight(&format!("{pre}.up_proj.weight"), &[inter, d])?;
        let down = self.weight(&format!("{pre}.down_proj.weight"), &[d, inter])?;
        let mut ins = vec![x, gate, up, down];
        if bias {
            ins.push(self.weight(&format!("{pre}.gate_proj.bias"), &[inter])?);
            ins.push(self.weight(&format!("{pre}.up_proj.bias"), &[inter])?);
            ins.push(self.weight(&format!("{pre}.down_proj.bias"), &[d])?);
        }
        self.wire(node, Op::GatedMlp { act, bias }, &ins)
    }
}
