//! Running exported ONNX files in tract.
//!
//! [`onnx_with_cheems_ops`] is tract's ONNX loader with the `ai.cheems` custom ops of the export
//! (`SsdScan`, `DynamicMaskValues`, `MaskedAttention`, `PkTopK`, `RouterTopK`, `ExpertMix`,
//! `InnerValues`) registered as tract ops that evaluate through the `cheems-ops` CPU kernels, so the
//! functions form of an export runs in tract (tract does not read model-local functions). The
//! `--inline` form holds standard ops only and loads with plain [`tract_onnx::onnx`].
//!
//! [`TractModel`] loads either form and runs generations: a prefill from empty caches, then decode
//! steps that feed each `present.*` output back as the `past.*` input of the same name.

use crate::ir::Tensor as IrTensor;
use crate::runner::{Inputs, Outputs};
use anyhow::{bail, ensure, Context, Result};
use cheems_ops as ops;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::{
    check_input_arity, check_output_arity, expand, not_out_of_plan, op_as_typed_op, op_out_of_plan,
    tvec, DatumType, DimLike, EvalContext, EvalOp, Expansion, Factoid, InferenceModel,
    InferenceModelExt, InferenceOp, InferenceResult, IntoTValue, IntoTensor, Op, OutletId, Solver,
    SpecialOps, StaticName, Symbol, TDim, TValue, TVec, Tensor, TensorProxy, ToDim, TractResult,
    TypedFact, TypedModel, TypedModelPatch, TypedOp, TypedRunnableModel,
};
use tract_onnx::tract_hir::prelude::{Framework, IntoRunnable};
use tract_onnx::tract_hir::tract_core::ops::array::Topk;
use tract_onnx::tract_hir::tract_core::optim::Optimizer;
use tract_onnx::tract_hir::tract_ndarray::ArrayD;

/// The custom-op domain of the export.
pub const DOMAIN: &str = "ai.cheems";

/// The version of [`DOMAIN`] these ops implement.
pub const DOMAIN_VERSION: i64 = 1;

/// The op types of [`DOMAIN`], as registered by [`register_cheems_ops`].
pub const OP_TYPES: [&str; 7] = [
    "SsdScan",
    "DynamicMaskValues",
    "MaskedAttention",
    "PkTopK",
    "RouterTopK",
    "ExpertMix",
    "InnerValues",
];

/// tract's ONNX loader with the `ai.cheems` ops registered.
pub fn onnx_with_cheems_ops() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register_cheems_ops(&mut onnx.op_register);
    onnx
}

/// Registers the `ai.cheems` ops in a tract ONNX op register (keyed by op type, as tract keys every op).
pub fn register_cheems_ops(register: &mut tract_onnx::model::OnnxOpRegister) {
    for op_type in OP_TYPES {
        register.insert(op_type, build);
    }
}

/// A float attribute compared by its bits, so that ops are `Eq` as tract requires.
#[derive(Clone, Copy, Debug)]
struct Float(f32);

impl PartialEq for Float {
    fn eq(&self, other: &Float) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Float {}

/// The `mask` attribute of `MaskedAttention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mask {
    Causal,
    Boolean,
    Additive { ratio: Float, keep_window: Option<usize> },
    Learned,
}

/// One `ai.cheems` op with its attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    SsdScan { heads: usize, head_dim: usize, state_dim: usize },
    DynamicMaskValues,
    MaskedAttention { heads: usize, kv_heads: usize, head_dim: usize, scale: Float, mask: Mask },
    PkTopK { heads: usize, num_keys: usize, k: usize },
    RouterTopK { num_keys: usize, k: usize },
    ExpertMix { act: ops::act::Act, order: ops::expert_mix::ExpertAct, norm_topk: bool },
    InnerValues { heads: usize, k: usize },
}

impl Kind {
    fn op_type(&self) -> &'static str {
        match self {
            Kind::SsdScan { .. } => "SsdScan",
            Kind::DynamicMaskValues => "DynamicMaskValues",
            Kind::MaskedAttention { .. } => "MaskedAttention",
            Kind::PkTopK { .. } => "PkTopK",
            Kind::RouterTopK { .. } => "RouterTopK",
            Kind::ExpertMix { .. } => "ExpertMix",
            Kind::InnerValues { .. } => "InnerValues",
        }
    }

    fn inputs(&self) -> usize {
        match self {
            Kind::SsdScan { .. } => 6,
            Kind::DynamicMaskValues => 2,
            Kind::MaskedAttention { mask: Mask::Causal, .. } => 4,
            Kind::MaskedAttention { .. } | Kind::ExpertMix { .. } => 5,
            Kind::PkTopK { .. } => 2,
            Kind::RouterTopK { .. } => 1,
            Kind::InnerValues { .. } => 4,
        }
    }

    fn outputs(&self) -> usize {
        match self {
            Kind::SsdScan { .. } | Kind::PkTopK { .. } | Kind::RouterTopK { .. } => 2,
            _ => 1,
        }
    }
}

/// An `ai.cheems` node as a tract op: inference rules for the ONNX import, typed facts, and an
/// evaluation through the `cheems-ops` CPU kernel (float inputs other than `f32` are cast to `f32`
/// around the kernel, and float outputs back to the type of the first input).
#[derive(Clone, Debug, PartialEq, Eq)]
struct CheemsOp {
    node: String,
    kind: Kind,
}

fn attr_usize(node: &NodeProto, name: &str) -> TractResult<usize> {
    let v: i64 = node.get_attr(name)?;
    usize::try_from(v)
        .ok()
        .filter(|&v| v > 0)
        .with_context(|| attr_error(node, name, &format!("must be a positive int, got {v}")))
}

fn attr_error(node: &NodeProto, name: &str, msg: &str) -> String {
    format!("node `{}` ({}), attribute `{name}`: {msg}", node.name, node.op_type)
}

fn attr_str<'a>(node: &'a NodeProto, name: &str) -> TractResult<&'a str> {
    node.get_attr::<&str>(name)
}

fn build(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let what = || format!("node `{}` ({})", node.name, node.op_type);
    if node.domain != DOMAIN {
        bail!("{}: domain `{}`, expected `{DOMAIN}`", what(), node.domain);
    }
    let version = ctx.model.opset_import.iter().find(|o| o.domain == DOMAIN).map(|o| o.version);
    if version != Some(DOMAIN_VERSION) {
        bail!(
            "{}: the model imports `{DOMAIN}` version {version:?}, these ops implement version \
             {DOMAIN_VERSION}",
            what()
        );
    }
    let kind = match node.op_type.as_str() {
        "SsdScan" => {
            attr_usize(node, "chunk")?;
            Kind::SsdScan {
                heads: attr_usize(node, "heads")?,
                head_dim: attr_usize(node, "head_dim")?,
                state_dim: attr_usize(node, "state_dim")?,
            }
        }
        "DynamicMaskValues" => Kind::DynamicMaskValues,
        "MaskedAttention" => {
            let ratio: f32 = node.get_attr("ratio")?;
            ensure!(
                ratio.is_finite(),
                attr_error(node, "ratio", &format!("{ratio} is not finite"))
            );
            let keep: i64 = node.get_attr("keep_window")?;
            let keep_window = match usize::try_from(keep) {
                Ok(0) => None,
                Ok(w) => Some(w),
                Err(_) => bail!(attr_error(node, "keep_window", &format!("{keep} is negative"))),
            };
            let mask = match attr_str(node, "mask")? {
                "causal" => Mask::Causal,
                "boolean" => Mask::Boolean,
                "additive" => Mask::Additive { ratio: Float(ratio), keep_window },
                "learned" => Mask::Learned,
                other => bail!(attr_error(
                    node,
                    "mask",
                    &format!("`{other}` is not causal, boolean, additive or learned")
                )),
            };
            let scale: f32 = node.get_attr("scale")?;
            ensure!(
                scale.is_finite(),
                attr_error(node, "scale", &format!("{scale} is not finite"))
            );
            let (heads, kv_heads) = (attr_usize(node, "heads")?, attr_usize(node, "kv_heads")?);
            ensure!(
                heads % kv_heads == 0,
                attr_error(node, "kv_heads", &format!("{kv_heads} does not divide heads {heads}"))
            );
            Kind::MaskedAttention {
                heads,
                kv_heads,
                head_dim: attr_usize(node, "head_dim")?,
                scale: Float(scale),
                mask,
            }
        }
        "PkTopK" => {
            let (num_keys, k) = (attr_usize(node, "num_keys")?, attr_usize(node, "k")?);
            ensure!(
                k <= num_keys,
                attr_error(node, "k", &format!("{k} exceeds num_keys {num_keys}"))
            );
            Kind::PkTopK { heads: attr_usize(node, "heads")?, num_keys, k }
        }
        "RouterTopK" => {
            let (num_keys, k) = (attr_usize(node, "num_keys")?, attr_usize(node, "k")?);
            ensure!(
                num_keys.checked_mul(num_keys).is_some_and(|n| k <= n),
                attr_error(node, "k", &format!("{k} exceeds num_keys² = {num_keys}²"))
            );
            Kind::RouterTopK { num_keys, k }
        }
        "ExpertMix" => {
            let act = match attr_str(node, "act")? {
                "silu" => ops::act::Act::Silu,
                "relu" => ops::act::Act::Relu,
                "gelu" => ops::act::Act::Gelu,
                "gelu_tanh" => ops::act::Act::GeluTanh,
                other => bail!(attr_error(
                    node,
                    "act",
                    &format!("`{other}` is not silu, relu, gelu or gelu_tanh")
                )),
            };
            let order = match attr_str(node, "order")? {
                "before_softmax" => ops::expert_mix::ExpertAct::BeforeSoftmax,
                "after_softmax" => ops::expert_mix::ExpertAct::AfterSoftmax,
                other => bail!(attr_error(
                    node,
                    "order",
                    &format!("`{other}` is not before_softmax or after_softmax")
                )),
            };
            let norm_topk = match node.get_attr::<i64>("norm_topk")? {
                0 => false,
                1 => true,
                other => bail!(attr_error(node, "norm_topk", &format!("{other} is not 0 or 1"))),
            };
            Kind::ExpertMix { act, order, norm_topk }
        }
        "InnerValues" => {
            Kind::InnerValues { heads: attr_usize(node, "heads")?, k: attr_usize(node, "k")? }
        }
        other => bail!("{}: `{other}` is not an op of `{DOMAIN}`", what()),
    };
    let present = node.input.iter().filter(|i| !i.is_empty()).count();
    ensure!(
        present == kind.inputs() && node.input.len() == kind.inputs(),
        "{}: {} inputs, expected {}",
        what(),
        node.input.len(),
        kind.inputs()
    );
    ensure!(
        node.output.len() == kind.outputs(),
        "{}: {} outputs, expected {}",
        what(),
        node.output.len(),
        kind.outputs()
    );
    Ok((expand(CheemsOp { node: node.name.clone(), kind }), vec![]))
}

