//! Graph → ONNX. Lowers the export form of a model (built with `BuildOptions { stateless: true }`) to a
//! `ModelProto`: standard ops for the dense blocks, `ai.cheems` custom nodes with model-local function bodies for
//! the Wonderful Matrices layers (or the bodies inlined), weights as initializers, symbols as `dim_param`s; and
//! writes it atomically, with external data above 2 GB.

use super::custom::{self, CustomOp, Site, DOMAIN, DOMAIN_VERSION};
use super::pb::{
    attr_int, attr_ints, opset, tensor, value_info, Builder, DataType, DimSpec, FloatType,
    FunctionProto, GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto,
};
use crate::ir::op::{ExpertMix, Ssd};
use crate::ir::{DType, Dim, Fact, Graph, NodeId, Op, Tensor, ValueId};
use crate::model::build::{Model, StateKind};
use anyhow::{bail, ensure, Context, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The opset written unless `--opset` says otherwise.
pub const DEFAULT_OPSET: i64 = 18;

/// The opsets the exporter writes (and is tested with).
pub const OPSETS: RangeInclusive<i64> = 18..=24;

/// Initializer bytes above which the weights go to external data.
pub const EXTERNAL_DATA_THRESHOLD: u64 = 2_000_000_000;

/// Tensors of at least this many bytes start at a page-aligned offset of the external data file.
const LARGE_TENSOR: u64 = 64 * 1024;

/// Alignment of large tensors in the external data file.
const PAGE: u64 = 4096;

/// Alignment of the other tensors in the external data file.
const SMALL_ALIGN: u64 = 64;

/// How to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// Type of the weights, the activations and the float inputs and outputs (the SSD states stay f32).
    pub dtype: FloatType,
    /// Write the function bodies in place of the custom nodes: standard ops only.
    pub inline: bool,
    /// ONNX opset, one of [`OPSETS`].
    pub opset: i64,
    /// Store the weights in external data even below [`EXTERNAL_DATA_THRESHOLD`].
    pub external_data: bool,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            dtype: FloatType::F32,
            inline: false,
            opset: DEFAULT_OPSET,
            external_data: false,
        }
    }
}

/// What [`write`] wrote.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The model file.
    pub path: PathBuf,
    /// The external data file, when the weights went there.
    pub data_path: Option<PathBuf>,
    /// Nodes of the main graph.
    pub nodes: usize,
    /// Model-local functions (custom op types).
    pub functions: usize,
    /// Initializers (weights), inline or external.
    pub initializers: usize,
    /// Bytes of the initializers in the export dtype.
    pub weight_bytes: u64,
}

/// A weight to store as an initializer.
struct Weight {
    name: String,
    tensor: Arc<Tensor>,
    transpose: bool,
}

/// A lowered model: the proto without initializers, and the weights that become them.
pub struct Lowered {
    model: ModelProto,
    weights: Vec<Weight>,
    dtype: FloatType,
}

/// The IR version that goes with an opset (the first ONNX release that defined the opset).
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19 | 20 => 9,
        21 | 22 => 10,
        23 => 11,
        _ => 12,
    }
}

/// ONNX names of the IR symbols.
fn symbol_name(sym: &str) -> Option<&'static str> {
    match sym {
        "B" => Some("batch"),
        "S" => Some("sequence"),
        "P" => Some("past_sequence"),
        _ => None,
    }
}

/// A dimension as a `dim_value`, or a `dim_param` expression over the symbol names (`past_sequence+sequence`).
pub fn dim_spec(d: &Dim) -> Result<DimSpec> {
    if let Some(k) = d.as_konst() {
        return Ok(DimSpec::Value(k));
    }
    let text = d.to_string();
    let mut out = String::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            if word.chars().next().is_some_and(|f| f.is_ascii_digit()) {
                out.push_str(&word);
            } else {
                let name = symbol_name(&word)
                    .with_context(|| format!("symbol `{word}` of `{text}` has no ONNX name"))?;
                out.push_str(name);
            }
            word.clear();
        }
        if c != ' ' {
            out.push(c);
        }
    }
    Ok(DimSpec::Param(out))
}

fn dims(f: &Fact) -> Result<Vec<DimSpec>> {
    f.shape.iter().map(dim_spec).collect()
}

/// Operands of `op` that are linear-layer weights `[out, in]` (multiplied as `x·Wᵀ`).
fn linear_weight_operands(op: &Op) -> &'static [usize] {
    match op {
        Op::Linear { .. } | Op::ProjectedMaskValues { .. } => &[1],
        Op::GatedMlp { .. } => &[1, 2, 3],
        Op::Mlp { .. } => &[1, 2],
        _ => &[],
    }
}

struct Lower<'a> {
    g: &'a Graph,
    model: &'a Model,
    t: FloatType,
    opset: i64,
    b: Builder,
    names: HashMap<ValueId, String>,
    transposed: HashMap<NodeId, String>,
    functions: BTreeMap<String, (String, FunctionProto)>,
}

