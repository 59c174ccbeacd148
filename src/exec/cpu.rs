//! The CPU executor: runs a graph node by node in topological order, each op through its `cheems-ops` CPU
//! kernel, freeing every value after its last reader.

use super::bind_inputs;
use crate::ir::op::{Act, AttentionMask, ExpertAct, Rotary};
use crate::ir::{Graph, NodeId, Op, Tensor};
use anyhow::{bail, Context, Result};
use cheems_ops as ops;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A verified graph with its execution order.
pub struct CpuExecutor {
    graph: Graph,
    order: Vec<NodeId>,
}

/// Wall time spent per node, for profiles.
pub type Timings = Vec<(String, std::time::Duration)>;

impl CpuExecutor {
    pub fn new(graph: Graph) -> Result<CpuExecutor> {
        graph.verify().context("verifying the graph before execution")?;
        let order = graph.topo_order()?;
        Ok(CpuExecutor { graph, order })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the graph. Returns every graph output by name plus the output 0 of each node named in `taps`.
    pub fn run(
        &self,
        inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
    ) -> Result<BTreeMap<String, Tensor>> {
        self.run_timed(inputs, taps, None)
    }

    /// As [`CpuExecutor::run`], recording per-node wall time into `timings` when given.
    pub fn run_timed(
        &self,
        mut inputs: BTreeMap<String, Tensor>,
        taps: &[&str],
        mut timings: Option<&mut Timings>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let g = &self.graph;
        bind_inputs(g, &inputs)?;
        let mut values = super::Values::new(g, &self.order, taps)?;
        for &id in &self.order {
            let node = g.node(id);
            let args = values.operands(g, id)?;
            let start = std::time::Instant::now();
            let outs: Vec<Arc<Tensor>> = match &node.op {
                Op::Input(_) => {
                    vec![Arc::new(inputs.remove(&node.name).context("bound inputs are present")?)]
                }
                // Weights are shared with the graph, never copied per run.
                Op::Const(c) => vec![c.0.clone()],
                op => eval(op, args)
                    .with_context(|| {
                        format!("running node `{}` ({:?})", node.name, node.op.kind())
                    })?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            };
            if let Some(t) = timings.as_deref_mut() {
                t.push((node.name.clone(), start.elapsed()));
            }
            values.keep(id, outs);
        }
        values.finish(|t| Ok(owned(t)))
    }
}

fn owned(t: Arc<Tensor>) -> Tensor {
    Arc::try_unwrap(t).unwrap_or_else(|shared| (*shared).clone())
}

fn f32s(t: &Tensor) -> Result<&[f32]> {
    t.as_f32()
}

fn act(a: Act) -> ops::act::Act {
    match a {
        Act::Silu => ops::act::Act::Silu,
        Act::Relu => ops::act::Act::Relu,
        Act::Gelu => ops::act::Act::Gelu,
        Act::GeluTanh => ops::act::Act::GeluTanh,
    }
}

/// `x Wᵀ + b` over the rows of `x`.
fn linear(x: &[f32], w: &Tensor, b: Option<&Tensor>) -> Result<Vec<f32>> {
    let (out, inp) = (w.dims()[0], w.dims()[1]);
    let p = ops::matmul::LinearParams {
        rows: x.len() / inp.max(1),
        in_features: inp,
        out_features: out,
    };
    let bias = b.map(f32s).transpose()?;
    Ok(ops::matmul::linear(&p, x, f32s(w)?, bias)?)
}

fn with_last(dims: &[usize], last: usize) -> Vec<usize> {
    let mut d = dims.to_vec();
    *d.last_mut().expect("ranked") = last;
    d
}

/// Evaluates one op on concrete tensors.
fn eval(op: &Op, mut a: Vec<Arc<Tensor>>) -> Result<Vec<Tensor>> {
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Input(_) => unreachable!("inputs are bound by the caller"),
        Op::Const(_) => unreachable!("constants are bound by the caller"),
        Op::Embedding => {
            let (ids, table) = (&a[0], &a[1]);
            let (v, d) = (table.dims()[0], table.dims()[1]);
            let out = ops::embedding::gather(f32s(table)?, v, d, ids.as_i64()?)?;
            let mut dims = ids.dims().to_vec();
            dims.push(d);
            one(Tensor::f32(dims, out)?)
        }
        Op::RmsNorm(n) => {
            let cols = a[1].len();
            let p =
                ops::rms_norm::RmsNormParams { rows: a[0].len() / cols.max(1), cols, eps: n.eps };
            one(Tensor::f32(
                a[0].dims().to_vec(),
                ops::rms_norm::rms_norm(&p, f32s(&a[0])?, f32s(&a[1])?)?,
            )?)
        }
        Op::Linear { bias } => {
            let y = linear(f32s(&a[0])?, &a[1], bias.then(|| &*a[2]))?;
            one(Tensor::f32(with_last(a[0].dims(), a[1].dims()[0]), y)?)
        }
        Op::ScaledResidual => {
            let y =
                ops::elementwise::cpu::scaled_residual(f32s(&a[0])?, f32s(&a[1])?, f32s(&a[2])?)?;
            one(Tensor::f32(a[1].dims().to_vec(), y)?)
        }
        Op::ResidualRmsNorm { norm, scaled } => {
            let (h, w) = if *scaled {
                (
                    ops::elementwise::cpu::scaled_residual(
                        f32s(&a[0])?,
                        f32s(&a[1])?,
                        f32s(&a[2])?,
                    )?,
                    &a[3],
                )
            } else {
                (ops::elementwise::cpu::add(f32s(&a[0])?, f32s(&a[1])?)?, &a[2])
            };
            let cols = w.len();
            let p =
                ops::rms_norm::RmsNormParams { rows: h.len() / cols.max(1), cols, eps: norm.eps };
            let y = ops::rms_norm::rms_norm(&p, &h, f32s(w)?)?;
            let dims = a[1].dims().to_vec();
            Ok(vec![Tensor::f32(dims.clone(), h)?, Tensor::f32(dims, y)?])
        }
        Op::SliceLast { start, len } => {
            let n = *a[0].dims().last().expect("ranked");
            let x = f32s(&a[0])?;
            let y = x
                .chunks(n.max(1))
                .flat_map(|row| row[*start..start + len].iter().copied())
                .collect();
            one(Tensor::f32(with_last(a[0].dims(), *len), y)?)
        }
        Op::Add => one(Tensor::f32(
            a[0].dims().to_vec(),
            ops::elementwise::cpu::add(f32s(&a[0])?, f32s(&a[1])?)?,
        )?),
        Op::GatedMlp { act: f, bias } => {
            let x = f32s(&a[0])?;
            let b = |i: usize| bias.then(|| &*a[4 + i]);
            let gate = linear(x, &a[1], b(0))?;
            let up = linear(x, &a[2], b(1))?;
            let h = ops::act::act_mul(act(*f), &gate, &up)?;
            one(Tensor::f32(a[0].dims().to_vec(), linear(&h, &a[3], b(2))?)?)
        }
        Op::Mlp { act: f, bias } => {
            let x = f32s(&a[0])?;
            let b = |i: usize| bias.then(|| &*a[3 + i]);
            let mut h = linear(x, &a[1], b(0))?;
            let f = act(*f);
            h.iter_mut().for_each(|v| *v = f.apply(*v));
            one(Tensor::f32(a[0].dims().to_vec(), linear(&h, &a[2], b(1))?)?)
        }
        Op::SplitLast { parts } => {
            let t = owned(a.remove(0));
            let mut dims = t.dims().to_vec();
            let n = dims.pop().expect("ranked");
            dims.extend([*parts, n / parts]);
            one(t.reshaped(dims)?)
        }
        Op::MergeLast => {
            let t = owned(a.remove(0));
            let mut dims = t.dims().to_vec();
            let m = dims.pop().expect("ranked");
            let n = dims.pop().expect("ranked");
            dims.push(n * m);
            one(t.reshaped(dims)?)
        }
        Op::Permute { perm } => one(permute(&a[0], perm)?),
        Op::Concat { axis } => one(concat(&a[0], &a[1], *axis)?),
        Op::MaskTokens => {
            let (x, mask) = (&a[0], &a[1]);
            let (s, d) = (x.dims()[1], x.dims()[2]);
            if mask.dims()[1] != s {
                return one(owned(a.remove(0)));
            }
            let m = mask.as_i64()?;
            let y = f32s(x)?.iter().enumerate().map(|(i, v)| v * m[i / d] as f32).collect();
            one(Tensor::f32(x.dims().to_vec(), y)?)
        }
        Op::Positions => {
            let (b, s) = (a[0].dims()[0], a[0].dims()[1]);
            let p = a[1].dims()[1] - s;
            one(Tensor::i64(
                vec![b, s],
                (0..b).flat_map(|_| (p..p + s).map(|x| x as i64)).collect(),
            )?)
        }
        Op::RotaryTables(r) => rotary_tables(r, &a[0], a.get(1).map(|t| &**t)),
        Op::Rope => {
            let d = a[0].dims();
            let p = ops::rope::RopeParams { rows: d[0] * d[1], heads: d[2], dim: d[3] };
            one(Tensor::f32(
                d.to_vec(),
                ops::rope::apply(&p, f32s(&a[0])?, f32s(&a[1])?, f32s(&a[2])?)?,
            )?)
        }
        Op::NormRope(n) => {
            let d = a[0].dims();
            let p = ops::norm_rope::NormRopeParams {
                rows: d[0] * d[1],
                heads: d[2],
                dim: d[3],
                eps: n.eps,
            };
            let y = ops::norm_rope::norm_rope(
                &p,
                f32s(&a[0])?,
                f32s(&a[1])?,
                f32s(&a[2])?,
                f32s(&a[3])?,
            )?;
            one(Tensor::f32(d.to_vec(), y)?)
        }
        Op::SsdScan(s) => {
            let d = a[0].dims();
            let p = ops::ssd_scan::SsdScanParams {
                batch: d[0],
                seq: d[1],
                heads: s.heads,
                head_dim: s.head_dim,
                state_dim: s.state_dim,
            };
            let (b, c) = if s.rope {
                let rp =
                    ops::rope::RopeParams { rows: d[0] * d[1], heads: s.heads, dim: s.state_dim };
                let (cos, sin) = (f32s(&a[6])?, f32s(&a[7])?);
                (
                    Cow::Owned(ops::rope::apply(&rp, f32s(&a[3])?, cos, sin)?),
                    Cow::Owned(ops::rope::apply(&rp, f32s(&a[4])?, cos, sin)?),
                )
            } else {
                (Cow::Borrowed(f32s(&a[3])?), Cow::Borrowed(f32s(&a[4])?))
            };
            let (y, state) = ops::ssd_scan::ssd_scan(
                &p,
                f32s(&a[0])?,
                f32s(&a[1])?,
                f32s(&a[2])?,
                &b,
                &c,
                f32s(&a[5])?,
            )?;
            Ok(vec![Tensor::f32(d.to_vec(), y)?, Tensor::f32(a[5].dims().to_vec(), state)?])
        }
        Op::DynamicMaskValues => {
            let d = a[0].dims();
            let p = ops::dynamic_mask::KeyValuesParams { batch: d[0], seq: d[1], heads: d[2] };
            one(Tensor::f32(
                vec![d[0], d[2], d[1]],
                ops::dynamic_mask::key_values(&p, f32s(&a[0])?, f32s(&a[1])?)?,
            )?)
        }
        Op::ProjectedMaskValues { bias } => {
            let (d, w) = (a[0].dims(), &a[1]);
            let (out, inp) = (w.dims()[0], w.dims()[1]);
            let p = ops::matmul::LinearParams {
                rows: d[0] * d[1],
                in_features: inp,
                out_features: out,
            };
            let b = if *bias { Some(f32s(&a[3])?) } else { None };
            let m = ops::matmul::mask_linear(&p, d[1], f32s(&a[0])?, f32s(w)?, b, f32s(&a[2])?)?;
            one(Tensor::f32(vec![d[0], out, d[1]], m)?)
        }
        Op::MaskedAttention(at) => attention(at, &a),
        Op::PkTopK(pk) => {
            let d = a[0].dims();
            let half = a[1].dims()[3];
            let p = ops::pk_topk::PkTopKParams {
                rows: d[0] * d[1],
                heads: pk.heads,
                num_keys: pk.num_keys,
                half,
                k: pk.k,
            };
            let (s, ids) = ops::pk_topk::pk_topk(&p, f32s(&a[0])?, f32s(&a[1])?)?;
            let dims = vec![d[0], d[1], pk.heads, pk.k];
            Ok(vec![Tensor::f32(dims.clone(), s)?, Tensor::i64(dims, ids)?])
        }
        Op::RouterTopK(r) => {
            let d = a[0].dims();
            let p = ops::router_topk::RouterTopKParams {
                tokens: d[0] * d[1],
                num_keys: r.num_keys,
                top_k: r.k,
            };
            let (s, ids) = ops::router_topk::router_topk(&p, f32s(&a[0])?)?;
            let dims = vec![d[0], d[1], 1, r.k];
            Ok(vec![Tensor::f32(dims.clone(), s)?, Tensor::i64(dims, ids)?])
        }
        Op::ExpertMix(e) => {
            let (x, sd) = (a[0].dims(), a[1].dims());
            let p = ops::expert_mix::ExpertMixParams {
                rows: x[0] * x[1],
                heads: sd[2],
                k: sd[3],
                dim: x[2],
                num_experts: a[3].dims()[0],
            };
            let order = match e.order {
                ExpertAct::BeforeSoftmax => ops::expert_mix::ExpertAct::BeforeSoftmax,
                ExpertAct::AfterSoftmax => ops::expert_mix::ExpertAct::AfterSoftmax,
            };
            let mut y = ops::expert_mix::expert_mix(
                &p,
                act(e.act),
                order,
                e.norm_topk,
                f32s(&a[0])?,
                f32s(&a[1])?,
                a[2].as_i64()?,
                f32s(&a[3])?,
                f32s(&a[4])?,
            )?;
            if e.add {
                y.iter_mut().zip(f32s(&a[5])?).for_each(|(y, s)| *y += s);
            }
            one(Tensor::f32(x.to_vec(), y)?)
        }
        Op::InnerValues(iv) => {
            let (x, vk) = (a[0].dims(), a[2].dims());
            let p = ops::inner_values::InnerValuesParams {
                rows: x[0] * x[1],
                heads: iv.heads,
                retrieval: vk[1],
                num_values: vk[2],
                k: iv.k,
                dim: x[2],
            };
            let y = ops::inner_values::inner_values(
                &p,
                f32s(&a[0])?,
                f32s(&a[1])?,
                f32s(&a[2])?,
                f32s(&a[3])?,
            )?;
            one(Tensor::f32(x.to_vec(), y)?)
        }
    }
}