impl Expansion for CheemsOp {
    fn name(&self) -> StaticName {
        self.kind.op_type().into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.kind)])
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.kind.outputs())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.clone(), inputs)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.kind.inputs())?;
        check_output_arity(outputs, self.kind.outputs())?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        match &self.kind {
            Kind::SsdScan { .. } => {
                s.equals(&outputs[0].shape, &inputs[0].shape)?;
                s.equals(&outputs[1].shape, &inputs[5].shape)?;
                s.equals(&outputs[1].datum_type, &inputs[5].datum_type)?;
            }
            Kind::DynamicMaskValues => {
                s.equals(&inputs[0].rank, 3)?;
                s.equals(&outputs[0].rank, 3)?;
                s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
                s.equals(&outputs[0].shape[1], &inputs[0].shape[2])?;
                s.equals(&outputs[0].shape[2], &inputs[0].shape[1])?;
            }
            Kind::MaskedAttention { .. } | Kind::ExpertMix { .. } | Kind::InnerValues { .. } => {
                s.equals(&outputs[0].shape, &inputs[0].shape)?;
            }
            Kind::PkTopK { heads, k, .. } => self.topk_rules(s, inputs, outputs, *heads, *k)?,
            Kind::RouterTopK { k, .. } => self.topk_rules(s, inputs, outputs, 1, *k)?,
        }
        Ok(())
    }
}

impl CheemsOp {
    fn topk_rules<'r, 'p: 'r>(
        &self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
        heads: usize,
        k: usize,
    ) -> InferenceResult {
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&outputs[1].datum_type, DatumType::I64)?;
        for out in outputs {
            s.equals(&out.rank, 4)?;
            s.equals(&out.shape[0], &inputs[0].shape[0])?;
            s.equals(&out.shape[1], &inputs[0].shape[1])?;
            s.equals(&out.shape[2], heads.to_dim())?;
            s.equals(&out.shape[3], k.to_dim())?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{DOMAIN} {} node `{}`", self.kind.op_type(), self.node)
    }

    /// Output facts from input facts, checking ranks, types and the sizes that the attributes fix.
    fn facts(&self, i: &[&TypedFact]) -> Result<TVec<TypedFact>> {
        ensure!(
            i.len() == self.kind.inputs(),
            "{} inputs, expected {}",
            i.len(),
            self.kind.inputs()
        );
        let names: &[&str] = match &self.kind {
            Kind::SsdScan { .. } => &["x", "dt", "A", "B", "C", "state"],
            Kind::DynamicMaskValues => &["dt", "A"],
            Kind::MaskedAttention { mask: Mask::Learned, .. } => {
                &["q", "k", "v", "attention_mask", "learned"]
            }
            Kind::MaskedAttention { .. } => &["q", "k", "v", "attention_mask", "m"],
            Kind::PkTopK { .. } => &["q", "keys"],
            Kind::RouterTopK { .. } => &["logits"],
            Kind::ExpertMix { .. } => &["x", "scores", "ids", "down", "up"],
            Kind::InnerValues { .. } => &["x", "vq", "v_keys", "v_embed"],
        };
        let int_inputs: &[usize] = match &self.kind {
            Kind::MaskedAttention { .. } => &[3],
            Kind::ExpertMix { .. } => &[2],
            _ => &[],
        };
        for (n, (f, name)) in i.iter().zip(names).enumerate() {
            if int_inputs.contains(&n) {
                ensure!(
                    f.datum_type == DatumType::I64,
                    "`{name}` is {:?}, expected i64",
                    f.datum_type
                );
            } else {
                ensure!(
                    f.datum_type.is_float(),
                    "`{name}` is {:?}, expected a float",
                    f.datum_type
                );
            }
        }
        let rank = |n: usize, r: usize| -> Result<()> {
            ensure!(i[n].rank() == r, "`{}` has rank {}, expected {r}", names[n], i[n].rank());
            Ok(())
        };
        let dim = |n: usize, axis: usize, want: usize, attr: &str| -> Result<()> {
            if let Ok(got) = i[n].shape[axis].to_usize() {
                ensure!(
                    got == want,
                    "axis {axis} of `{}` is {got}, attribute `{attr}` says {want}",
                    names[n]
                );
            }
            Ok(())
        };
        let dt = i[0].datum_type;
        let x = &i[0].shape;
        let like = |d: DatumType, dims: Vec<TDim>| TypedFact::dt_shape(d, dims);
        Ok(match &self.kind {
            Kind::SsdScan { heads, head_dim, state_dim } => {
                for (n, r) in [(0, 4), (1, 3), (2, 1), (3, 4), (4, 4), (5, 4)] {
                    rank(n, r)?;
                }
                dim(0, 2, *heads, "heads")?;
                dim(0, 3, *head_dim, "head_dim")?;
                dim(3, 3, *state_dim, "state_dim")?;
                dim(5, 2, *head_dim, "head_dim")?;
                dim(5, 3, *state_dim, "state_dim")?;
                tvec![(*i[0]).without_value(), (*i[5]).without_value()]
            }
            Kind::DynamicMaskValues => {
                rank(0, 3)?;
                rank(1, 1)?;
                tvec![like(dt, vec![x[0].clone(), x[2].clone(), x[1].clone()])]
            }
            Kind::MaskedAttention { heads, kv_heads, head_dim, mask, .. } => {
                for (n, r) in [(0, 4), (1, 4), (2, 4), (3, 2)] {
                    rank(n, r)?;
                }
                dim(0, 2, *heads, "heads")?;
                dim(0, 3, *head_dim, "head_dim")?;
                dim(1, 1, *kv_heads, "kv_heads")?;
                dim(1, 3, *head_dim, "head_dim")?;
                if *mask != Mask::Causal {
                    rank(4, if *mask == Mask::Learned { 2 } else { 3 })?;
                }
                if *mask == Mask::Learned {
                    dim(4, 0, *heads, "heads")?;
                }
                tvec![(*i[0]).without_value()]
            }
            Kind::PkTopK { heads, num_keys, k } => {
                rank(0, 3)?;
                rank(1, 4)?;
                dim(1, 0, *heads, "heads")?;
                dim(1, 1, *num_keys, "num_keys")?;
                let out = vec![x[0].clone(), x[1].clone(), heads.to_dim(), k.to_dim()];
                tvec![like(dt, out.clone()), like(DatumType::I64, out)]
            }
            Kind::RouterTopK { num_keys, k } => {
                rank(0, 3)?;
                dim(0, 2, 2 * num_keys, "num_keys")?;
                let out = vec![x[0].clone(), x[1].clone(), 1.to_dim(), k.to_dim()];
                tvec![like(dt, out.clone()), like(DatumType::I64, out)]
            }
            Kind::ExpertMix { .. } => {
                rank(0, 3)?;
                for n in [1, 2] {
                    rank(n, 4)?;
                }
                for n in [3, 4] {
                    rank(n, 2)?;
                }
                tvec![(*i[0]).without_value()]
            }
            Kind::InnerValues { heads, .. } => {
                for (n, r) in [(0, 3), (1, 3), (2, 3), (3, 2)] {
                    rank(n, r)?;
                }
                dim(2, 0, *heads, "heads")?;
                tvec![(*i[0]).without_value()]
            }
        })
    }
}

impl Op for CheemsOp {
    fn name(&self) -> StaticName {
        self.kind.op_type().into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.kind)])
    }

    op_as_typed_op!();
}

impl EvalOp for CheemsOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let out = self.run(&inputs).with_context(|| format!("running {}", self.describe()))?;
        Ok(out.into_iter().map(IntoTValue::into_tvalue).collect())
    }
}

impl TypedOp for CheemsOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.facts(inputs).with_context(|| format!("typing {}", self.describe()))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// `t` as `f32` (borrowed when it already is).
fn to_f32(t: &Tensor) -> Result<Cow<'_, Tensor>> {
    ensure!(t.datum_type().is_float(), "expected a float tensor, got {:?}", t.datum_type());
    t.cast_to::<f32>()
}

fn slice<T: tract_onnx::prelude::Datum>(t: &Tensor) -> Result<&[T]> {
    t.try_as_plain_ram()?.as_slice::<T>()
}