/// Lowers a model in its export form (`BuildOptions { stateless: true }`) to ONNX.
pub fn lower(model: &Model, opts: &ExportOptions) -> Result<Lowered> {
    ensure!(
        OPSETS.contains(&opts.opset),
        "opset {} is not supported: the exporter writes opsets {} to {}",
        opts.opset,
        OPSETS.start(),
        OPSETS.end()
    );
    let g = &model.graph;
    let order = g.topo_order()?;
    if let Some(&id) =
        order.iter().find(|&&id| matches!(&g.node(id).op, Op::RotaryTables(r) if r.stateful))
    {
        bail!(
            "node `{}` keeps RoPE state between calls: export the stateless form (BuildOptions {{ stateless: true }})",
            g.node(id).name
        );
    }
    let mut lw = Lower {
        g,
        model,
        t: opts.dtype,
        opset: opts.opset,
        b: Builder::new(),
        names: HashMap::new(),
        transposed: HashMap::new(),
        functions: BTreeMap::new(),
    };

    let mut plain: HashSet<NodeId> = HashSet::new();
    let mut as_t: HashSet<NodeId> = HashSet::new();
    for &id in &order {
        let op = &g.node(id).op;
        for (k, v) in g.inputs_of(id).into_iter().enumerate() {
            if matches!(g.node(v.node).op, Op::Const(_)) {
                if linear_weight_operands(op).contains(&k) {
                    as_t.insert(v.node);
                } else {
                    plain.insert(v.node);
                }
            }
        }
    }
    for (_, v) in g.outputs() {
        if matches!(g.node(v.node).op, Op::Const(_)) {
            plain.insert(v.node);
        }
    }

    let mut weights = Vec::new();
    let mut transposes = Vec::new();
    for &id in &order {
        let node = g.node(id);
        match &node.op {
            Op::Input(_) => {
                lw.names.insert(id.into(), node.name.clone());
                lw.b.reserve(&node.name);
            }
            Op::Const(c) => {
                let t_name = format!("{}.T", node.name);
                if plain.contains(&id) {
                    lw.names.insert(id.into(), node.name.clone());
                    lw.b.reserve(&node.name);
                    weights.push(Weight {
                        name: node.name.clone(),
                        tensor: c.0.clone(),
                        transpose: false,
                    });
                    if as_t.contains(&id) {
                        transposes.push((node.name.clone(), t_name.clone()));
                    }
                } else if as_t.contains(&id) {
                    weights.push(Weight {
                        name: t_name.clone(),
                        tensor: c.0.clone(),
                        transpose: true,
                    });
                }
                if as_t.contains(&id) {
                    ensure!(
                        c.0.dims().len() == 2,
                        "weight `{}` {:?} is read by a linear layer but is not a matrix",
                        node.name,
                        c.0
                    );
                    lw.b.reserve(&t_name);
                    lw.transposed.insert(id, t_name);
                }
            }
            _ => {}
        }
    }

    let mut extra_outputs = Vec::new();
    let mut claimed: HashSet<ValueId> = HashSet::new();
    for (name, v) in g.outputs() {
        let producer = &g.node(v.node).op;
        if matches!(producer, Op::Input(_) | Op::Const(_)) || !claimed.insert(*v) {
            extra_outputs.push((name.clone(), *v));
        } else {
            lw.names.insert(*v, name.clone());
            lw.b.reserve(name);
        }
    }
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) {
            continue;
        }
        for port in 0..node.outputs.len() {
            let v = ValueId { node: id, port: port as u16 };
            if !lw.names.contains_key(&v) {
                let name =
                    if port == 0 { node.name.clone() } else { format!("{}:{port}", node.name) };
                lw.b.reserve(&name);
                lw.names.insert(v, name);
            }
        }
    }

    for (src, dst) in &transposes {
        lw.b.push(dst, "Transpose", &[src], &[dst], vec![attr_ints("perm", &[1, 0])]);
    }
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) {
            continue;
        }
        lw.b.scope = format!("{}/", node.name);
        lw.node(id)
            .with_context(|| format!("exporting node `{}` ({:?})", node.name, node.op.kind()))?;
    }
    lw.b.scope.clear();
    for (name, v) in &extra_outputs {
        let src = lw.names.get(v).cloned().unwrap_or_else(|| g.node(v.node).name.clone());
        lw.b.push(name, "Identity", &[&src], &[name], vec![]);
    }

    let mut graph = GraphProto {
        name: format!("cheems-{}", model.config.variant.name()),
        ..Default::default()
    };
    for &id in g.inputs() {
        let node = g.node(id);
        let v = ValueId::from(id);
        graph.input.push(value_info(&node.name, lw.elem(v)?, &dims(g.fact(v)?)?));
    }
    let mut outputs = HashSet::new();
    let mut ordered: Vec<&(String, ValueId)> = g.outputs().iter().collect();
    ordered.sort_by_key(|(name, _)| name != "logits");
    for (name, v) in ordered {
        outputs.insert(name.clone());
        graph.output.push(value_info(name, lw.elem(*v)?, &dims(g.fact(*v)?)?));
    }
    for &id in &order {
        let node = g.node(id);
        if matches!(node.op, Op::Input(_) | Op::Const(_)) {
            continue;
        }
        for (port, fact) in node.outputs.iter().enumerate() {
            let v = ValueId { node: id, port: port as u16 };
            let name = &lw.names[&v];
            if !outputs.contains(name) {
                graph.value_info.push(value_info(name, lw.elem(v)?, &dims(fact)?));
            }
        }
    }
    let nodes = std::mem::take(&mut lw.b.nodes);
    let functions: Vec<FunctionProto> =
        std::mem::take(&mut lw.functions).into_values().map(|(_, f)| f).collect();
    let mut opset_import = vec![opset("", opts.opset)];
    if opts.inline {
        graph.node = inline_functions(nodes, &functions)?;
    } else {
        graph.node = nodes;
        if !functions.is_empty() {
            opset_import.push(opset(DOMAIN, DOMAIN_VERSION));
        }
    }
    let meta =
        |k: &str, v: &str| StringStringEntryProto { key: k.to_string(), value: v.to_string() };
    let model_proto = ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import,
        producer_name: "cheems".to_string(),
        producer_version: env!("CARGO_PKG_VERSION").to_string(),
        doc_string: format!(
            "{} model exported by cheems; custom ops of domain {DOMAIN} v{DOMAIN_VERSION} (src/onnx/SCHEMA.md)",
            model.config.variant.name()
        ),
        graph: Some(graph),
        functions: if opts.inline { Vec::new() } else { functions },
        metadata_props: vec![
            meta("cheems.variant", model.config.variant.name()),
            meta("cheems.dtype", opts.dtype.name()),
        ],
        ..Default::default()
    };
    Ok(Lowered { model: model_proto, weights, dtype: opts.dtype })
}