fn permute(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let dims = t.dims();
    let rank = dims.len();
    let mut strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let out_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let src = f32s(t)?;
    let mut out = Vec::with_capacity(src.len());
    let mut idx = vec![0usize; rank];
    for _ in 0..src.len() {
        out.push(src[idx.iter().zip(&out_strides).map(|(i, s)| i * s).sum::<usize>()]);
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            if idx[ax] < out_dims[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    Tensor::f32(out_dims, out)
}

fn concat(a: &Tensor, b: &Tensor, axis: usize) -> Result<Tensor> {
    let (da, db) = (a.dims(), b.dims());
    let outer: usize = da[..axis].iter().product();
    let (ca, cb): (usize, usize) = (da[axis..].iter().product(), db[axis..].iter().product());
    let (xa, xb) = (f32s(a)?, f32s(b)?);
    let mut out = Vec::with_capacity(xa.len() + xb.len());
    for o in 0..outer {
        out.extend_from_slice(&xa[o * ca..(o + 1) * ca]);
        out.extend_from_slice(&xb[o * cb..(o + 1) * cb]);
    }
    let mut dims = da.to_vec();
    dims[axis] += db[axis];
    Tensor::f32(dims, out)
}

/// RoPE tables with the reference's dynamic-NTK state (`max_seq_len_cached`): grows to `L = max(pos)+1` when
/// `L` exceeds it, resets to `M` when `L < M` after growing; frequencies follow the state.
pub(crate) fn rotary_tables(
    r: &Rotary,
    pos: &Tensor,
    rope_len: Option<&Tensor>,
) -> Result<Vec<Tensor>> {
    let positions = pos.as_i64()?;
    let initial = r.dynamic.as_ref().map_or(0, |d| d.max_position as i64);
    let mut cached = rope_len.map(|t| t.as_i64().map(|v| v[0])).transpose()?.unwrap_or(initial);
    let mut theta = r.theta;
    if let Some(dy) = &r.dynamic {
        let m = dy.max_position as i64;
        let l = positions.iter().copied().max().unwrap_or(-1) + 1;
        if l > cached {
            cached = l;
        } else if l < m && cached > m {
            cached = m;
        }
        if cached > m {
            let (f, dim) = (dy.factor as f32, r.dim as f32);
            let scale = (f * cached as f32 / m as f32) - (f - 1.0);
            theta = (r.theta as f32 * scale.powf(dim / (dim - 2.0))) as f64;
        }
    }
    let inv = ops::rope::inv_freq(theta, r.dim);
    let (cos, sin) = ops::rope::tables(positions, &inv);
    let mut dims = pos.dims().to_vec();
    dims.push(r.dim);
    Ok(vec![
        Tensor::f32(dims.clone(), cos)?,
        Tensor::f32(dims, sin)?,
        Tensor::i64(vec![1], vec![cached])?,
    ])
}

fn attention(at: &crate::ir::op::Attention, a: &[Arc<Tensor>]) -> Result<Vec<Tensor>> {
    let (q, k) = (a[0].dims(), a[1].dims());
    let (b, s, t) = (q[0], q[1], k[2]);
    let mut mask_heads = 0;
    let mut key_m = None;
    let mut learned = None;
    let mode = at.mask.kernel_mode();
    match at.mask {
        AttentionMask::Causal => {}
        AttentionMask::Boolean | AttentionMask::Additive { .. } => {
            mask_heads = a[4].dims()[1];
            key_m = Some(f32s(&a[4])?);
        }
        AttentionMask::Learned => {
            let l = a[4].dims()[1];
            if t > l {
                bail!("{t} keys exceed the learned mask's {l} positions (max_position_embeddings)");
            }
            let m = f32s(&a[4])?;
            learned = Some(
                (0..at.heads)
                    .flat_map(|h| m[h * l..h * l + t].iter().copied())
                    .collect::<Vec<f32>>(),
            );
        }
    }
    let p = ops::masked_attention::AttentionParams {
        batch: b,
        q_len: s,
        kv_len: t,
        heads: at.heads,
        kv_heads: at.kv_heads,
        head_dim: at.head_dim,
        mask_heads,
        scale: at.scale,
    };
    let y = ops::masked_attention::masked_attention(
        &p,
        mode,
        f32s(&a[0])?,
        f32s(&a[1])?,
        f32s(&a[2])?,
        key_m,
        learned.as_deref(),
        a[3].as_i64()?,
    )?;
    Ok(vec![Tensor::f32(q.to_vec(), y)?])
}