/// A tensor of type `dt` from `f32` values.
fn from_f32(dims: &[usize], data: Vec<f32>, dt: DatumType) -> Result<Tensor> {
    let t = ArrayD::from_shape_vec(dims, data)?.into_tensor();
    Ok(if dt == DatumType::F32 { t } else { t.cast_to_dt(dt)?.into_owned() })
}

fn from_i64(dims: &[usize], data: Vec<i64>) -> Result<Tensor> {
    Ok(ArrayD::from_shape_vec(dims, data)?.into_tensor())
}

impl CheemsOp {
    /// Evaluates the op through its `cheems-ops` kernel, passing the tensors as `src/exec/cpu.rs` does.
    fn run(&self, inputs: &[TValue]) -> Result<TVec<Tensor>> {
        ensure!(
            inputs.len() == self.kind.inputs(),
            "{} inputs, expected {}",
            inputs.len(),
            self.kind.inputs()
        );
        let dt = inputs[0].datum_type();
        let float = |n: usize| to_f32(&inputs[n]);
        let d = inputs[0].shape();
        Ok(match &self.kind {
            Kind::SsdScan { heads, head_dim, state_dim } => {
                ensure!(d.len() == 4, "`x` has rank {}, expected 4", d.len());
                let p = ops::ssd_scan::SsdScanParams {
                    batch: d[0],
                    seq: d[1],
                    heads: *heads,
                    head_dim: *head_dim,
                    state_dim: *state_dim,
                };
                let f = (0..6).map(float).collect::<Result<Vec<_>>>()?;
                let s = |n: usize| slice::<f32>(&f[n]);
                let (y, state) =
                    ops::ssd_scan::ssd_scan(&p, s(0)?, s(1)?, s(2)?, s(3)?, s(4)?, s(5)?)?;
                tvec![
                    from_f32(d, y, dt)?,
                    from_f32(inputs[5].shape(), state, inputs[5].datum_type())?
                ]
            }
            Kind::DynamicMaskValues => {
                ensure!(d.len() == 3, "`dt` has rank {}, expected 3", d.len());
                let p = ops::dynamic_mask::KeyValuesParams { batch: d[0], seq: d[1], heads: d[2] };
                let (x, a) = (float(0)?, float(1)?);
                let m = ops::dynamic_mask::key_values(&p, slice(&x)?, slice(&a)?)?;
                tvec![from_f32(&[d[0], d[2], d[1]], m, dt)?]
            }
            Kind::MaskedAttention { .. } => tvec![self.attention(inputs)?],
            Kind::PkTopK { heads, num_keys, k } => {
                let kd = inputs[1].shape();
                ensure!(d.len() == 3 && kd.len() == 4, "`q` must have rank 3 and `keys` rank 4");
                let p = ops::pk_topk::PkTopKParams {
                    rows: d[0] * d[1],
                    heads: *heads,
                    num_keys: *num_keys,
                    half: kd[3],
                    k: *k,
                };
                let (q, keys) = (float(0)?, float(1)?);
                let (s, ids) = ops::pk_topk::pk_topk(&p, slice(&q)?, slice(&keys)?)?;
                let dims = [d[0], d[1], *heads, *k];
                tvec![from_f32(&dims, s, dt)?, from_i64(&dims, ids)?]
            }
            Kind::RouterTopK { num_keys, k } => {
                ensure!(d.len() == 3, "`logits` has rank {}, expected 3", d.len());
                let p = ops::router_topk::RouterTopKParams {
                    tokens: d[0] * d[1],
                    num_keys: *num_keys,
                    top_k: *k,
                };
                let logits = float(0)?;
                let (s, ids) = ops::router_topk::router_topk(&p, slice(&logits)?)?;
                let dims = [d[0], d[1], 1, *k];
                tvec![from_f32(&dims, s, dt)?, from_i64(&dims, ids)?]
            }
            Kind::ExpertMix { act, order, norm_topk } => {
                let (sd, ed) = (inputs[1].shape(), inputs[3].shape());
                ensure!(
                    d.len() == 3 && sd.len() == 4 && ed.len() == 2,
                    "`x`, `scores` and `down` must have ranks 3, 4 and 2"
                );
                let p = ops::expert_mix::ExpertMixParams {
                    rows: d[0] * d[1],
                    heads: sd[2],
                    k: sd[3],
                    dim: d[2],
                    num_experts: ed[0],
                };
                let (x, scores, down, up) = (float(0)?, float(1)?, float(3)?, float(4)?);
                let ids = inputs[2].cast_to::<i64>()?;
                let y = ops::expert_mix::expert_mix(
                    &p,
                    *act,
                    *order,
                    *norm_topk,
                    slice(&x)?,
                    slice(&scores)?,
                    slice(&ids)?,
                    slice(&down)?,
                    slice(&up)?,
                )?;
                tvec![from_f32(d, y, dt)?]
            }
            Kind::InnerValues { heads, k } => {
                let vk = inputs[2].shape();
                ensure!(d.len() == 3 && vk.len() == 3, "`x` and `v_keys` must have rank 3");
                let p = ops::inner_values::InnerValuesParams {
                    rows: d[0] * d[1],
                    heads: *heads,
                    retrieval: vk[1],
                    num_values: vk[2],
                    k: *k,
                    dim: d[2],
                };
                let f = (0..4).map(float).collect::<Result<Vec<_>>>()?;
                let s = |n: usize| slice::<f32>(&f[n]);
                tvec![from_f32(
                    d,
                    ops::inner_values::inner_values(&p, s(0)?, s(1)?, s(2)?, s(3)?)?,
                    dt
                )?]
            }
        })
    }

    fn attention(&self, inputs: &[TValue]) -> Result<Tensor> {
        let Kind::MaskedAttention { heads, kv_heads, head_dim, scale, mask } = &self.kind else {
            bail!("not an attention op")
        };
        let (q, k) = (inputs[0].shape(), inputs[1].shape());
        ensure!(q.len() == 4 && k.len() == 4, "`q` and `k` must have rank 4");
        let (b, s, t) = (q[0], q[1], k[2]);
        let extra = match mask {
            Mask::Causal => None,
            _ => Some(to_f32(&inputs[4])?),
        };
        let mut mask_heads = 0;
        let mut key_m = None;
        let mut learned = None;
        let mode = match *mask {
            Mask::Causal => ops::masked_attention::MaskMode::Causal,
            Mask::Boolean => ops::masked_attention::MaskMode::Boolean,
            Mask::Additive { ratio, keep_window } => {
                ops::masked_attention::MaskMode::Additive { ratio: ratio.0, keep_window }
            }
            Mask::Learned => ops::masked_attention::MaskMode::Learned,
        };
        if let Some(m) = &extra {
            let md = m.shape();
            if *mask == Mask::Learned {
                ensure!(md.len() == 2, "`learned` has rank {}, expected 2", md.len());
                let (h, l) = (md[0], md[1]);
                ensure!(h == *heads, "`learned` has {h} rows, attribute `heads` says {heads}");
                ensure!(
                    t <= l,
                    "{t} keys exceed the learned mask's {l} positions (max_position_embeddings)"
                );
                let m = slice::<f32>(m)?;
                learned = Some(
                    (0..h).flat_map(|h| m[h * l..h * l + t].iter().copied()).collect::<Vec<f32>>(),
                );
            } else {
                ensure!(md.len() == 3, "`m` has rank {}, expected 3", md.len());
                mask_heads = md[1];
                key_m = Some(slice::<f32>(m)?);
            }
        }
        let p = ops::masked_attention::AttentionParams {
            batch: b,
            q_len: s,
            kv_len: t,
            heads: *heads,
            kv_heads: *kv_heads,
            head_dim: *head_dim,
            mask_heads,
            scale: scale.0,
        };
        let (qf, kf, vf) = (to_f32(&inputs[0])?, to_f32(&inputs[1])?, to_f32(&inputs[2])?);
        let attn_mask = inputs[3].cast_to::<i64>()?;
        let y = ops::masked_attention::masked_attention(
            &p,
            mode,
            slice(&qf)?,
            slice(&kf)?,
            slice(&vf)?,
            key_m,
            learned.as_deref(),
            slice(&attn_mask)?,
        )?;
        from_f32(q, y, inputs[0].datum_type())
    }
}

/// How one axis of a `past.*` input is sized for an empty cache.
#[derive(Clone, Debug, PartialEq)]
enum Axis {
    Fixed(usize),
    Batch,
    Past,
}

/// A graph input of an exported model.
#[derive(Clone, Debug)]
struct InputSpec {
    name: String,
    dt: DatumType,
    axes: Vec<Axis>,
}

/// How much of a plan is bound to the call's sizes. The prefill's plans always bind `past_sequence` to 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Level {
    /// `batch`, `sequence` (and `past_sequence` after the prefill) symbolic: one plan for every call.
    Symbolic,
    /// `batch` and `sequence` bound: one plan per (batch, sequence).
    Shape,
    /// Every dim bound: one plan per call shape.
    Concrete,
}

/// The key of a plan: prefill or not, its level and the sizes it binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    prefill: bool,
    level: Level,
    sizes: (usize, usize, usize),
}

/// Plans of one model, made on first use and kept (of the [`Level::Concrete`] ones, only the latest for the
/// prefill and the latest for later calls: a decode step on them needs a new plan anyway).
struct Planner {
    source: InferenceModel,
    batch: Option<Symbol>,
    sequence: Option<Symbol>,
    past: Option<Symbol>,
    plans: Mutex<HashMap<PlanKey, Arc<TypedRunnableModel>>>,
    /// Why a (prefill, level) could not be planned or run, first failure only.
    failures: Mutex<BTreeMap<(bool, Level), String>>,
}