impl Lower<'_> {
    /// The ONNX element type of an IR value: the export dtype for floats, except the f32 SSD states.
    fn elem(&self, v: ValueId) -> Result<DataType> {
        let fact = self.g.fact(v)?;
        Ok(match fact.dtype {
            DType::I64 => DataType::Int64,
            DType::F16 => DataType::Float16,
            DType::BF16 => DataType::Bfloat16,
            DType::F32 => {
                let node = self.g.node(v.node);
                let ssd_state = match &node.op {
                    Op::Input(_) => self
                        .model
                        .states
                        .iter()
                        .any(|s| s.past == node.name && s.kind == StateKind::SsdState),
                    Op::SsdScan(_) => v.port == 1,
                    _ => false,
                };
                if ssd_state {
                    DataType::Float
                } else {
                    self.t.data_type()
                }
            }
        })
    }

    fn arg(&self, v: ValueId) -> Result<String> {
        self.names.get(&v).cloned().with_context(|| {
            format!("value {v:?} of `{}` has no ONNX name", self.g.node(v.node).name)
        })
    }

    /// The transposed `[in, out]` form of a linear weight.
    fn weight_t(&mut self, v: ValueId) -> Result<String> {
        if let Some(name) = self.transposed.get(&v.node) {
            return Ok(name.clone());
        }
        let w = self.arg(v)?;
        Ok(self.b.transpose(&w, &[1, 0], "weight_t"))
    }

    fn out(&self, id: NodeId, port: u16) -> String {
        self.names[&ValueId { node: id, port }].clone()
    }

    /// `x·w_t (+ b)`, written to `out` when given.
    fn linear(
        &mut self,
        x: &str,
        w_t: &str,
        bias: Option<&str>,
        out: Option<(&str, &str)>,
        hint: &str,
    ) -> String {
        match (bias, out) {
            (None, Some((node, out))) => {
                self.b.push(node, "MatMul", &[x, w_t], &[out], vec![]);
                out.to_string()
            }
            (None, None) => self.b.bin("MatMul", x, w_t, hint),
            (Some(bias), Some((node, out))) => {
                let mm = self.b.bin("MatMul", x, w_t, &format!("{hint}_matmul"));
                self.b.push(node, "Add", &[&mm, bias], &[out], vec![]);
                out.to_string()
            }
            (Some(bias), None) => {
                let mm = self.b.bin("MatMul", x, w_t, &format!("{hint}_matmul"));
                self.b.bin("Add", &mm, bias, hint)
            }
        }
    }

    /// `x ⊙ cos + rotate_half(x) ⊙ sin` for `x` `[B,S,H,dh]` and tables `[B,S,dh]`, its last node named `node`
    /// with output `out`.
    fn rope(&mut self, x: &str, cos: &str, sin: &str, dh: i64, node: &str, out: &str) {
        let b = &mut self.b;
        let split = b.i64s(&[dh / 2, dh / 2]);
        let halves = b.op_multi("Split", &[x, &split], vec![attr_int("axis", -1)], &["x1", "x2"]);
        let neg = b.un("Neg", &halves[1], "minus_x2");
        let rot = b.concat(&[&neg, &halves[0]], -1, "rotated");
        let c4 = b.unsqueeze(cos, &[2], "cos4");
        let s4 = b.unsqueeze(sin, &[2], "sin4");
        let xc = b.bin("Mul", x, &c4, "x_cos");
        let rs = b.bin("Mul", &rot, &s4, "rot_sin");
        b.push(node, "Add", &[&xc, &rs], &[out], vec![]);
    }

    fn custom(&mut self, op: CustomOp) -> Result<()> {
        let op_type = op.function.name.clone().unwrap_or_default();
        match self.functions.get(&op_type) {
            Some((first, f)) if *f != op.function => bail!(
                "nodes `{first}` and `{}` of op {op_type} need different function bodies \
                 (their mask mode, activation or routing options differ); one model shares one body per op",
                op.node.name
            ),
            Some(_) => {}
            None => {
                self.functions.insert(op_type, (op.node.name.clone(), op.function));
            }
        }
        self.b.nodes.push(op.node);
        Ok(())
    }

    /// `w ⊙ (x / √(mean(x²) + eps))`, normalised in float32 and multiplied by `w` in the export dtype, written to
    /// `out` by a node named `node`.
    fn rms_norm(&mut self, x: &str, w: &str, eps: f32, node: &str, out: &str) {
        let t = self.t;
        let b = &mut self.b;
        let x =
            if t == FloatType::F32 { x.to_string() } else { b.cast(x, DataType::Float, "x_f32") };
        let sq = b.bin("Mul", &x, &x, "square");
        let axes = b.i64s(&[-1]);
        let ms = b.op("ReduceMean", &[&sq, &axes], vec![attr_int("keepdims", 1)], "mean_square");
        let eps = b.float(eps, FloatType::F32);
        let var = b.bin("Add", &ms, &eps, "variance");
        let rms = b.un("Sqrt", &var, "rms");
        // `Reciprocal` then `Mul` as the executor rounds: onnxruntime rewrites `Div(1, r)·x` into `x / r`.
        let inv = b.un("Reciprocal", &rms, "inv_rms");
        let mut r = b.bin("Mul", &x, &inv, "normed");
        if t != FloatType::F32 {
            r = b.cast(&r, t.data_type(), "normed_t");
        }
        b.push(node, "Mul", &[w, &r], &[out], vec![]);
    }

    fn node(&mut self, id: NodeId) -> Result<()> {
        let g = self.g;
        let node = g.node(id);
        let name = node.name.as_str();
        let ins = g.inputs_of(id);
        let t = self.t;
        let out = self.out(id, 0);
        let weight_ops = linear_weight_operands(&node.op);
        let mut args = Vec::with_capacity(ins.len());
        for (k, v) in ins.iter().enumerate() {
            args.push(if weight_ops.contains(&k) { self.weight_t(*v)? } else { self.arg(*v)? });
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let in_fact = |k: usize| g.fact(ins[k]);
        match &node.op {
            Op::Input(_) | Op::Const(_) => {}
            Op::Embedding => {
                self.b.push(name, "Gather", &[a[1], a[0]], &[&out], vec![attr_int("axis", 0)]);
            }
            Op::RmsNorm(n) => self.rms_norm(a[0], a[1], n.eps, name, &out),
            Op::Linear { bias } => {
                self.linear(a[0], a[1], bias.then(|| a[2]), Some((name, &out)), "linear");
            }
            Op::ScaledResidual => {
                let m = self.b.bin("Mul", a[0], a[1], "scaled");
                self.b.push(name, "Add", &[&m, a[2]], &[&out], vec![]);
            }
            Op::Add => self.b.push(name, "Add", &[a[0], a[1]], &[&out], vec![]),
            Op::ResidualRmsNorm { norm, scaled } => {
                let (h_out, y_out) = (self.out(id, 0), self.out(id, 1));
                let h_node = format!("{name}/residual");
                if *scaled {
                    let m = self.b.bin("Mul", a[0], a[1], "scaled");
                    self.b.push(&h_node, "Add", &[&m, a[2]], &[&h_out], vec![]);
                } else {
                    self.b.push(&h_node, "Add", &[a[0], a[1]], &[&h_out], vec![]);
                }
                self.rms_norm(&h_out, a[a.len() - 1], norm.eps, name, &y_out);
            }
            Op::SliceLast { start, len } => {
                let b = &mut self.b;
                let (s0, s1) = (b.i64s(&[*start as i64]), b.i64s(&[(start + len) as i64]));
                let axis = b.i64s(&[-1]);
                b.push(name, "Slice", &[a[0], &s0, &s1, &axis], &[&out], vec![]);
            }
            Op::GatedMlp { act, bias } => {
                let bias_of = |i: usize| bias.then(|| a[4 + i]);
                let gate = self.linear(a[0], a[1], bias_of(0), None, "gate");
                let up = self.linear(a[0], a[2], bias_of(1), None, "up");
                let act = custom::activation(&mut self.b, &gate, *act, t);
                let h = self.b.bin("Mul", &act, &up, "hidden");
                self.linear(&h, a[3], bias_of(2), Some((name, &out)), "down");
            }
            Op::Mlp { act, bias } => {
                let bias_of = |i: usize| bias.then(|| a[3 + i]);
                let up = self.linear(a[0], a[1], bias_of(0), None, "up");
                let h = custom::activation(&mut self.b, &up, *act, t);
                self.linear(&h, a[2], bias_of(1), Some((name, &out)), "down");
            }
            Op::SplitLast { parts } => {
                let f = in_fact(0)?;
                let n = f
                    .shape
                    .last()
                    .and_then(Dim::as_konst)
                    .context("split axis must be constant")?;
                let mut shape = vec![0; f.rank() - 1];
                shape.extend([*parts as i64, n / *parts as i64]);
                let s = self.b.i64s(&shape);
                self.b.push(name, "Reshape", &[a[0], &s], &[&out], vec![]);
            }
            Op::MergeLast => {
                let f = in_fact(0)?;
                let mut shape = vec![0; f.rank() - 2];
                let last2 = &f.shape[f.rank() - 2..];
                shape.push(match (last2[0].as_konst(), last2[1].as_konst()) {
                    (Some(n), Some(m)) => n * m,
                    _ => -1,
                });
                let s = self.b.i64s(&shape);
                self.b.push(name, "Reshape", &[a[0], &s], &[&out], vec![]);
            }
            Op::Permute { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.b.push(name, "Transpose", &[a[0]], &[&out], vec![attr_ints("perm", &perm)]);
            }
            Op::Concat { axis } => {
                self.b.push(
                    name,
                    "Concat",
                    &[a[0], a[1]],
                    &[&out],
                    vec![attr_int("axis", *axis as i64)],
                );
            }
            Op::MaskTokens => {
                let b = &mut self.b;
                let s1 = b.shape_of(a[0], 1, 2, "seq");
                let t1 = b.shape_of(a[1], 1, 2, "keys");
                // `T ≤ S`, not `T = S`: equal for T ≥ S, and an order comparison of symbolic sizes stays undecided in
                // engines that fold equality structurally (tract), where `T = S` would fold to false.
                let prefill = b.bin("LessOrEqual", &t1, &s1, "prefill");
                let neg_s = b.un("Neg", &s1, "minus_seq");
                let (end, axis) = (b.i64s(&[i64::MAX]), b.i64s(&[1]));
                let tail = b.op("Slice", &[a[1], &neg_s, &end, &axis], vec![], "new_mask");
                let mf = b.cast(&tail, t.data_type(), "new_mask_float");
                let m3 = b.unsqueeze(&mf, &[-1], "new_mask_col");
                let xm = b.bin("Mul", a[0], &m3, "masked");
                b.push(name, "Where", &[&prefill, &xm, a[0]], &[&out], vec![]);
            }
            Op::Positions => {
                let b = &mut self.b;
                let s = b.dim(a[0], 1, "seq");
                let total = b.dim(a[1], 1, "keys");
                let past = b.bin("Sub", &total, &s, "past");
                let one = b.i64_scalar(1);
                let r = b.op("Range", &[&past, &total, &one], vec![], "range");
                let row = b.unsqueeze(&r, &[0], "row");
                let shape = b.shape(a[0]);
                b.push(name, "Expand", &[&row, &shape], &[&out], vec![]);
            }
            Op::RotaryTables(r) => {
                let (cos_out, sin_out) = (self.out(id, 0), self.out(id, 1));
                self.rotary_tables(r, a[0], &cos_out, &sin_out)?;
            }
            Op::Rope => {
                let dh = in_fact(0)?.shape[3].as_konst().context("head dim must be constant")?;
                self.rope(a[0], a[1], a[2], dh, name, &out);
            }
            Op::NormRope(n) => {
                let dh = in_fact(0)?.shape[3].as_konst().context("head dim must be constant")?;
                let normed = self.b.fresh("normed");
                self.rms_norm(a[0], a[1], n.eps, &format!("{name}/norm"), &normed);
                self.rope(&normed, a[2], a[3], dh, name, &out);
            }
            Op::ProjectedMaskValues { bias } => {
                let dt = self.linear(a[0], a[1], bias.then(|| a[3]), None, "dt");
                let inputs = [dt, a[2].to_string()];
                let outputs = [out];
                let site =
                    Site { name, inputs: &inputs, outputs: &outputs, dtype: t, opset: self.opset };
                let c = custom::dynamic_mask_values(&site)?;
                self.custom(c)?;
            }
            op @ (Op::SsdScan(_)
            | Op::DynamicMaskValues
            | Op::MaskedAttention(_)
            | Op::PkTopK(_)
            | Op::RouterTopK(_)
            | Op::ExpertMix(_)
            | Op::InnerValues(_)) => {
                let mut inputs = args.clone();
                let mut outputs: Vec<String> =
                    (0..node.outputs.len()).map(|p| self.out(id, p as u16)).collect();
                // The fused glue is written in standard ops around the plain custom op.
                let mut sum = None;
                match op {
                    Op::SsdScan(s) if s.rope => {
                        let n = s.state_dim as i64;
                        for k in [3, 4] {
                            let rotated = self.b.fresh(if k == 3 { "b_rope" } else { "c_rope" });
                            self.rope(a[k], a[6], a[7], n, &rotated, &rotated);
                            inputs[k] = rotated;
                        }
                        inputs.truncate(6);
                    }
                    Op::ExpertMix(e) if e.add => {
                        let addend = inputs.pop().expect("the addend operand");
                        let mixed = self.b.fresh("mixture");
                        sum = Some((addend, std::mem::replace(&mut outputs[0], mixed)));
                    }
                    _ => {}
                }
                let site =
                    Site { name, inputs: &inputs, outputs: &outputs, dtype: t, opset: self.opset };
                let c = match op {
                    Op::SsdScan(s) => custom::ssd_scan(&Ssd { rope: false, ..s.clone() }, &site)?,
                    Op::DynamicMaskValues => custom::dynamic_mask_values(&site)?,
                    Op::MaskedAttention(at) => custom::masked_attention(at, &site)?,
                    Op::PkTopK(p) => custom::pk_topk(p, &site)?,
                    Op::RouterTopK(r) => custom::router_topk(r, &site)?,
                    Op::ExpertMix(e) => {
                        custom::expert_mix(&ExpertMix { add: false, ..e.clone() }, &site)?
                    }
                    Op::InnerValues(v) => custom::inner_values(v, &site)?,
                    _ => unreachable!("matched above"),
                };
                self.custom(c)?;
                if let Some((addend, out)) = sum {
                    let node = self.b.fresh("add");
                    self.b.push(&node, "Add", &[&outputs[0], &addend], &[&out], vec![]);
                }
            }
        }
        Ok(())
    }

    /// RoPE tables from the positions alone: `inv_freq` of θ, or of the dynamic-NTK
    /// `θ' = θ·((f·L/M) − (f−1))^{d/(d−2)}` in float32 with `L = max(M, max(pos)+1)` when `L > M` (as the
    /// executor's `rotary_tables`), `inv_freq[i] = 1/f32(θ'^{f32(2i/d)})` with the power in float64, then
    /// `cos`/`sin` of `f32(pos)·inv_freq` evaluated in float64.
    fn rotary_tables(
        &mut self,
        r: &crate::ir::op::Rotary,
        pos: &str,
        cos_out: &str,
        sin_out: &str,
    ) -> Result<()> {
        let b = &mut self.b;
        let t = self.t;
        let half = r.dim / 2;
        let exponents: Vec<f64> =
            (0..r.dim).step_by(2).map(|i| f64::from(i as f32 / r.dim as f32)).collect();
        let inv = match &r.dynamic {
            None => b.f32s(&cheems_ops::rope::inv_freq(r.theta, r.dim)),
            Some(dy) => {
                let m = dy.max_position as i64;
                let (f, dim) = (dy.factor as f32, r.dim as f32);
                let mx = b.op("ReduceMax", &[pos], vec![attr_int("keepdims", 0)], "max_position");
                let one = b.i64_scalar(1);
                let len = b.bin("Add", &mx, &one, "length");
                let m_i = b.i64_scalar(m);
                let cached = b.bin("Max", &len, &m_i, "rope_length");
                let len_f = b.cast(&cached, DataType::Float, "rope_length_f32");
                let f_c = b.float(f, FloatType::F32);
                let m_f = b.float(m as f32, FloatType::F32);
                let fm1 = b.float(f - 1.0, FloatType::F32);
                let fl = b.bin("Mul", &f_c, &len_f, "f_len");
                let ratio = b.bin("Div", &fl, &m_f, "f_len_ratio");
                let scale = b.bin("Sub", &ratio, &fm1, "ntk_scale");
                let e = b.float(dim / (dim - 2.0), FloatType::F32);
                let powed = b.bin("Pow", &scale, &e, "ntk_growth");
                let theta = b.float(r.theta as f32, FloatType::F32);
                let scaled = b.bin("Mul", &theta, &powed, "theta_ntk");
                let grown = b.bin("Greater", &cached, &m_i, "grown");
                let th = b.op("Where", &[&grown, &scaled, &theta], vec![], "theta");
                let th64 = b.cast(&th, DataType::Double, "theta_f64");
                let ex = b.f64s(&exponents);
                let p = b.bin("Pow", &th64, &ex, "theta_pow");
                let p32 = b.cast(&p, DataType::Float, "theta_pow_f32");
                b.un("Reciprocal", &p32, "inv_freq")
            }
        };
        let pf = b.cast(pos, DataType::Float, "positions_f32");
        let pc = b.unsqueeze(&pf, &[-1], "positions_col");
        let freqs = b.bin("Mul", &pc, &inv, "freqs");
        let f64s = b.cast(&freqs, DataType::Double, "freqs_f64");
        let c = b.un("Cos", &f64s, "cos_f64");
        let s = b.un("Sin", &f64s, "sin_f64");
        let c = b.cast(&c, DataType::Float, "cos_half");
        let s = b.cast(&s, DataType::Float, "sin_half");
        debug_assert_eq!(exponents.len(), half);
        if t == FloatType::F32 {
            b.push(cos_out, "Concat", &[&c, &c], &[cos_out], vec![attr_int("axis", -1)]);
            b.push(sin_out, "Concat", &[&s, &s], &[sin_out], vec![attr_int("axis", -1)]);
        } else {
            let cc = b.concat(&[&c, &c], -1, "cos_f32");
            let sc = b.concat(&[&s, &s], -1, "sin_f32");
            let to = vec![attr_int("to", t.data_type() as i64)];
            b.push(cos_out, "Cast", &[&cc], &[cos_out], to.clone());
            b.push(sin_out, "Cast", &[&sc], &[sin_out], to);
        }
        Ok(())
    }
}