/// An exported ONNX model loaded in tract, with its inputs sorted out: `input_ids` `i64[B,S]`,
/// `attention_mask` `i64[B,P+S]` and one `past.NAME` per `present.NAME` output.
///
/// Each call runs on an optimised plan made on first use and kept. The prefill's plans bind `past_sequence` to
/// 0: tract 0.23.9 folds `Equal` on two symbolic dims by structural equality, so `sequence ==
/// past_sequence+sequence` is `false` in a plan where `past_sequence` is symbolic, which is right for every call
/// after the prefill and wrong for the prefill. A call first tries the plan over symbolic dims; when tract cannot
/// make or run it (its dim algebra cannot divide some symbolic products, as a `Reshape` with `-1` or the chunk
/// count of the SSD body need), the plan bound to the call's (batch, sequence), then to all its sizes.
/// [`TractModel::fallbacks`] says which plans fell back and why.
pub struct TractModel {
    planner: Planner,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    logits: usize,
}

impl TractModel {
    /// Loads `path` with tract: with the `ai.cheems` ops registered when `cheems_ops`, else with
    /// plain tract (the `--inline` form), and checks that tract can type it.
    pub fn load(path: &Path, cheems_ops: bool) -> Result<TractModel> {
        let onnx = if cheems_ops { onnx_with_cheems_ops() } else { tract_onnx::onnx() };
        let model = onnx
            .model_for_path(path)
            .with_context(|| format!("loading {} in tract", path.display()))?;
        Self::from_inference_model(model)
            .with_context(|| format!("preparing {} in tract", path.display()))
    }

    /// Prepares an already parsed model (see [`TractModel::load`]).
    pub fn from_inference_model(model: InferenceModel) -> Result<TractModel> {
        let label = |o: &OutletId| -> Result<String> {
            model
                .outlet_label(*o)
                .map(str::to_string)
                .with_context(|| format!("outlet {o:?} has no name"))
        };
        let input_names: Vec<String> =
            model.input_outlets()?.iter().map(|o| model.node(o.node).name.clone()).collect();
        let outputs: Vec<String> =
            model.output_outlets()?.iter().map(label).collect::<Result<_>>()?;
        let declared = |i: usize| -> Result<(DatumType, TVec<TDim>)> {
            let fact = model.input_fact(i)?;
            let name = &input_names[i];
            let dt = fact
                .datum_type
                .concretize()
                .with_context(|| format!("input `{name}` has no type"))?;
            let shape =
                fact.shape.concretize().with_context(|| format!("input `{name}` has no shape"))?;
            Ok((dt, shape))
        };
        let ids = input_names
            .iter()
            .position(|n| n == "input_ids")
            .context("the model has no `input_ids` input")?;
        let (_, ids_shape) = declared(ids)?;
        ensure!(ids_shape.len() == 2, "`input_ids` has rank {}, expected 2", ids_shape.len());
        let batch = ids_shape[0].clone();
        let mut inputs = Vec::new();
        for (i, name) in input_names.iter().enumerate() {
            let (dt, shape) = declared(i)?;
            let axes = shape
                .iter()
                .map(|d| match d.to_usize() {
                    Ok(n) => Axis::Fixed(n),
                    Err(_) if *d == batch => Axis::Batch,
                    Err(_) => Axis::Past,
                })
                .collect();
            match name.as_str() {
                "input_ids" | "attention_mask" => {}
                n if n.starts_with("past.") => {
                    let present = format!("present.{}", &n["past.".len()..]);
                    ensure!(outputs.contains(&present), "input `{n}` has no `{present}` output");
                }
                n => bail!("unexpected input `{n}` (expected input_ids, attention_mask, past.*)"),
            }
            inputs.push(InputSpec { name: name.clone(), dt, axes });
        }
        ensure!(
            inputs.iter().any(|i| i.name == "attention_mask"),
            "the model has no `attention_mask` input"
        );
        let logits = outputs
            .iter()
            .position(|n| n == "logits")
            .context("the model has no `logits` output")?;
        let sym = |d: &TDim| if let TDim::Sym(s) = d { Some(s.clone()) } else { None };
        let (batch, sequence) = (sym(&ids_shape[0]), sym(&ids_shape[1]));
        let mask = inputs.iter().position(|i| i.name == "attention_mask").expect("checked above");
        let (_, mask_shape) = declared(mask)?;
        ensure!(
            mask_shape.len() == 2,
            "`attention_mask` has rank {}, expected 2",
            mask_shape.len()
        );
        let past = mask_shape[1].symbols().into_iter().find(|s| Some(s) != sequence.as_ref());
        let planner = Planner {
            source: model,
            batch,
            sequence,
            past,
            plans: Mutex::new(HashMap::new()),
            failures: Mutex::new(BTreeMap::new()),
        };
        let typed = planner.source.clone().into_typed().map(|_| ());
        if let Err(e) = typed {
            planner
                .plan(PlanKey { prefill: false, level: Level::Shape, sizes: (1, 1, 0) })
                .with_context(|| {
                    format!(
                        "the model cannot be typed over symbolic dims ({e:#}) nor for one token"
                    )
                })?;
        }
        Ok(TractModel { planner, inputs, outputs, logits })
    }

    /// The plans that tract could not make or run, each with the first reason: (`true` for the prefill,
    /// `"Symbolic"` or `"Shape"`, the error). The calls they would have served ran on more specialised plans.
    pub fn fallbacks(&self) -> Vec<(bool, String, String)> {
        let failures = self.planner.failures.lock().map(|f| f.clone()).unwrap_or_default();
        failures
            .into_iter()
            .map(|((prefill, level), e)| (prefill, format!("{level:?}"), e))
            .collect()
    }

    /// A fresh generation session.
    pub fn session(&self) -> TractSession<'_> {
        TractSession { model: self, states: BTreeMap::new(), mask: Vec::new() }
    }

    /// Prefill of `inputs.input_ids`, then one decode step per column of `inputs.decode_input_ids`.
    pub fn run(&self, inputs: &Inputs) -> Result<Outputs> {
        timed_run(self, inputs).map(|(out, _, _)| out)
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| anyhow::anyhow!("a thread planning the model panicked"))
}

impl Planner {
    /// Runs one call of `batch` sequences of `sequence` new tokens after `past` cached ones on the least
    /// specialised plan that tract can make and run, making it on first use.
    fn run(
        &self,
        (batch, sequence, past): (usize, usize, usize),
        inputs: &TVec<TValue>,
    ) -> Result<TVec<TValue>> {
        let prefill = past == 0;
        let mut errors = Vec::new();
        for level in [Level::Symbolic, Level::Shape, Level::Concrete] {
            if let Some(reason) = lock(&self.failures)?.get(&(prefill, level)) {
                errors.push(format!("{level:?}: {reason}"));
                continue;
            }
            let sizes = match level {
                Level::Symbolic => (0, 0, 0),
                Level::Shape => (batch, sequence, 0),
                Level::Concrete => (batch, sequence, past),
            };
            let key = PlanKey { prefill, level, sizes };
            let result = self.plan(key).and_then(|plan| plan.run(inputs.clone()));
            match result {
                Ok(out) => return Ok(out),
                Err(e) if level == Level::Concrete => errors.push(format!("{level:?}: {e:#}")),
                Err(e) => {
                    lock(&self.plans)?.remove(&key);
                    lock(&self.failures)?.insert((prefill, level), format!("{e:#}"));
                    errors.push(format!("{level:?}: {e:#}"));
                }
            }
        }
        bail!("tract could not run the call:\n{}", errors.join("\n"))
    }

    fn plan(&self, key: PlanKey) -> Result<Arc<TypedRunnableModel>> {
        if let Some(p) = lock(&self.plans)?.get(&key) {
            return Ok(p.clone());
        }
        let (b, s, p) = key.sizes;
        let mut subs: HashMap<Symbol, TDim> = HashMap::new();
        let mut bind = |sym: &Option<Symbol>, v: usize| {
            if let Some(sym) = sym {
                subs.insert(sym.clone(), v.to_dim());
            }
        };
        if key.prefill {
            bind(&self.past, 0);
        }
        if key.level >= Level::Shape {
            bind(&self.batch, b);
            bind(&self.sequence, s);
        }
        if key.level == Level::Concrete {
            bind(&self.past, p);
        }
        let mut m = self.source.clone();
        m.set_symbols(&subs)?;
        let plan = plan(m)?;
        let mut plans = lock(&self.plans)?;
        if key.level == Level::Concrete {
            plans.retain(|k, _| k.level != Level::Concrete || k.prefill != key.prefill);
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }
}

/// Declutter passes of tract 0.23.9 left out. `FoldUniformMask` splits a masked op into regions with a wrong
/// symbolic size (`[batch,1,2,sequence]` for `[batch,1,sequence,sequence]` behind a causal mask), which fails at
/// run time; `PropagateRoi` does not finish on the exported graphs (its region-of-interest unions grow without
/// bound). Both only speed up masked attention written in standard ops.
const SKIPPED_PASSES: [&str; 2] = ["FoldUniformMask", "PropagateRoi"];

/// A tensor of symbolic dims (`TDim`) evaluated to `i64` with the symbol values of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BindDims;

impl Op for BindDims {
    fn name(&self) -> StaticName {
        "BindDims".into()
    }