/// Replaces every `ai.cheems` node by its function body: body values and nodes are renamed
/// `{node name}/{body name}`, the formal inputs and outputs become the node's, and attribute references take the
/// node's attribute values.
pub fn inline_functions(
    nodes: Vec<NodeProto>,
    functions: &[FunctionProto],
) -> Result<Vec<NodeProto>> {
    let by_name: BTreeMap<&str, &FunctionProto> =
        functions.iter().map(|f| (f.name.as_deref().unwrap_or(""), f)).collect();
    let mut out = Vec::with_capacity(nodes.len());
    for node in nodes {
        if node.domain != DOMAIN {
            out.push(node);
            continue;
        }
        let f = by_name.get(node.op_type.as_str()).with_context(|| {
            format!("no function body for {} node `{}`", node.op_type, node.name)
        })?;
        let mut rename: HashMap<&str, &str> = HashMap::new();
        for (formal, actual) in f.input.iter().zip(&node.input) {
            rename.insert(formal, actual);
        }
        for (formal, actual) in f.output.iter().zip(&node.output) {
            rename.insert(formal, actual);
        }
        let map = |v: &str| -> String {
            if v.is_empty() {
                String::new()
            } else if let Some(a) = rename.get(v) {
                a.to_string()
            } else {
                format!("{}/{v}", node.name)
            }
        };
        for bn in &f.node {
            let mut n = bn.clone();
            n.name = format!("{}/{}", node.name, bn.name);
            n.input = bn.input.iter().map(|v| map(v)).collect();
            n.output = bn.output.iter().map(|v| map(v)).collect();
            for a in &mut n.attribute {
                if a.ref_attr_name.is_empty() {
                    continue;
                }
                let src = node.attribute.iter().find(|x| x.name == a.ref_attr_name).with_context(
                    || format!("node `{}` lacks attribute `{}`", node.name, a.ref_attr_name),
                )?;
                ensure!(
                    src.r#type == a.r#type,
                    "attribute `{}` of node `{}` has type {}, its use in {} expects {}",
                    src.name,
                    node.name,
                    src.r#type,
                    node.op_type,
                    a.r#type
                );
                let name = std::mem::take(&mut a.name);
                *a = src.clone();
                a.name = name;
            }
            out.push(n);
        }
    }
    Ok(out)
}