    op_as_typed_op!();
}

impl EvalOp for BindDims {
    not_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let t = inputs[0].cast_to::<TDim>()?;
        let values = slice::<TDim>(&t)?
            .iter()
            .map(|d| d.eval(ctx.symbols).to_i64().map_err(anyhow::Error::from))
            .collect::<TractResult<Vec<i64>>>()?;
        Ok(tvec![from_i64(t.shape(), values)?.into_tvalue()])
    }
}

impl TypedOp for BindDims {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec![TypedFact::dt_shape(DatumType::I64, inputs[0].shape.clone())])
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// Routes the `k` of every `TopK` that is a tensor of symbolic dims (`min(sequence, W)` of a keep window) through
/// [`BindDims`]: tract 0.23.9's `Topk` reads such a `k` without the call's symbol values and fails.
fn bind_topk_k(model: &mut TypedModel) -> Result<()> {
    let topks: Vec<usize> =
        model.nodes().iter().filter(|n| n.op_is::<Topk>()).map(|n| n.id).collect();
    for id in topks {
        let node = model.node(id).clone();
        if model.outlet_fact(node.inputs[1])?.datum_type != DatumType::TDim {
            continue;
        }
        let mut patch = TypedModelPatch::default();
        let ins = patch.taps(model, &node.inputs)?;
        let k = patch.wire_node(format!("{}.k", node.name), BindDims, &[ins[1]])?[0];
        let outs =
            patch.wire_node(format!("{}.bound", node.name), node.op.clone(), &[ins[0], k])?;
        for (slot, out) in outs.iter().enumerate() {
            patch.shunt_outside(model, OutletId::new(id, slot), *out)?;
        }
        patch.apply(model)?;
    }
    Ok(())
}

/// Types, optimises and plans a parsed model.
fn plan(model: InferenceModel) -> Result<Arc<TypedRunnableModel>> {
    let mut typed = model.into_typed().context("typing the model")?;
    let mut declutter = Optimizer::declutter();
    declutter.passes.retain(|p| {
        let name = format!("{p:?}");
        !SKIPPED_PASSES.iter().any(|skip| name.starts_with(skip))
    });
    declutter.optimize(&mut typed).context("decluttering the model")?;
    bind_topk_k(&mut typed).context("binding the symbolic `k` of TopK nodes")?;
    typed.optimize().context("optimising the model")?;
    typed.into_runnable().context("planning the model")
}

/// `[B,1,V]` logits of `n` steps as `[B,n,V]`.
fn stack_steps(steps: &[IrTensor], b: usize) -> Result<IrTensor> {
    let n = steps.len();
    let v = steps.first().map_or(0, |s| s.dims()[2]);
    let mut out = vec![0f32; b * n * v];
    for (k, st) in steps.iter().enumerate() {
        let l = st.as_f32()?;
        for bi in 0..b {
            out[(bi * n + k) * v..(bi * n + k + 1) * v].copy_from_slice(&l[bi * v..(bi + 1) * v]);
        }
    }
    IrTensor::f32(vec![b, n, v], out)
}

/// Prefill and decode state of one batch in a [`TractModel`]: the `past.*` tensors and the mask.
pub struct TractSession<'a> {
    model: &'a TractModel,
    states: BTreeMap<String, TValue>,
    mask: Vec<Vec<i64>>,
}

fn rows_shape(what: &str, rows: &[Vec<i64>]) -> Result<(usize, usize)> {
    ensure!(!rows.is_empty(), "`{what}` is empty");
    let len = rows[0].len();
    ensure!(len > 0, "`{what}[0]` is empty");
    ensure!(rows.iter().all(|r| r.len() == len), "`{what}` rows must have equal lengths");
    Ok((rows.len(), len))
}

impl TractSession<'_> {
    /// Number of tokens in the caches.
    pub fn past_len(&self) -> usize {
        self.mask.first().map_or(0, Vec::len)
    }

    /// Runs the prompt `ids` from empty caches; `mask` (1 = token, 0 = left padding) defaults to
    /// ones. Returns the logits `[B,S,V]` as `f32`.
    pub fn prefill(&mut self, ids: &[Vec<i64>], mask: Option<&Vec<Vec<i64>>>) -> Result<IrTensor> {
        let (b, s) = rows_shape("input_ids", ids)?;
        let mask = match mask {
            Some(m) => {
                ensure!(
                    rows_shape("attention_mask", m)? == (b, s),
                    "`attention_mask` must be {b}×{s}"
                );
                m.clone()
            }
            None => vec![vec![1; s]; b],
        };
        self.states.clear();
        for input in &self.model.inputs {
            if input.name.starts_with("past.") {
                let dims: Vec<usize> = input
                    .axes
                    .iter()
                    .map(|a| match a {
                        Axis::Fixed(n) => *n,
                        Axis::Batch => b,
                        Axis::Past => 0,
                    })
                    .collect();
                self.states
                    .insert(input.name.clone(), Tensor::zero_dt(input.dt, &dims)?.into_tvalue());
            }
        }
        self.mask = mask;
        self.step(ids)
    }

    /// Feeds one token per sequence after a prefill; returns the logits `[B,1,V]`.
    pub fn decode(&mut self, ids: &[i64]) -> Result<IrTensor> {
        ensure!(!self.mask.is_empty(), "decoding needs a prefill first");
        ensure!(
            ids.len() == self.mask.len(),
            "got {} ids for a batch of {}",
            ids.len(),
            self.mask.len()
        );
        self.mask.iter_mut().for_each(|m| m.push(1));
        let rows: Vec<Vec<i64>> = ids.iter().map(|&i| vec![i]).collect();
        self.step(&rows)
    }

    fn step(&mut self, ids: &[Vec<i64>]) -> Result<IrTensor> {
        let (b, s) = (ids.len(), ids[0].len());
        let t = self.mask[0].len();
        let mut values = TVec::new();
        for input in &self.model.inputs {
            let v = match input.name.as_str() {
                "input_ids" => from_i64(&[b, s], ids.concat())?,
                "attention_mask" => from_i64(&[b, t], self.mask.concat())?,
                name => {
                    let st = self
                        .states
                        .remove(name)
                        .with_context(|| format!("no value for `{name}`"))?;
                    values.push(st);
                    continue;
                }
            };
            values.push(v.cast_to_dt(input.dt)?.into_owned().into_tvalue());
        }
        let outs =
            self.model.planner.run((b, s, t - s), &values).context("running the model in tract")?;
        for (name, value) in self.model.outputs.iter().zip(&outs) {
            if let Some(state) = name.strip_prefix("present.") {
                self.states.insert(format!("past.{state}"), value.clone());
            }
        }
        let logits = to_f32(&outs[self.model.logits])?;
        IrTensor::f32(logits.shape().to_vec(), slice::<f32>(&logits)?.to_vec())
    }
}

/// Loads `path` in tract (see [`TractModel::load`]) and runs `inputs`: a prefill from empty caches,
/// then the decode steps.
pub fn run_onnx_in_tract(path: &Path, cheems_ops: bool, inputs: &Inputs) -> Result<Outputs> {
    TractModel::load(path, cheems_ops)?.run(inputs)
}

/// Arguments of `cheems run-onnx`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Exported ONNX file (`cheems export-onnx`), f32 or f16.
    pub model: std::path::PathBuf,
    /// Inputs JSON: {"input_ids": [[..]], "attention_mask": [[..]] | null, "decode_input_ids": [[..]] | absent}.
    #[arg(long)]
    pub inputs: std::path::PathBuf,
    /// Output safetensors: `logits` f32 [B,T,V] and, with decode ids, `decode_logits` f32 [B,N,V].
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Load with plain tract, without the `ai.cheems` ops (for `--inline` exports).
    #[arg(long)]
    pub plain: bool,
    /// Timed repetitions after the first run (which also makes tract's plans); their median is reported.
    #[arg(long, default_value_t = 0)]
    pub repeat: usize,
    /// Print a JSON summary (shapes, timings, tokens/s) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One generation with the wall time of its prefill and of its decode steps, in seconds.