/// The bytes of a weight in the export dtype (transposed to `[in, out]` for linear layers).
fn weight_bytes(w: &Weight, t: FloatType) -> Result<(DataType, Vec<i64>, Vec<u8>)> {
    let dims: Vec<i64> = w.tensor.dims().iter().map(|&d| d as i64).collect();
    match w.tensor.dtype() {
        DType::I64 => {
            ensure!(!w.transpose, "int64 tensor `{}` cannot be a linear weight", w.name);
            let v = w.tensor.as_i64()?;
            Ok((DataType::Int64, dims, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        }
        _ => {
            let v = w.tensor.as_f32()?;
            if w.transpose {
                let (rows, cols) = (w.tensor.dims()[0], w.tensor.dims()[1]);
                let mut tr = vec![0f32; v.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        tr[c * rows + r] = v[r * cols + c];
                    }
                }
                Ok((t.data_type(), vec![cols as i64, rows as i64], t.encode(&tr)))
            } else {
                Ok((t.data_type(), dims, t.encode(v)))
            }
        }
    }
}

impl Lowered {
    /// Bytes of all initializers.
    pub fn weight_bytes(&self) -> u64 {
        self.weights
            .iter()
            .map(|w| {
                let size = if w.tensor.dtype() == DType::I64 { 8 } else { self.dtype.size_of() };
                (w.tensor.len() * size) as u64
            })
            .sum()
    }

    /// The model with every initializer stored inline.
    pub fn into_model(self) -> Result<ModelProto> {
        let mut model = self.model;
        let graph = model.graph.as_mut().context("lowered model without graph")?;
        for w in &self.weights {
            let (dt, dims, raw) = weight_bytes(w, self.dtype)?;
            graph.initializer.push(tensor(&w.name, dt, &dims, raw));
        }
        Ok(model)
    }

    /// The proto without initializers (for inspection).
    pub fn proto(&self) -> &ModelProto {
        &self.model
    }
}

/// The model as a proto with inline weights, not written anywhere.
pub fn to_model(model: &Model, opts: &ExportOptions) -> Result<ModelProto> {
    lower(model, opts)?.into_model()
}

/// A temporary file next to its destination, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    keep: bool,
}

impl TempFile {
    fn create(dest: &Path) -> Result<TempFile> {
        let name =
            dest.file_name().with_context(|| format!("{} is not a file path", dest.display()))?;
        let tmp =
            dest.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(TempFile { path: tmp, file: Some(std::io::BufWriter::new(file)), keep: false })
    }

    fn write(&mut self, data: &[u8]) -> Result<()> {
        let f = self.file.as_mut().context("temporary file already closed")?;
        f.write_all(data).with_context(|| format!("writing {}", self.path.display()))
    }

    /// Flushes, syncs and closes the file.
    fn finish(&mut self) -> Result<()> {
        if let Some(f) = self.file.take() {
            let file = f
                .into_inner()
                .map_err(|e| anyhow::anyhow!("writing {}: {}", self.path.display(), e.error()))?;
            file.sync_all().with_context(|| format!("syncing {}", self.path.display()))?;
        }
        Ok(())
    }

    fn persist(mut self, dest: &Path) -> Result<()> {
        self.finish()?;
        std::fs::rename(&self.path, dest)
            .with_context(|| format!("renaming {} to {}", self.path.display(), dest.display()))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            self.file.take();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The external data file of a model file: `{file name}.data` in the same folder.
pub fn data_path(path: &Path) -> Result<PathBuf> {
    let name =
        path.file_name().with_context(|| format!("{} is not a file path", path.display()))?;
    Ok(path.with_file_name(format!("{}.data", name.to_string_lossy())))
}

/// Exports `model` to `path` atomically: the file (and its external data) appear complete or not at all; on any
/// error an existing file at `path` is left as it was.
pub fn write(model: &Model, path: &Path, opts: &ExportOptions) -> Result<Summary> {
    ensure!(!path.is_dir(), "{} is a directory, not an output file", path.display());
    let lowered = lower(model, opts)?;
    let bytes = lowered.weight_bytes();
    let initializers = lowered.weights.len();
    let external = opts.external_data || bytes > EXTERNAL_DATA_THRESHOLD;
    let (model_proto, data) = if external {
        let data_path = data_path(path)?;
        let location =
            data_path.file_name().context("data file name")?.to_string_lossy().to_string();
        let mut tmp = TempFile::create(&data_path)?;
        let Lowered { mut model, weights, dtype } = lowered;
        let graph = model.graph.as_mut().context("lowered model without graph")?;
        let mut offset = 0u64;
        for w in &weights {
            let (dt, dims, raw) = weight_bytes(w, dtype)?;
            let len = raw.len() as u64;
            let align = if len >= LARGE_TENSOR { PAGE } else { SMALL_ALIGN };
            let start = offset.next_multiple_of(align);
            tmp.write(&vec![0u8; (start - offset) as usize])?;
            tmp.write(&raw)?;
            offset = start + len;
            let entry =
                |k: &str, v: String| StringStringEntryProto { key: k.to_string(), value: v };
            graph.initializer.push(TensorProto {
                name: w.name.clone(),
                data_type: dt as i32,
                dims,
                data_location: Some(1),
                external_data: vec![
                    entry("location", location.clone()),
                    entry("offset", start.to_string()),
                    entry("length", len.to_string()),
                ],
                ..Default::default()
            });
        }
        (model, Some((tmp, data_path)))
    } else {
        (lowered.into_model()?, None)
    };
    let nodes = model_proto.graph.as_ref().map_or(0, |g| g.node.len());
    let functions = model_proto.functions.len();
    let encoded = model_proto.encode_to_vec();
    ensure!(
        encoded.len() < i32::MAX as usize,
        "the model proto is {} bytes, over protobuf's 2 GiB limit; use --external-data",
        encoded.len()
    );
    let mut tmp = TempFile::create(path)?;
    tmp.write(&encoded)?;
    tmp.finish()?;
    let data_path = match data {
        Some((data_tmp, data_path)) => {
            data_tmp.persist(&data_path)?;
            Some(data_path)
        }
        None => None,
    };
    tmp.persist(path)?;
    Ok(Summary {
        path: path.to_path_buf(),
        data_path,
        nodes,
        functions,
        initializers,
        weight_bytes: bytes,
    })
}

/// Every node of the model (graph and function bodies), for structural checks.
pub fn all_nodes(model: &ModelProto) -> Vec<&NodeProto> {
    let mut v: Vec<&NodeProto> = model.graph.iter().flat_map(|g| &g.node).collect();
    v.extend(model.functions.iter().flat_map(|f| &f.node));
    v
}