fn timed_run(model: &TractModel, inputs: &Inputs) -> Result<(Outputs, f64, f64)> {
    use std::time::Instant;
    let mut session = model.session();
    let t0 = Instant::now();
    let logits = session.prefill(&inputs.input_ids, inputs.attention_mask.as_ref())?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let b = inputs.input_ids.len();
    let t1 = Instant::now();
    let decode_logits = match &inputs.decode_input_ids {
        None => None,
        Some(dec) => {
            ensure!(
                dec.len() == b,
                "`decode_input_ids` has {} rows, `input_ids` has {b}",
                dec.len()
            );
            let n = dec.first().map_or(0, Vec::len);
            ensure!(
                dec.iter().all(|r| r.len() == n),
                "`decode_input_ids` rows must have equal lengths"
            );
            let mut steps = Vec::with_capacity(n);
            for k in 0..n {
                let ids: Vec<i64> = dec.iter().map(|r| r[k]).collect();
                steps.push(session.decode(&ids).with_context(|| format!("decode step {k}"))?);
            }
            Some(stack_steps(&steps, b)?)
        }
    };
    let decode_s = t1.elapsed().as_secs_f64();
    Ok((Outputs { logits, decode_logits, taps: BTreeMap::new() }, prefill_s, decode_s))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `cheems run-onnx`: runs an exported file in tract and writes the logits.
pub fn run_cli(a: &RunArgs) -> Result<()> {
    let inputs = Inputs::read(&a.inputs)?;
    let t0 = std::time::Instant::now();
    let model = TractModel::load(&a.model, !a.plain)?;
    let load_s = t0.elapsed().as_secs_f64();
    let (out, first_prefill, first_decode) = timed_run(&model, &inputs)?;
    let mut tensors = vec![("logits", &out.logits)];
    if let Some(d) = &out.decode_logits {
        tensors.push(("decode_logits", d));
    }
    crate::runner::write_safetensors(&a.out, &tensors)?;
    let (mut prefills, mut decodes) = (Vec::new(), Vec::new());
    for _ in 0..a.repeat {
        let (_, p, d) = timed_run(&model, &inputs)?;
        prefills.push(p);
        decodes.push(d);
    }
    let (prefill_s, decode_s) = if a.repeat == 0 {
        (first_prefill, first_decode)
    } else {
        (median(prefills), median(decodes))
    };
    let prompt_tokens = out.logits.dims()[0] * out.logits.dims()[1];
    let decode_tokens = out.decode_logits.as_ref().map_or(0, |d| d.dims()[0] * d.dims()[1]);
    let prefill_tps = prompt_tokens as f64 / prefill_s;
    let decode_tps = if decode_tokens == 0 { 0.0 } else { decode_tokens as f64 / decode_s };
    let fallbacks: Vec<String> = model
        .fallbacks()
        .into_iter()
        .map(|(prefill, level, _)| {
            format!("{} {level}", if prefill { "prefill" } else { "decode" })
        })
        .collect();
    if a.json {
        let v = serde_json::json!({
            "out": a.out.display().to_string(),
            "engine": if a.plain { "tract" } else { "tract+ai.cheems" },
            "logits": out.logits.dims(),
            "decode_logits": out.decode_logits.as_ref().map(|t| t.dims().to_vec()),
            "load_seconds": load_s,
            "first_prefill_seconds": first_prefill,
            "first_decode_seconds": first_decode,
            "repeat": a.repeat,
            "prefill_seconds": prefill_s,
            "decode_seconds": decode_s,
            "prefill_tokens_per_second": prefill_tps,
            "decode_tokens_per_second": decode_tps,
            "plans_fallen_back": fallbacks,
        });
        println!("{}", serde_json::to_string(&v)?);
    } else {
        eprintln!(
            "wrote {} (logits {:?}{}); load {load_s:.3} s; prefill {prefill_tps:.1} tok/s{}{}",
            a.out.display(),
            out.logits.dims(),
            out.decode_logits
                .as_ref()
                .map(|d| format!(", decode_logits {:?}", d.dims()))
                .unwrap_or_default(),
            if decode_tokens == 0 {
                String::new()
            } else {
                format!(", decode {decode_tps:.1} tok/s")
            },
            if a.repeat == 0 {
                " (first run, plans included)".to_string()
            } else {
                format!(" (median of {} runs after the first)", a.repeat)
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{
        attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::dimension,
        tensor_shape_proto::Dimension, type_proto, AttributeProto, GraphProto, ModelProto,
        OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    };

    fn value_info(name: &str, dt: DataType, dims: &[&str]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d.parse::<i64>() {
                    Ok(n) => dimension::Value::DimValue(n),
                    Err(_) => dimension::Value::DimParam(d.to_string()),
                }),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: dt as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    enum A {
        I(i64),
        F(f32),
        S(&'static str),
        Ints(Vec<i64>),
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, A)]) -> NodeProto {
        let domain = if OP_TYPES.contains(&op) { DOMAIN } else { "" };
        let attribute = attrs
            .iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
                match a {
                    A::I(i) => (p.i, p.r#type) = (*i, AttributeType::Int as i32),
                    A::F(f) => (p.f, p.r#type) = (*f, AttributeType::Float as i32),
                    A::S(s) => {
                        (p.s, p.r#type) = (s.as_bytes().to_vec(), AttributeType::String as i32)
                    }
                    A::Ints(v) => (p.ints, p.r#type) = (v.clone(), AttributeType::Ints as i32),
                }
                p
            })
            .collect();
        NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: if OP_TYPES.contains(&op) {
                format!("the_{}", op.to_lowercase())
            } else {
                format!("{}_node", outputs[0])
            },
            op_type: op.into(),
            domain: domain.into(),
            attribute,
            ..Default::default()
        }
    }

    fn initializer(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            float_data: data.to_vec(),
            ..Default::default()
        }
    }

    fn model(
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        initializer: Vec<TensorProto>,
    ) -> ModelProto {
        let opset = |domain: &str, version| OperatorSetIdProto { domain: domain.into(), version };
        ModelProto {
            ir_version: 8,
            opset_import: vec![opset("", 17), opset(DOMAIN, DOMAIN_VERSION)],
            graph: Some(GraphProto {
                node: nodes,
                name: "test".into(),
                input: inputs,
                output: outputs,
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn run(proto: &ModelProto, inputs: Vec<Tensor>) -> Result<TVec<Tensor>> {
        let plan = onnx_with_cheems_ops()
            .model_for_proto_model(proto)?
            .into_optimized()?
            .into_runnable()?;
        let out = plan.run(inputs.into_iter().map(IntoTValue::into_tvalue).collect())?;
        Ok(out.into_iter().map(|v| v.into_tensor()).collect())
    }

    /// Deterministic values in `[-scale, scale)`.
    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn tensor(dims: &[usize], seed: u64, scale: f32) -> Tensor {
        from_f32(dims, values(dims.iter().product(), seed, scale), DatumType::F32).unwrap()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        slice::<f32>(&t.cast_to::<f32>().unwrap()).unwrap().to_vec()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| if x.is_nan() || y.is_nan() { f32::INFINITY } else { (x - y).abs() })
            .fold(0.0, f32::max)
    }

    fn softplus(z: f64) -> f64 {
        if z > 20.0 {
            z
        } else {
            z.exp().ln_1p()
        }
    }

    fn ssd_model(dt: DataType) -> ModelProto {
        let (h, p, n) = ("3", "4", "5");
        let attrs =
            [("heads", A::I(3)), ("head_dim", A::I(4)), ("state_dim", A::I(5)), ("chunk", A::I(8))];
        model(
            vec![node(
                "SsdScan",
                &["x", "dt", "A", "B", "C", "state"],
                &["y", "state_out"],
                &attrs,
            )],
            vec![
                value_info("x", dt, &["batch", "seq", h, p]),
                value_info("dt", dt, &["batch", "seq", h]),
                value_info("A", dt, &[h]),
                value_info("B", dt, &["batch", "seq", h, n]),
                value_info("C", dt, &["batch", "seq", h, n]),
                value_info("state", DataType::Float, &["batch", h, p, n]),
            ],
            vec![
                value_info("y", dt, &["batch", "seq", h, p]),
                value_info("state_out", DataType::Float, &["batch", h, p, n]),
            ],
            vec![],
        )
    }

    /// The SSD recurrence of `ops::ssd_scan` written out in `f64`.
    fn ssd_reference(
        ins: &[Vec<f32>],
        (b, s, h, p, n): (usize, usize, usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let (x, dt, a, bm, c) = (&ins[0], &ins[1], &ins[2], &ins[3], &ins[4]);
        let mut state: Vec<f64> = ins[5].iter().map(|&v| v as f64).collect();
        let mut y = vec![0f32; b * s * h * p];
        for bi in 0..b {
            for hi in 0..h {
                for t in 0..s {
                    let row = (bi * s + t) * h + hi;
                    let delta = softplus(dt[row] as f64);
                    let decay = (delta * a[hi] as f64).exp();
                    for pi in 0..p {
                        let mut acc = 0.0;
                        for ni in 0..n {
                            let st = &mut state[((bi * h + hi) * p + pi) * n + ni];
                            *st = *st * decay
                                + delta * x[row * p + pi] as f64 * bm[row * n + ni] as f64;
                            acc += *st * c[row * n + ni] as f64;
                        }
                        y[row * p + pi] = acc as f32;
                    }
                }
            }
        }
        (y, state.into_iter().map(|v| v as f32).collect())
    }

    #[test]
    fn ssd_scan_matches_the_recurrence_with_symbolic_batch_and_sequence() {
        let (b, s, h, p, n) = (2, 7, 3, 4, 5);
        let dims: [&[usize]; 6] =
            [&[b, s, h, p], &[b, s, h], &[h], &[b, s, h, n], &[b, s, h, n], &[b, h, p, n]];
        let inputs: Vec<Tensor> =
            dims.iter().enumerate().map(|(i, d)| tensor(d, i as u64, 0.8)).collect();
        let out = run(&ssd_model(DataType::Float), inputs.clone()).unwrap();
        let (y, state) =
            ssd_reference(&inputs.iter().map(f32s).collect::<Vec<_>>(), (b, s, h, p, n));
        assert_eq!(out[0].shape(), &[b, s, h, p]);
        assert_eq!(out[1].shape(), &[b, h, p, n]);
        assert!(max_diff(&f32s(&out[0]), &y) < 1e-5);
        assert!(max_diff(&f32s(&out[1]), &state) < 1e-5);
    }

    #[test]
    fn f16_inputs_run_through_the_f32_kernel_and_come_back_as_f16() {
        let (b, s, h, p, n) = (1, 3, 3, 4, 5);
        let dims: [&[usize]; 6] =
            [&[b, s, h, p], &[b, s, h], &[h], &[b, s, h, n], &[b, s, h, n], &[b, h, p, n]];
        let inputs: Vec<Tensor> =
            dims.iter().enumerate().map(|(i, d)| tensor(d, i as u64, 0.8)).collect();
        let half: Vec<Tensor> =
            inputs
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    if i < 5 {
                        t.cast_to_dt(DatumType::F16).unwrap().into_owned()
                    } else {
                        t.clone()
                    }
                })
                .collect();
        let out = run(&ssd_model(DataType::Float16), half.clone()).unwrap();
        assert_eq!(out[0].datum_type(), DatumType::F16);
        assert_eq!(out[1].datum_type(), DatumType::F32);
        let (y, _) = ssd_reference(&half.iter().map(f32s).collect::<Vec<_>>(), (b, s, h, p, n));
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_diff(&f32s(&out[0]), &y) <= scale * 1e-3);
    }

    #[test]
    fn dynamic_mask_values_are_transposed_per_head() {
        let proto = model(
            vec![node("DynamicMaskValues", &["dt", "A"], &["m"], &[])],
            vec![
                value_info("dt", DataType::Float, &["B", "S", "2"]),
                value_info("A", DataType::Float, &["2"]),
            ],
            vec![value_info("m", DataType::Float, &["B", "2", "S"])],
            vec![],
        );
        let (dt, a) = (tensor(&[2, 5, 2], 1, 3.0), tensor(&[2], 2, 1.0));
        let out = run(&proto, vec![dt.clone(), a.clone()]).unwrap();
        assert_eq!(out[0].shape(), &[2, 2, 5]);
        let (dt, a, m) = (f32s(&dt), f32s(&a), f32s(&out[0]));
        for (b, h, j) in
            (0..2).flat_map(|b| (0..2).flat_map(move |h| (0..5).map(move |j| (b, h, j))))
        {
            let want = (a[h] as f64 * softplus(dt[(b * 5 + j) * 2 + h] as f64)).exp();
            assert!((m[(b * 2 + h) * 5 + j] as f64 - want).abs() < 1e-6 * want.max(1.0));
        }
    }

    fn attention_model(mask: &'static str, extra: Option<ValueInfoProto>) -> ModelProto {
        let mut inputs = vec![
            value_info("q", DataType::Float, &["B", "S", "4", "3"]),
            value_info("k", DataType::Float, &["B", "2", "T", "3"]),
            value_info("v", DataType::Float, &["B", "2", "T", "3"]),
            value_info("attention_mask", DataType::Int64, &["B", "T"]),
        ];
        let mut names = vec!["q", "k", "v", "attention_mask"];
        if let Some(e) = extra {
            inputs.push(e);
            names.push("m");
        }
        let attrs = [
            ("heads", A::I(4)),
            ("kv_heads", A::I(2)),
            ("head_dim", A::I(3)),
            ("scale", A::F(0.5)),
            ("mask", A::S(mask)),
            ("ratio", A::F(0.0)),
            ("keep_window", A::I(0)),
        ];
        model(
            vec![node("MaskedAttention", &names, &["out"], &attrs)],
            inputs,
            vec![value_info("out", DataType::Float, &["B", "S", "4", "3"])],
            vec![],
        )
    }

    /// `softmax(q·kᵀ·scale + bias)·v` in `f64` with the causal, padding and learned masks.
    fn attention_reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        mask: &[i64],
        learned: Option<(&[f32], usize)>,
        (b, s, t): (usize, usize, usize),
    ) -> Vec<f32> {
        let (h, g, d) = (4, 2, 3);
        let mut out = vec![0f32; b * s * h * d];
        for bi in 0..b {
            for hi in 0..h {
                let gi = hi / (h / g);
                for i in 0..s {
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            let dot: f64 = (0..d)
                                .map(|x| {
                                    q[((bi * s + i) * h + hi) * d + x] as f64
                                        * k[((bi * g + gi) * t + j) * d + x] as f64
                                })
                                .sum();
                            let visible = j <= t - s + i
                                && mask[bi * t + j] != 0
                                && learned.is_none_or(|(l, len)| l[hi * len + j] != 0.0);
                            if visible {
                                dot * 0.5
                            } else {
                                f32::MIN as f64
                            }
                        })
                        .collect();
                    let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for x in 0..d {
                        let acc: f64 = (0..t)
                            .map(|j| e[j] / sum * v[((bi * g + gi) * t + j) * d + x] as f64)
                            .sum();
                        out[((bi * s + i) * h + hi) * d + x] = acc as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn masked_attention_uses_the_first_t_columns_of_the_learned_mask() {
        let (b, s, t, l) = (2, 3, 5, 8);
        let proto = attention_model("learned", Some(value_info("m", DataType::Float, &["4", "8"])));
        let mut learned = values(4 * l, 9, 1.0);
        for (i, x) in learned.iter_mut().enumerate() {
            if i % 3 == 1 {
                *x = 0.0;
            }
        }
        let mask: Vec<i64> = (0..b * t).map(|i| i64::from(i != t)).collect();
        let inputs = vec![
            tensor(&[b, s, 4, 3], 1, 1.0),
            tensor(&[b, 2, t, 3], 2, 1.0),
            tensor(&[b, 2, t, 3], 3, 1.0),
            from_i64(&[b, t], mask.clone()).unwrap(),
            from_f32(&[4, l], learned.clone(), DatumType::F32).unwrap(),
        ];
        let out = run(&proto, inputs.clone()).unwrap();
        let want = attention_reference(
            &f32s(&inputs[0]),
            &f32s(&inputs[1]),
            &f32s(&inputs[2]),
            &mask,
            Some((&learned, l)),
            (b, s, t),
        );
        assert!(max_diff(&f32s(&out[0]), &want) < 1e-5);

        let too_long = vec![
            tensor(&[1, 1, 4, 3], 1, 1.0),
            tensor(&[1, 2, 9, 3], 2, 1.0),
            tensor(&[1, 2, 9, 3], 3, 1.0),
            from_i64(&[1, 9], vec![1; 9]).unwrap(),
            from_f32(&[4, l], learned, DatumType::F32).unwrap(),
        ];
        let err = format!("{:#}", run(&proto, too_long).unwrap_err());
        assert!(err.contains("9 keys exceed the learned mask's 8 positions"), "{err}");
        assert!(err.contains("MaskedAttention node `the_maskedattention`"), "{err}");
    }

    #[test]
    fn causal_attention_decodes_past_keys() {
        let (b, s, t) = (1, 2, 6);
        let proto = attention_model("causal", None);
        let mask = vec![1i64; b * t];
        let inputs = vec![
            tensor(&[b, s, 4, 3], 4, 1.0),
            tensor(&[b, 2, t, 3], 5, 1.0),
            tensor(&[b, 2, t, 3], 6, 1.0),
            from_i64(&[b, t], mask.clone()).unwrap(),
        ];
        let out = run(&proto, inputs.clone()).unwrap();
        let want = attention_reference(
            &f32s(&inputs[0]),
            &f32s(&inputs[1]),
            &f32s(&inputs[2]),
            &mask,
            None,
            (b, s, t),
        );
        assert!(max_diff(&f32s(&out[0]), &want) < 1e-5);
    }

    #[test]
    fn routing_and_expert_ops_match_their_kernels() {
        let (b, s, d, he, nk, half, k) = (2, 3, 6, 2, 4, 3, 2);
        let e = nk * nk;
        let proto = model(
            vec![
                node(
                    "PkTopK",
                    &["q", "keys"],
                    &["scores", "ids"],
                    &[("heads", A::I(2)), ("num_keys", A::I(4)), ("k", A::I(2))],
                ),
                node(
                    "ExpertMix",
                    &["x", "scores", "ids", "down", "up"],
                    &["y"],
                    &[
                        ("act", A::S("gelu_tanh")),
                        ("order", A::S("after_softmax")),
                        ("norm_topk", A::I(1)),
                    ],
                ),
                node(
                    "RouterTopK",
                    &["logits"],
                    &["rs", "rids"],
                    &[("num_keys", A::I(4)), ("k", A::I(3))],
                ),
                node(
                    "InnerValues",
                    &["x", "vq", "v_keys", "v_embed"],
                    &["iv"],
                    &[("heads", A::I(2)), ("k", A::I(2))],
                ),
            ],
            vec![
                value_info("x", DataType::Float, &["B", "S", "6"]),
                value_info("q", DataType::Float, &["B", "S", "12"]),
                value_info("logits", DataType::Float, &["B", "S", "8"]),
                value_info("vq", DataType::Float, &["B", "S", "6"]),
            ],
            vec![
                value_info("y", DataType::Float, &["B", "S", "6"]),
                value_info("rs", DataType::Float, &["B", "S", "1", "3"]),
                value_info("rids", DataType::Int64, &["B", "S", "1", "3"]),
                value_info("iv", DataType::Float, &["B", "S", "6"]),
            ],
            vec![
                initializer("keys", &[he, nk, 2, half], &values(he * nk * 2 * half, 11, 1.0)),
                initializer("down", &[e, d], &values(e * d, 12, 1.0)),
                initializer("up", &[e, d], &values(e * d, 13, 1.0)),
                initializer("v_keys", &[2, 3, 5], &values(30, 14, 1.0)),
                initializer("v_embed", &[5, d], &values(5 * d, 15, 1.0)),
            ],
        );
        let (x, q, logits, vq) = (
            values(b * s * d, 1, 1.0),
            values(b * s * 12, 2, 1.0),
            values(b * s * 8, 3, 1.0),
            values(b * s * 6, 4, 1.0),
        );
        let ins = vec![
            from_f32(&[b, s, d], x.clone(), DatumType::F32).unwrap(),
            from_f32(&[b, s, 12], q.clone(), DatumType::F32).unwrap(),
            from_f32(&[b, s, 8], logits.clone(), DatumType::F32).unwrap(),
            from_f32(&[b, s, 6], vq.clone(), DatumType::F32).unwrap(),
        ];
        let out = run(&proto, ins).unwrap();

        let rows = b * s;
        let pk = ops::pk_topk::PkTopKParams { rows, heads: he, num_keys: nk, half, k };
        let (scores, ids) =
            ops::pk_topk::pk_topk(&pk, &q, &values(he * nk * 2 * half, 11, 1.0)).unwrap();
        let em = ops::expert_mix::ExpertMixParams { rows, heads: he, k, dim: d, num_experts: e };
        let y = ops::expert_mix::expert_mix(
            &em,
            ops::act::Act::GeluTanh,
            ops::expert_mix::ExpertAct::AfterSoftmax,
            true,
            &x,
            &scores,
            &ids,
            &values(e * d, 12, 1.0),
            &values(e * d, 13, 1.0),
        )
        .unwrap();
        assert_eq!(f32s(&out[0]), y);
        let rt = ops::router_topk::RouterTopKParams { tokens: rows, num_keys: nk, top_k: 3 };
        let (rs, rids) = ops::router_topk::router_topk(&rt, &logits).unwrap();
        assert_eq!(f32s(&out[1]), rs);
        assert_eq!(out[1].shape(), &[b, s, 1, 3]);
        assert_eq!(slice::<i64>(&out[2]).unwrap(), &rids[..]);
        let iv = ops::inner_values::InnerValuesParams {
            rows,
            heads: 2,
            retrieval: 3,
            num_values: 5,
            k: 2,
            dim: d,
        };
        let want = ops::inner_values::inner_values(
            &iv,
            &x,
            &vq,
            &values(30, 14, 1.0),
            &values(5 * d, 15, 1.0),
        )
        .unwrap();
        assert_eq!(f32s(&out[3]), want);
    }

    fn load_error(proto: &ModelProto) -> String {
        let err = onnx_with_cheems_ops()
            .model_for_proto_model(proto)
            .and_then(|m| m.into_optimized())
            .map(|_| ())
            .unwrap_err();
        format!("{err:#}")
    }

    #[test]
    fn malformed_attributes_name_the_node_and_the_attribute() {
        let with_mask =
            |mask| attention_model(mask, Some(value_info("m", DataType::Float, &["B", "4", "T"])));
        let err = load_error(&with_mask("sliding"));
        assert!(
            err.contains("the_maskedattention")
                && err.contains("`mask`")
                && err.contains("sliding"),
            "{err}"
        );

        let mut proto = ssd_model(DataType::Float);
        let attrs = &mut proto.graph.as_mut().unwrap().node[0].attribute;
        attrs[0].i = -3;
        let err = load_error(&proto);
        assert!(
            err.contains("the_ssdscan") && err.contains("`heads`") && err.contains("-3"),
            "{err}"
        );
        attrs_of(&mut proto)[0].i = 3;
        attrs_of(&mut proto).retain(|a| a.name != "state_dim");
        let err = load_error(&proto);
        assert!(err.contains("the_ssdscan") && err.contains("state_dim"), "{err}");

        let mut proto = ssd_model(DataType::Float);
        attrs_of(&mut proto)[1].r#type = AttributeType::Float as i32;
        let err = load_error(&proto);
        assert!(err.contains("the_ssdscan") && err.contains("head_dim"), "{err}");
    }

    fn attrs_of(proto: &mut ModelProto) -> &mut Vec<AttributeProto> {
        &mut proto.graph.as_mut().unwrap().node[0].attribute
    }

    #[test]
    fn wrong_domain_version_or_sizes_are_errors() {
        let mut proto = ssd_model(DataType::Float);
        proto.opset_import[1].version = 2;
        let err = load_error(&proto);
        assert!(err.contains("version Some(2)") && err.contains("the_ssdscan"), "{err}");

        let mut proto = ssd_model(DataType::Float);
        attrs_of(&mut proto)[0].i = 5;
        let err = load_error(&proto);
        assert!(err.contains("attribute `heads` says 5") && err.contains("the_ssdscan"), "{err}");

        let proto = model(
            vec![node("SsdScan", &["x"], &["y", "s"], &[])],
            vec![value_info("x", DataType::Float, &["1"])],
            vec![value_info("y", DataType::Float, &["1"])],
            vec![],
        );
        assert!(load_error(&proto).contains("the_ssdscan"));
        assert!(tract_onnx::onnx()
            .model_for_proto_model(&ssd_model(DataType::Float))
            .and_then(|m| m.into_optimized())
            .is_err());
    }

    /// A one-layer causal-attention decoder with a KV cache, in the export's input/output layout.
    fn toy_decoder() -> ModelProto {
        let (v, d, h, dh) = (11usize, 8usize, 4usize, 2usize);
        let g = 2;
        let attrs = [
            ("heads", A::I(h as i64)),
            ("kv_heads", A::I(g as i64)),
            ("head_dim", A::I(dh as i64)),
            ("scale", A::F(0.7)),
            ("mask", A::S("causal")),
            ("ratio", A::F(0.0)),
            ("keep_window", A::I(0)),
        ];
        let kv = |name: &str| {
            vec![
                node("MatMul", &["x", &format!("w_{name}")], &[&format!("{name}_flat")], &[]),
                node(
                    "Reshape",
                    &[&format!("{name}_flat"), "kv_shape"],
                    &[&format!("{name}_rows")],
                    &[],
                ),
                node(
                    "Transpose",
                    &[&format!("{name}_rows")],
                    &[&format!("{name}_new")],
                    &[("perm", A::Ints(vec![0, 2, 1, 3]))],
                ),
                node(
                    "Concat",
                    &[&format!("past.{name}"), &format!("{name}_new")],
                    &[&format!("present.{name}")],
                    &[("axis", A::I(2))],
                ),
            ]
        };
        let mut nodes = vec![node("Gather", &["embed", "input_ids"], &["x"], &[])];
        nodes.extend(kv("k"));
        nodes.extend(kv("v"));
        nodes.extend([
            node("MatMul", &["x", "w_q"], &["q_flat"], &[]),
            node("Reshape", &["q_flat", "q_shape"], &["q"], &[]),
            node(
                "MaskedAttention",
                &["q", "present.k", "present.v", "attention_mask"],
                &["att"],
                &attrs,
            ),
            node("Reshape", &["att", "out_shape"], &["att_flat"], &[]),
            node("MatMul", &["att_flat", "lm_head"], &["logits"], &[]),
        ]);
        let ints = |name: &str, v: &[i64]| TensorProto {
            name: name.into(),
            dims: vec![v.len() as i64],
            data_type: DataType::Int64 as i32,
            int64_data: v.to_vec(),
            ..Default::default()
        };
        let past = |n: &str| value_info(n, DataType::Float, &["batch", "2", "past_sequence", "2"]);
        let present = |n: &str| {
            value_info(n, DataType::Float, &["batch", "2", "past_sequence+sequence", "2"])
        };
        model(
            nodes,
            vec![
                value_info("input_ids", DataType::Int64, &["batch", "sequence"]),
                value_info("attention_mask", DataType::Int64, &["batch", "past_sequence+sequence"]),
                past("past.k"),
                past("past.v"),
            ],
            vec![
                value_info("logits", DataType::Float, &["batch", "sequence", "11"]),
                present("present.k"),
                present("present.v"),
            ],
            vec![
                initializer("embed", &[v, d], &values(v * d, 1, 1.0)),
                initializer("w_q", &[d, h * dh], &values(d * h * dh, 2, 1.0)),
                initializer("w_k", &[d, g * dh], &values(d * g * dh, 3, 1.0)),
                initializer("w_v", &[d, g * dh], &values(d * g * dh, 4, 1.0)),
                initializer("lm_head", &[h * dh, v], &values(h * dh * v, 5, 1.0)),
                ints("kv_shape", &[0, 0, g as i64, dh as i64]),
                ints("q_shape", &[0, 0, h as i64, dh as i64]),
                ints("out_shape", &[0, 0, (h * dh) as i64]),
            ],
        )
    }

    #[test]
    fn decode_steps_through_the_kv_cache_match_one_long_prefill() {
        let model = TractModel::from_inference_model(
            onnx_with_cheems_ops().model_for_proto_model(&toy_decoder()).unwrap(),
        )
        .unwrap();
        let prompt = vec![vec![1, 2, 3, 4, 5], vec![6, 7, 8, 9, 10]];
        let decode = vec![vec![3, 1, 4], vec![1, 5, 9]];
        let inputs = Inputs {
            input_ids: prompt.clone(),
            attention_mask: None,
            decode_input_ids: Some(decode.clone()),
        };
        let out = model.run(&inputs).unwrap();
        assert_eq!(out.logits.dims(), &[2, 5, 11]);
        let steps = out.decode_logits.unwrap();
        assert_eq!(steps.dims(), &[2, 3, 11]);

        let full: Vec<Vec<i64>> =
            prompt.iter().zip(&decode).map(|(p, d)| [p.clone(), d.clone()].concat()).collect();
        let long = model.session().prefill(&full, None).unwrap();
        let (l, st) = (long.as_f32().unwrap(), steps.as_f32().unwrap());
        for b in 0..2 {
            for k in 0..3 {
                let want = &l[(b * 8 + 5 + k) * 11..(b * 8 + 6 + k) * 11];
                let got = &st[(b * 3 + k) * 11..(b * 3 + k + 1) * 11];
                assert!(max_diff(got, want) < 1e-5, "batch {b} step {k}");
            }
        }
        assert_eq!(&l[..5 * 11], &out.logits.as_f32().unwrap()[..5 * 11]);
    }
}
