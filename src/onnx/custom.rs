//! The custom ops of domain `ai.cheems` v1 (see `SCHEMA.md`): one function per op, returning the custom node and
//! the model-local `FunctionProto` that defines it with standard ops only (no `Loop`, no `Scan`), so stock
//! onnxruntime runs the file and `--inline` can write the bodies in place of the nodes.
//!
//! Bodies compute in float32 (the float inputs are cast at entry and the outputs cast back to the export dtype),
//! take every size from the input shapes, and read the attribute values they need through `ref_attr_name`.

use super::pb::{
    attr_float, attr_int, attr_string, attr_tensor, opset, tensor_bool, AttributeProto,
    AttributeType, Builder, DataType, FloatType, FunctionProto, NodeProto,
};
use crate::ir::op::{
    Act, Attention, AttentionMask, ExpertAct, ExpertMix, InnerValues, PkTopK, RouterTopK, Ssd,
};
use anyhow::{bail, ensure, Result};

/// The custom-op domain.
pub const DOMAIN: &str = "ai.cheems";

/// The version of [`DOMAIN`] written by this exporter.
pub const DOMAIN_VERSION: i64 = 1;

/// Where a custom node goes: its name, actual input and output value names, the export dtype and opset.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// Node name.
    pub name: &'a str,
    /// Actual input value names, in operand order.
    pub inputs: &'a [String],
    /// Actual output value names.
    pub outputs: &'a [String],
    /// Type of the float inputs and outputs (the SSD states are float32 in every export).
    pub dtype: FloatType,
    /// Default-domain opset of the function body.
    pub opset: i64,
}

/// A custom node and the function body that defines its op type.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomOp {
    /// The `ai.cheems` node.
    pub node: NodeProto,
    /// The model-local function of its op type.
    pub function: FunctionProto,
}

/// `MIN` of the masks: the float32 minimum, added to masked scores.
const MIN: f32 = f32::MIN;

fn assemble(
    site: &Site,
    op_type: &str,
    attrs: Vec<AttributeProto>,
    formal_in: &[&str],
    formal_out: &[&str],
    body: Builder,
) -> Result<CustomOp> {
    ensure!(
        site.inputs.len() == formal_in.len() && site.outputs.len() == formal_out.len(),
        "{op_type} node `{}` has {} inputs and {} outputs, expected {} and {}",
        site.name,
        site.inputs.len(),
        site.outputs.len(),
        formal_in.len(),
        formal_out.len()
    );
    let function = FunctionProto {
        name: Some(op_type.to_string()),
        domain: Some(DOMAIN.to_string()),
        input: formal_in.iter().map(|s| s.to_string()).collect(),
        output: formal_out.iter().map(|s| s.to_string()).collect(),
        attribute: attrs.iter().map(|a| a.name.clone()).collect(),
        node: body.nodes,
        opset_import: vec![opset("", site.opset)],
        doc_string: None,
    };
    let node = NodeProto {
        name: site.name.to_string(),
        op_type: op_type.to_string(),
        domain: DOMAIN.to_string(),
        input: site.inputs.to_vec(),
        output: site.outputs.to_vec(),
        attribute: attrs,
        ..Default::default()
    };
    Ok(CustomOp { node, function })
}

/// A body builder with the formal names reserved.
fn body(formal: &[&str]) -> Builder {
    let mut b = Builder::new();
    for f in formal {
        b.reserve(f);
    }
    b
}

/// `x` as float32 (a cast unless the export is f32).
fn to_f32(b: &mut Builder, x: &str, t: FloatType) -> String {
    if t == FloatType::F32 {
        x.to_string()
    } else {
        b.cast(x, DataType::Float, &format!("{x}_f32"))
    }
}

/// Names the float32 value `x` `out`, cast to the export dtype.
fn finish(b: &mut Builder, x: &str, t: FloatType, out: &str) {
    if t == FloatType::F32 {
        b.rename(x, out);
    } else {
        b.op_to("Cast", &[x], vec![attr_int("to", t.data_type() as i64)], out);
    }
}

/// A `[1]` int64 tensor holding the function's int attribute `attr`.
fn attr_i64_1d(b: &mut Builder, attr: &str) -> String {
    let v = b.attr_value(attr, AttributeType::Int);
    b.unsqueeze(&v, &[0], &format!("{attr}_1d"))
}

/// `softplus(z) = z > 20 ? z : log1p(exp(z))` in float32, with `log1p(e) = log(1+e)·e/((1+e)−1)` (`e` when
/// `1+e` rounds to 1), accurate for very negative `z`.
pub(crate) fn softplus(b: &mut Builder, z: &str) -> String {
    let one = b.float(1.0, FloatType::F32);
    let zero = b.float(0.0, FloatType::F32);
    let twenty = b.float(20.0, FloatType::F32);
    let e = b.un("Exp", z, "sp_exp");
    let u = b.bin("Add", &e, &one, "sp_u");
    let d = b.bin("Sub", &u, &one, "sp_d");
    let lg = b.un("Log", &u, "sp_log");
    let num = b.bin("Mul", &lg, &e, "sp_num");
    let ratio = b.bin("Div", &num, &d, "sp_ratio");
    let tiny = b.bin("Equal", &d, &zero, "sp_tiny");
    let l1p = b.op("Where", &[&tiny, &e, &ratio], vec![], "sp_log1p");
    let big = b.bin("Greater", z, &twenty, "sp_big");
    b.op("Where", &[&big, z, &l1p], vec![], "softplus")
}

/// `act(x)` with constants of type `t` (the operand's type).
pub(crate) fn activation(b: &mut Builder, x: &str, act: Act, t: FloatType) -> String {
    match act {
        Act::Silu => {
            let s = b.un("Sigmoid", x, "sigmoid");
            b.bin("Mul", x, &s, "silu")
        }
        Act::Relu => b.un("Relu", x, "relu"),
        Act::Gelu => {
            let r = b.float(std::f32::consts::FRAC_1_SQRT_2, t);
            let (half, one) = (b.float(0.5, t), b.float(1.0, t));
            let xs = b.bin("Mul", x, &r, "gelu_scaled");
            let e = b.un("Erf", &xs, "gelu_erf");
            let e1 = b.bin("Add", &one, &e, "gelu_1p");
            let hx = b.bin("Mul", &half, x, "gelu_half");
            b.bin("Mul", &hx, &e1, "gelu")
        }
        Act::GeluTanh => {
            let c = b.float(0.797_884_6, t);
            let k = b.float(0.044715, t);
            let (half, one) = (b.float(0.5, t), b.float(1.0, t));
            let x2 = b.bin("Mul", x, x, "gelu_x2");
            let x3 = b.bin("Mul", &x2, x, "gelu_x3");
            let kx3 = b.bin("Mul", &k, &x3, "gelu_kx3");
            let sum = b.bin("Add", x, &kx3, "gelu_sum");
            let inner = b.bin("Mul", &c, &sum, "gelu_inner");
            let th = b.un("Tanh", &inner, "gelu_tanh");
            let t1 = b.bin("Add", &one, &th, "gelu_1p");
            let hx = b.bin("Mul", &half, x, "gelu_half");
            b.bin("Mul", &hx, &t1, "gelu")
        }
    }
}

fn act_name(a: Act) -> &'static str {
    match a {
        Act::Silu => "silu",
        Act::Relu => "relu",
        Act::Gelu => "gelu",
        Act::GeluTanh => "gelu_tanh",
    }
}

/// Within-chunk decay: for `a [.., L]`, `seg[.., t, s] = Σ_{s<r≤t} a_r` (a cumulative sum over `t` of the
/// strictly lower triangle, so no difference of large sums is taken) and `exp(seg)` with −inf above the
/// diagonal, so `s > t` gives 0 whatever the sign of `a`. `len` is the scalar `L`; returns `(seg, decay)`.
fn segment_decay(b: &mut Builder, a: &str, len: &str, hint: &str) -> (String, String) {
    let (zero, one) = (b.i64_scalar(0), b.i64_scalar(1));
    let idx = b.op("Range", &[&zero, len, &one], vec![], &format!("{hint}_idx"));
    let t_col = b.unsqueeze(&idx, &[1], &format!("{hint}_t"));
    let strict = b.bin("Greater", &t_col, &idx, &format!("{hint}_strict"));
    let lower = b.bin("GreaterOrEqual", &t_col, &idx, &format!("{hint}_lower"));
    let a_col = b.unsqueeze(a, &[-1], &format!("{hint}_col"));
    let zero_f = b.float(0.0, FloatType::F32);
    let mat = b.op("Where", &[&strict, &a_col, &zero_f], vec![], &format!("{hint}_mat"));
    let axis = b.i64_scalar(-2);
    let seg = b.op("CumSum", &[&mat, &axis], vec![], &format!("{hint}_seg"));
    let neg_inf = b.float(f32::NEG_INFINITY, FloatType::F32);
    let masked = b.op("Where", &[&lower, &seg, &neg_inf], vec![], &format!("{hint}_masked"));
    let decay = b.un("Exp", &masked, &format!("{hint}_decay"));
    (seg, decay)
}

/// `SsdScan(x, dt, A, B, C, state) -> (y, state')` in the chunked dual form. With `Δ = softplus(dt)`,
/// `a = Δ·A` and the tokens cut into `nc = ⌈S/chunk⌉` chunks of `L = min(chunk, S)` (padded by repeating the
/// last token with `a = 0` and `Δ = 0`, so a padded token changes nothing):
/// * within a chunk, `y_t = Σ_{s≤t} (C_t·B_s)·exp(seg[t,s])·Δ_s·x_s` and the chunk's own final state
///   `Σ_s exp(seg[L−1,s])·Δ_s·x_s ⊗ B_s` (see [`segment_decay`]);
/// * across chunks, the state entering chunk `z` is `Σ_{c≤z} exp(Σ_{c<r≤z} tot_r)·states[c]` over the initial
///   state and the chunk states, with `tot` the chunk sums of `a` (the same segment decay, one level up); the
///   last one is `state'`;
/// * each token adds `exp(cum_t)·(C_t·entering)`, with `cum` the within-chunk cumulative sum of `a`.
pub fn ssd_scan(s: &Ssd, site: &Site) -> Result<CustomOp> {
    ensure!(s.chunk > 0, "SsdScan node `{}`: chunk size 0", site.name);
    let attrs = vec![
        attr_int("heads", s.heads as i64),
        attr_int("head_dim", s.head_dim as i64),
        attr_int("state_dim", s.state_dim as i64),
        attr_int("chunk", s.chunk as i64),
    ];
    let (formal_in, formal_out) = (["x", "dt", "A", "B", "C", "state"], ["y", "state_out"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let x = to_f32(&mut b, "x", t);
    let dt = to_f32(&mut b, "dt", t);
    let a = to_f32(&mut b, "A", t);
    let bm = to_f32(&mut b, "B", t);
    let c = to_f32(&mut b, "C", t);
    let xt = b.transpose(&x, &[0, 2, 1, 3], "xt");
    let bt = b.transpose(&bm, &[0, 2, 1, 3], "bt");
    let ct = b.transpose(&c, &[0, 2, 1, 3], "ct");
    let dtt = b.transpose(&dt, &[0, 2, 1], "dtt");
    let delta = softplus(&mut b, &dtt);
    let a_col = b.unsqueeze(&a, &[1], "a_col");
    let da = b.bin("Mul", &delta, &a_col, "da");

    let seq = b.dim("dt", 1, "seq");
    let chunk = b.attr_value("chunk", AttributeType::Int);
    let len = b.bin("Min", &chunk, &seq, "chunk_len");
    let one = b.i64_scalar(1);
    let chunk_m1 = b.bin("Sub", &chunk, &one, "chunk_m1");
    let seq_up = b.bin("Add", &seq, &chunk_m1, "seq_up");
    let chunks = b.bin("Div", &seq_up, &chunk, "chunks");
    let padded = b.bin("Mul", &chunks, &len, "padded");
    let zero = b.i64_scalar(0);
    let token = b.op("Range", &[&zero, &padded, &one], vec![], "padded_idx");
    let last = b.bin("Sub", &seq, &one, "last_token");
    let source = b.bin("Min", &token, &last, "source_token");
    let real = b.bin("Less", &token, &seq, "real_token");
    let axis2 = vec![attr_int("axis", 2)];
    let xp = b.op("Gather", &[&xt, &source], axis2.clone(), "x_padded");
    let bp = b.op("Gather", &[&bt, &source], axis2.clone(), "b_padded");
    let cp = b.op("Gather", &[&ct, &source], axis2.clone(), "c_padded");
    let zero_f = b.float(0.0, FloatType::F32);
    let delta_g = b.op("Gather", &[&delta, &source], axis2.clone(), "delta_gathered");
    let deltap = b.op("Where", &[&real, &delta_g, &zero_f], vec![], "delta_padded");
    let da_g = b.op("Gather", &[&da, &source], axis2, "da_gathered");
    let dap = b.op("Where", &[&real, &da_g, &zero_f], vec![], "da_padded");
    let bh = b.shape_of(&xt, 0, 2, "bh");
    let chunks1 = b.unsqueeze(&chunks, &[0], "chunks_1d");
    let len1 = b.unsqueeze(&len, &[0], "chunk_len_1d");
    let p1 = b.shape_of("x", 3, 4, "head_dim");
    let n1 = b.shape_of("B", 3, 4, "state_dim");
    let xc_shape = b.concat(&[&bh, &chunks1, &len1, &p1], 0, "x_chunked_shape");
    let bc_shape = b.concat(&[&bh, &chunks1, &len1, &n1], 0, "b_chunked_shape");
    let dc_shape = b.concat(&[&bh, &chunks1, &len1], 0, "delta_chunked_shape");
    let xc = b.reshape(&xp, &xc_shape, "x_chunked");
    let bc = b.reshape(&bp, &bc_shape, "b_chunked");
    let cc = b.reshape(&cp, &bc_shape, "c_chunked");
    let dc = b.reshape(&deltap, &dc_shape, "delta_chunked");
    let dac = b.reshape(&dap, &dc_shape, "da_chunked");

    let (seg, decay) = segment_decay(&mut b, &dac, &len, "intra");
    let bc_t = b.transpose(&bc, &[0, 1, 2, 4, 3], "b_chunked_t");
    let cb = b.bin("MatMul", &cc, &bc_t, "cb");
    let cb_decay = b.bin("Mul", &cb, &decay, "cb_decay");
    let delta_row = b.unsqueeze(&dc, &[3], "delta_row");
    let w = b.bin("Mul", &cb_decay, &delta_row, "w");
    let y_diag = b.bin("MatMul", &w, &xc, "y_diag");

    let last_i = b.i64_scalar(-1);
    let seg_last = b.op("Gather", &[&seg, &last_i], vec![attr_int("axis", 3)], "seg_last");
    let decay_last = b.un("Exp", &seg_last, "decay_last");
    let coef = b.bin("Mul", &decay_last, &dc, "coef");
    let coef_col = b.unsqueeze(&coef, &[4], "coef_col");
    let xw = b.bin("Mul", &xc, &coef_col, "xw");
    let xw_t = b.transpose(&xw, &[0, 1, 2, 4, 3], "xw_t");
    let chunk_states = b.bin("MatMul", &xw_t, &bc, "chunk_states");
    let axis3 = b.i64_scalar(3);
    let cum = b.op("CumSum", &[&dac, &axis3], vec![], "cum");
    let total = b.op("Gather", &[&cum, &last_i], vec![attr_int("axis", 3)], "chunk_total");

    let lead = b.i64s(&[0, 0, 1, 0, 0, 0]);
    let total_padded = b.op("Pad", &[&total, &lead], vec![], "chunk_total_padded");
    let s0 = b.unsqueeze("state", &[2], "state0");
    let states = b.concat(&[&s0, &chunk_states], 2, "states");
    let chunks_p1 = b.bin("Add", &chunks, &one, "chunks_p1");
    let (_, chunk_decay) = segment_decay(&mut b, &total_padded, &chunks_p1, "inter");
    let zeros3 = b.i64s(&[0, 0, 0]);
    let pn = b.bin("Mul", &p1, &n1, "state_size");
    let flat = b.concat(&[&zeros3, &pn], 0, "states_flat_shape");
    let states_flat = b.reshape(&states, &flat, "states_flat");
    let entering_flat = b.bin("MatMul", &chunk_decay, &states_flat, "entering_flat");
    let states_shape = b.shape(&states);
    let entering_all = b.reshape(&entering_flat, &states_shape, "entering_all");
    let (start, axis2) = (b.i64s(&[0]), b.i64s(&[2]));
    let entering = b.op("Slice", &[&entering_all, &start, &chunks1, &axis2], vec![], "entering");
    b.op_to("Gather", &[&entering_all, &last_i], vec![attr_int("axis", 2)], "state_out");

    let cum_col = b.unsqueeze(&cum, &[4], "cum_col");
    let e_cum = b.un("Exp", &cum_col, "e_cum");
    let entering_t = b.transpose(&entering, &[0, 1, 2, 4, 3], "entering_t");
    let c_state = b.bin("MatMul", &cc, &entering_t, "c_state");
    let y_off = b.bin("Mul", &c_state, &e_cum, "y_off");
    let y_chunked = b.bin("Add", &y_diag, &y_off, "y_chunked");
    let padded1 = b.unsqueeze(&padded, &[0], "padded_1d");
    let y_shape = b.concat(&[&bh, &padded1, &p1], 0, "y_padded_shape");
    let y_padded = b.reshape(&y_chunked, &y_shape, "y_padded");
    let seq1 = b.unsqueeze(&seq, &[0], "seq_1d");
    let y4 = b.op("Slice", &[&y_padded, &start, &seq1, &axis2], vec![], "y_bhsp");
    let y = b.transpose(&y4, &[0, 2, 1, 3], "y_f32");
    finish(&mut b, &y, t, "y");
    assemble(site, "SsdScan", attrs, &formal_in, &formal_out, b)
}

/// `DynamicMaskValues(dt, A) -> m`: `m[b,h,j] = exp(A[h]·softplus(dt[b,j,h]))`.
pub fn dynamic_mask_values(site: &Site) -> Result<CustomOp> {
    let (formal_in, formal_out) = (["dt", "A"], ["m"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let dt = to_f32(&mut b, "dt", t);
    let a = to_f32(&mut b, "A", t);
    let sp = softplus(&mut b, &dt);
    let am = b.bin("Mul", &sp, &a, "a_sp");
    let e = b.un("Exp", &am, "m_bsh");
    let m = b.transpose(&e, &[0, 2, 1], "m_f32");
    finish(&mut b, &m, t, "m");
    assemble(site, "DynamicMaskValues", vec![], &formal_in, &formal_out, b)
}

/// The string attribute of a mask mode.
fn mask_name(m: &AttentionMask) -> &'static str {
    match m {
        AttentionMask::Causal => "causal",
        AttentionMask::Boolean => "boolean",
        AttentionMask::Additive { .. } => "additive",
        AttentionMask::Learned => "learned",
    }
}

/// `MaskedAttention(q, k, v, attention_mask[, m | learned]) -> out`: scores per KV group (`q` read as
/// `[B,G,rep·S,Dh]`), the additive bias of the mask mode (visibility `j ≤ T−S+i` and padding, MIN elsewhere),
/// the ratio threshold through a smallest-n `TopK`, the keep window through a largest-W `TopK` scattered into a
/// keep mask, then softmax and the weighted values.
pub fn masked_attention(at: &Attention, site: &Site) -> Result<CustomOp> {
    let (ratio, keep_window) = match at.mask {
        AttentionMask::Additive { ratio, keep_window } => (ratio, keep_window),
        _ => (0.0, None),
    };
    let window = match keep_window {
        Some(0) => bail!("keep_window = 0 cannot be exported (0 means no window in the schema)"),
        Some(w) => w as i64,
        None => 0,
    };
    let attrs = vec![
        attr_int("heads", at.heads as i64),
        attr_int("kv_heads", at.kv_heads as i64),
        attr_int("head_dim", at.head_dim as i64),
        attr_float("scale", at.scale),
        attr_string("mask", mask_name(&at.mask)),
        attr_float("ratio", ratio),
        attr_int("keep_window", window),
    ];
    let extra = match at.mask {
        AttentionMask::Causal => None,
        AttentionMask::Boolean | AttentionMask::Additive { .. } => Some("m"),
        AttentionMask::Learned => Some("learned"),
    };
    let mut formal_in = vec!["q", "k", "v", "attention_mask"];
    formal_in.extend(extra);
    let formal_out = ["out"];
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let q = to_f32(&mut b, "q", t);
    let k = to_f32(&mut b, "k", t);
    let v = to_f32(&mut b, "v", t);
    let b1 = b.shape_of("q", 0, 1, "batch");
    let s1 = b.shape_of("q", 1, 2, "seq");
    let h1 = b.shape_of("q", 2, 3, "heads");
    let dh1 = b.shape_of("q", 3, 4, "head_dim");
    let g1 = b.shape_of("k", 1, 2, "kv_heads");
    let t1 = b.shape_of("k", 2, 3, "keys");
    let rep = b.bin("Div", &h1, &g1, "group_size");
    let rows = b.bin("Mul", &rep, &s1, "group_rows");
    let qt = b.transpose(&q, &[0, 2, 1, 3], "qt");
    let grouped = b.concat(&[&b1, &g1, &rows, &dh1], 0, "grouped_shape");
    let qg = b.reshape(&qt, &grouped, "qg");
    let kt = b.transpose(&k, &[0, 1, 3, 2], "kt");
    let qk = b.bin("MatMul", &qg, &kt, "qk");
    let scale = b.attr_value("scale", AttributeType::Float);
    let qk_scaled = b.bin("Mul", &qk, &scale, "qk_scaled");
    let score_shape = b.concat(&[&b1, &h1, &s1, &t1], 0, "score_shape");
    let scores = b.reshape(&qk_scaled, &score_shape, "scores");
    let s_sc = b.dim("q", 1, "seq_scalar");
    let t_sc = b.dim("k", 2, "keys_scalar");
    let (zero, one) = (b.i64_scalar(0), b.i64_scalar(1));
    let offset = b.bin("Sub", &t_sc, &s_sc, "offset");
    let qi = b.op("Range", &[&zero, &s_sc, &one], vec![], "query_idx");
    let kj = b.op("Range", &[&zero, &t_sc, &one], vec![], "key_idx");
    let qi_col = b.unsqueeze(&qi, &[1], "query_col");
    let last = b.bin("Add", &qi_col, &offset, "last_visible");
    let causal = b.bin("LessOrEqual", &kj, &last, "causal");
    let zero_i = b.i64_scalar(0);
    let padding = b.bin("Equal", "attention_mask", &zero_i, "padding");
    let token = b.un("Not", &padding, "token");
    let token4 = b.unsqueeze(&token, &[1, 2], "token4");
    let visible = b.bin("And", &causal, &token4, "visible");
    let min = b.float(MIN, FloatType::F32);
    let zero_f = b.float(0.0, FloatType::F32);
    let per_head = |b: &mut Builder, m: &str| -> String {
        let h_sc = b.dim("q", 2, "heads_scalar");
        let hm_sc = b.dim(m, 1, "mask_heads_scalar");
        let (zero, one) = (b.i64_scalar(0), b.i64_scalar(1));
        let hs = b.op("Range", &[&zero, &h_sc, &one], vec![], "head_idx");
        let scaled = b.bin("Mul", &hs, &hm_sc, "head_idx_scaled");
        let hidx = b.bin("Div", &scaled, &h_sc, "mask_head_idx");
        b.op("Gather", &[m, &hidx], vec![attr_int("axis", 1)], "m_heads")
    };
    let key_bias = match at.mask {
        AttentionMask::Causal => None,
        AttentionMask::Boolean => {
            let m = to_f32(&mut b, "m", t);
            let mh = per_head(&mut b, &m);
            let one_f = b.float(1.0, FloatType::F32);
            let low = b.bin("Less", &mh, &one_f, "below_one");
            Some(b.op("Where", &[&low, &min, &zero_f], vec![], "key_bias"))
        }
        AttentionMask::Additive { ratio, .. } => {
            let m = to_f32(&mut b, "m", t);
            let mut mh = per_head(&mut b, &m);
            if ratio > 0.0 && ratio < 1.0 {
                let r = b.attr_value("ratio", AttributeType::Float);
                let tf = b.cast(&t_sc, DataType::Float, "keys_f32");
                let nf = b.bin("Mul", &tf, &r, "n_f32");
                let n = b.cast(&nf, DataType::Int64, "n");
                let n1 = b.bin("Max", &n, &one, "n_at_least_1");
                let n1d = b.unsqueeze(&n1, &[0], "n_1d");
                let (smallest, _) = b.top_k(&mh, &n1d, false, "smallest");
                let big = b.i64s(&[i64::MAX]);
                let last_axis = b.i64s(&[-1]);
                let thr =
                    b.op("Slice", &[&smallest, &last_axis, &big, &last_axis], vec![], "threshold");
                let below = b.bin("Less", &mh, &thr, "below_threshold");
                let active = b.bin("Greater", &n, &zero, "ratio_active");
                let drop = b.bin("And", &below, &active, "dropped");
                mh = b.op("Where", &[&drop, &min, &mh], vec![], "m_thresholded");
            }
            Some(mh)
        }
        AttentionMask::Learned => {
            let l = to_f32(&mut b, "learned", t);
            let (start, axis1) = (b.i64s(&[0]), b.i64s(&[1]));
            let cols = b.op("Slice", &[&l, &start, &t1, &axis1], vec![], "learned_cols");
            let zero_l = b.bin("Equal", &cols, &zero_f, "learned_zero");
            let kb = b.op("Where", &[&zero_l, &min, &zero_f], vec![], "learned_bias");
            Some(b.unsqueeze(&kb, &[0], "key_bias"))
        }
    };
    let mut bias = match &key_bias {
        None => b.op("Where", &[&visible, &zero_f, &min], vec![], "bias"),
        Some(kb) => {
            let kb4 = b.unsqueeze(kb, &[2], "key_bias4");
            b.op("Where", &[&visible, &kb4, &min], vec![], "bias")
        }
    };
    if window > 0 {
        let w = attr_i64_1d(&mut b, "keep_window");
        let kk = b.bin("Min", &w, &t1, "window");
        let (_, kept_idx) = b.top_k(&bias, &kk, true, "largest");
        let bias_shape = b.shape(&bias);
        let falses = b.op(
            "ConstantOfShape",
            &[&bias_shape],
            vec![attr_tensor("value", tensor_bool("", &[1], &[false]))],
            "none_kept",
        );
        let idx_shape = b.shape(&kept_idx);
        let true_s = b.bool_scalar(true);
        let trues = b.op("Expand", &[&true_s, &idx_shape], vec![], "kept_true");
        let keep = b.op(
            "ScatterElements",
            &[&falses, &kept_idx, &trues],
            vec![attr_int("axis", -1)],
            "keep",
        );
        bias = b.op("Where", &[&keep, &bias, &min], vec![], "bias_windowed");
    }
    let logits = b.bin("Add", &scores, &bias, "logits");
    let probs = b.op("Softmax", &[&logits], vec![attr_int("axis", -1)], "probs");
    let pg_shape = b.concat(&[&b1, &g1, &rows, &t1], 0, "probs_grouped_shape");
    let pg = b.reshape(&probs, &pg_shape, "probs_grouped");
    let og = b.bin("MatMul", &pg, &v, "out_grouped");
    let out_shape = b.concat(&[&b1, &h1, &s1, &dh1], 0, "out_shape");
    let o4 = b.reshape(&og, &out_shape, "out_bhsd");
    let o = b.transpose(&o4, &[0, 2, 1, 3], "out_f32");
    finish(&mut b, &o, t, "out");
    assemble(site, "MaskedAttention", attrs, &formal_in, &formal_out, b)
}

/// The top-k candidates `sx[i] + sy[j]` (ids `ix[i]·nk + iy[j]`) of `sx`/`ix` and `sy`/`iy` (rank `flat_rank`,
/// `k_axis` entries on the last axis), flattened row-major: `(scores, ids)` of the `k` largest.
#[allow(clippy::too_many_arguments)]
fn product_top_k(
    b: &mut Builder,
    sx: &str,
    ix: &str,
    sy: &str,
    iy: &str,
    nk: &str,
    k: &str,
    k_axis: &str,
    flat_rank: usize,
) -> (String, String) {
    let rank = flat_rank as i64 + 1;
    let sx_col = b.unsqueeze(sx, &[rank - 1], "sx_col");
    let sy_row = b.unsqueeze(sy, &[rank - 2], "sy_row");
    let cand = b.bin("Add", &sx_col, &sy_row, "candidates");
    let ix_col = b.unsqueeze(ix, &[rank - 1], "ix_col");
    let iy_row = b.unsqueeze(iy, &[rank - 2], "iy_row");
    let ix_nk = b.bin("Mul", &ix_col, nk, "ix_nk");
    let cand_ids = b.bin("Add", &ix_nk, &iy_row, "candidate_ids");
    let lead = b.i64s(&vec![0; flat_rank - 1]);
    let kk = b.bin("Mul", k_axis, k_axis, "candidate_count");
    let flat = b.concat(&[&lead, &kk], 0, "candidates_flat_shape");
    let cand_flat = b.reshape(&cand, &flat, "candidates_flat");
    let ids_flat = b.reshape(&cand_ids, &flat, "candidate_ids_flat");
    let (scores, pos) = b.top_k(&cand_flat, k, true, "best");
    let ids = b.op("GatherElements", &[&ids_flat, &pos], vec![attr_int("axis", -1)], "best_ids");
    (scores, ids)
}

/// `PkTopK(q, keys) -> (scores, ids)`: per axis similarities by one broadcast `MatMul`, the top-k of each axis,
/// then the top-k of the k² candidate sums.
pub fn pk_topk(p: &PkTopK, site: &Site) -> Result<CustomOp> {
    let attrs = vec![
        attr_int("heads", p.heads as i64),
        attr_int("num_keys", p.num_keys as i64),
        attr_int("k", p.k as i64),
    ];
    let (formal_in, formal_out) = (["q", "keys"], ["scores", "ids"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let q = to_f32(&mut b, "q", t);
    let keys = to_f32(&mut b, "keys", t);
    let bs = b.shape_of("q", 0, 2, "tokens_shape");
    let he = b.shape_of("keys", 0, 1, "heads");
    let nk = b.shape_of("keys", 1, 2, "num_keys");
    let half = b.shape_of("keys", 3, 4, "half");
    let (two, one_1d) = (b.i64s(&[2]), b.i64s(&[1]));
    let q_shape = b.concat(&[&bs, &two, &he, &one_1d, &half], 0, "q_shape");
    let q6 = b.reshape(&q, &q_shape, "q6");
    let kt = b.transpose(&keys, &[2, 0, 3, 1], "keys_t");
    let sim6 = b.bin("MatMul", &q6, &kt, "sim6");
    let sim = b.squeeze(&sim6, &[4], "sim");
    let k = attr_i64_1d(&mut b, "k");
    let (sv, si) = b.top_k(&sim, &k, true, "axis_best");
    let (x_i, y_i) = (b.i64_scalar(0), b.i64_scalar(1));
    let axis2 = vec![attr_int("axis", 2)];
    let sx = b.op("Gather", &[&sv, &x_i], axis2.clone(), "sx");
    let sy = b.op("Gather", &[&sv, &y_i], axis2.clone(), "sy");
    let ix = b.op("Gather", &[&si, &x_i], axis2.clone(), "ix");
    let iy = b.op("Gather", &[&si, &y_i], axis2, "iy");
    let (scores, ids) = product_top_k(&mut b, &sx, &ix, &sy, &iy, &nk, &k, &k, 4);
    finish(&mut b, &scores, t, "scores");
    b.rename(&ids, "ids");
    assemble(site, "PkTopK", attrs, &formal_in, &formal_out, b)
}

/// `RouterTopK(logits) -> (scores, ids)`: the logits buffer reshaped to `[2, B·S, nk]`, the top-`min(k, nk)` of
/// each half, then the top-k of the candidate sums, reshaped back to `[B,S,1,k]`.
pub fn router_topk(r: &RouterTopK, site: &Site) -> Result<CustomOp> {
    let attrs = vec![attr_int("num_keys", r.num_keys as i64), attr_int("k", r.k as i64)];
    let (formal_in, formal_out) = (["logits"], ["scores", "ids"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let logits = to_f32(&mut b, "logits", t);
    let width = b.shape_of("logits", 2, 3, "width");
    let two = b.i64s(&[2]);
    let nk = b.bin("Div", &width, &two, "num_keys");
    let batch = b.shape_of("logits", 0, 1, "batch");
    let seq = b.shape_of("logits", 1, 2, "seq");
    let tokens = b.bin("Mul", &batch, &seq, "tokens");
    let view_shape = b.concat(&[&two, &tokens, &nk], 0, "view_shape");
    let view = b.reshape(&logits, &view_shape, "view");
    let (x_i, y_i) = (b.i64_scalar(0), b.i64_scalar(1));
    let x = b.op("Gather", &[&view, &x_i], vec![attr_int("axis", 0)], "x");
    let y = b.op("Gather", &[&view, &y_i], vec![attr_int("axis", 0)], "y");
    let k = attr_i64_1d(&mut b, "k");
    let kk = b.bin("Min", &k, &nk, "axis_k");
    let (sx, ix) = b.top_k(&x, &kk, true, "x_best");
    let (sy, iy) = b.top_k(&y, &kk, true, "y_best");
    let (scores, ids) = product_top_k(&mut b, &sx, &ix, &sy, &iy, &nk, &k, &kk, 2);
    let bs = b.shape_of("logits", 0, 2, "tokens_shape");
    let one_1d = b.i64s(&[1]);
    let out_shape = b.concat(&[&bs, &one_1d, &k], 0, "out_shape");
    let scores4 = b.reshape(&scores, &out_shape, "scores_f32");
    finish(&mut b, &scores4, t, "scores");
    b.op_to("Reshape", &[&ids, &out_shape], vec![], "ids");
    assemble(site, "RouterTopK", attrs, &formal_in, &formal_out, b)
}

fn order_name(o: ExpertAct) -> &'static str {
    match o {
        ExpertAct::BeforeSoftmax => "before_softmax",
        ExpertAct::AfterSoftmax => "after_softmax",
    }
}

/// `ExpertMix(x, scores, ids, down, up) -> out`: routing weights by softmax, the selected `down`/`up` rows by
/// `Gather`, one batched `MatMul` for the expert inputs and one for the weighted sum.
pub fn expert_mix(e: &ExpertMix, site: &Site) -> Result<CustomOp> {
    let attrs = vec![
        attr_string("act", act_name(e.act)),
        attr_string("order", order_name(e.order)),
        attr_int("norm_topk", i64::from(e.norm_topk)),
    ];
    let (formal_in, formal_out) = (["x", "scores", "ids", "down", "up"], ["out"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let x = to_f32(&mut b, "x", t);
    let scores = to_f32(&mut b, "scores", t);
    let mut p = b.op("Softmax", &[&scores], vec![attr_int("axis", -1)], "probs");
    if e.norm_topk {
        let last = b.i64s(&[-1]);
        let sum = b.op("ReduceSum", &[&p, &last], vec![attr_int("keepdims", 1)], "probs_sum");
        p = b.bin("Div", &p, &sum, "probs_normed");
    }
    let axis0 = vec![attr_int("axis", 0)];
    let down = b.op("Gather", &["down", "ids"], axis0.clone(), "down_rows");
    let down = to_f32(&mut b, &down, t);
    let bs = b.shape_of("x", 0, 2, "tokens_shape");
    let one_1d = b.i64s(&[1]);
    let dim = b.shape_of("x", 2, 3, "dim");
    let x_shape = b.concat(&[&bs, &one_1d, &dim, &one_1d], 0, "x_col_shape");
    let x_col = b.reshape(&x, &x_shape, "x_col");
    let d5 = b.bin("MatMul", &down, &x_col, "expert_in5");
    let d = b.squeeze(&d5, &[4], "expert_in");
    let w = match e.order {
        ExpertAct::BeforeSoftmax => {
            let a = activation(&mut b, &d, e.act, FloatType::F32);
            b.bin("Mul", &a, &p, "weights")
        }
        ExpertAct::AfterSoftmax => {
            let dp = b.bin("Mul", &d, &p, "weighted_in");
            activation(&mut b, &dp, e.act, FloatType::F32)
        }
    };
    let up = b.op("Gather", &["up", "ids"], axis0, "up_rows");
    let up = to_f32(&mut b, &up, t);
    let heads = b.shape_of("scores", 2, 3, "heads");
    let per_head = b.shape_of("scores", 3, 4, "per_head");
    let slots = b.bin("Mul", &heads, &per_head, "slots");
    let w_shape = b.concat(&[&bs, &one_1d, &slots], 0, "weights_row_shape");
    let w_row = b.reshape(&w, &w_shape, "weights_row");
    let up_shape = b.concat(&[&bs, &slots, &dim], 0, "up_flat_shape");
    let up_flat = b.reshape(&up, &up_shape, "up_flat");
    let mixed = b.bin("MatMul", &w_row, &up_flat, "mixed");
    let x_full = b.shape("x");
    let out = b.reshape(&mixed, &x_full, "out_f32");
    finish(&mut b, &out, t, "out");
    assemble(site, "ExpertMix", attrs, &formal_in, &formal_out, b)
}

/// `InnerValues(x, vq, v_keys, v_embed) -> out`: per value head the similarities by one broadcast `MatMul`,
/// the top-k ids, the sum of the gathered `v_embed` rows, times `x`.
pub fn inner_values(iv: &InnerValues, site: &Site) -> Result<CustomOp> {
    let attrs = vec![attr_int("heads", iv.heads as i64), attr_int("k", iv.k as i64)];
    let (formal_in, formal_out) = (["x", "vq", "v_keys", "v_embed"], ["out"]);
    let mut b = body(&[&formal_in[..], &formal_out[..]].concat());
    let t = site.dtype;
    let x = to_f32(&mut b, "x", t);
    let vq = to_f32(&mut b, "vq", t);
    let keys = to_f32(&mut b, "v_keys", t);
    let bs = b.shape_of("vq", 0, 2, "tokens_shape");
    let hv = b.shape_of("v_keys", 0, 1, "heads");
    let rv = b.shape_of("v_keys", 1, 2, "retrieval");
    let one_1d = b.i64s(&[1]);
    let q_shape = b.concat(&[&bs, &hv, &one_1d, &rv], 0, "vq_shape");
    let q5 = b.reshape(&vq, &q_shape, "vq5");
    let sim5 = b.bin("MatMul", &q5, &keys, "sim5");
    let sim = b.squeeze(&sim5, &[3], "sim");
    let k = attr_i64_1d(&mut b, "k");
    let (_, idx) = b.top_k(&sim, &k, true, "best");
    let rows = b.op("Gather", &["v_embed", &idx], vec![attr_int("axis", 0)], "value_rows");
    let rows = to_f32(&mut b, &rows, t);
    let axes = b.i64s(&[2, 3]);
    let sum = b.op("ReduceSum", &[&rows, &axes], vec![attr_int("keepdims", 0)], "value_sum");
    let out = b.bin("Mul", &x, &sum, "out_f32");
    finish(&mut b, &out, t, "out");
    assemble(site, "InnerValues", attrs, &formal_in, &formal_out, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::pb::{function_text, node_text};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The custom node and its function as text.
    fn text(op: &CustomOp) -> String {
        format!("{}\n{}", node_text(&op.node), function_text(&op.function))
    }

    /// Builds op `f` at a site named `name` with actual values `inputs` and `outputs`.
    fn build(
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        dtype: FloatType,
        f: impl Fn(&Site) -> Result<CustomOp>,
    ) -> String {
        let (i, o) = (names(inputs), names(outputs));
        text(&f(&Site { name, inputs: &i, outputs: &o, dtype, opset: 18 }).unwrap())
    }

    pub(super) fn goldens() -> Vec<(&'static str, String)> {
        let f32 = FloatType::F32;
        let ssd = Ssd { heads: 4, head_dim: 16, state_dim: 16, chunk: 8, rope: false };
        let at = Attention {
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            scale: 0.25,
            mask: AttentionMask::Additive { ratio: 0.25, keep_window: Some(8) },
        };
        let pk = PkTopK { heads: 2, num_keys: 8, k: 4 };
        let router = RouterTopK { num_keys: 8, k: 4 };
        let mix = ExpertMix {
            act: Act::Silu,
            order: ExpertAct::BeforeSoftmax,
            norm_topk: true,
            add: false,
        };
        let iv = InnerValues { heads: 2, k: 3 };
        vec![
            (
                "SSD_SCAN",
                build("scan", &["x", "dt", "A", "B", "C", "s0"], &["y", "s1"], f32, |s| {
                    ssd_scan(&ssd, s)
                }),
            ),
            (
                "DYNAMIC_MASK_VALUES_F16",
                build("mask", &["dt", "A"], &["m"], FloatType::F16, dynamic_mask_values),
            ),
            (
                "MASKED_ATTENTION",
                build("attn", &["q", "k", "v", "mask", "m"], &["o"], f32, |s| {
                    masked_attention(&at, s)
                }),
            ),
            ("PK_TOPK", build("route", &["q", "keys"], &["s", "i"], f32, |s| pk_topk(&pk, s))),
            (
                "ROUTER_TOPK",
                build("route", &["logits"], &["s", "i"], f32, |s| router_topk(&router, s)),
            ),
            (
                "EXPERT_MIX",
                build("experts", &["x", "s", "i", "down", "up"], &["o"], f32, |s| {
                    expert_mix(&mix, s)
                }),
            ),
            (
                "INNER_VALUES",
                build("values", &["x", "vq", "keys", "embed"], &["o"], f32, |s| {
                    inner_values(&iv, s)
                }),
            ),
        ]
    }

    fn golden(name: &str) -> String {
        goldens().into_iter().find(|(n, _)| *n == name).map(|(_, text)| text).unwrap()
    }

    #[test]
    fn ssd_scan_proto_text() {
        assert_eq!(golden("SSD_SCAN"), SSD_SCAN.trim_start());
    }

    #[test]
    fn dynamic_mask_values_f16_proto_text() {
        assert_eq!(golden("DYNAMIC_MASK_VALUES_F16"), DYNAMIC_MASK_VALUES_F16.trim_start());
    }

    #[test]
    fn masked_attention_proto_text() {
        assert_eq!(golden("MASKED_ATTENTION"), MASKED_ATTENTION.trim_start());
    }

    #[test]
    fn pk_topk_proto_text() {
        assert_eq!(golden("PK_TOPK"), PK_TOPK.trim_start());
    }

    #[test]
    fn router_topk_proto_text() {
        assert_eq!(golden("ROUTER_TOPK"), ROUTER_TOPK.trim_start());
    }

    #[test]
    fn expert_mix_proto_text() {
        assert_eq!(golden("EXPERT_MIX"), EXPERT_MIX.trim_start());
    }

    #[test]
    fn inner_values_proto_text() {
        assert_eq!(golden("INNER_VALUES"), INNER_VALUES.trim_start());
    }

    /// Prints the golden texts in the form of the constants below (`cargo test --lib print_goldens -- --ignored
    /// --nocapture`), to review and paste when a body changes on purpose.
    #[test]
    #[ignore]
    fn print_goldens() {
        for (name, text) in goldens() {
            println!("const {name}: &str = r#\"\n{text}\"#;\n");
        }
    }

    const SSD_SCAN: &str = r#"
y, s1 = ai.cheems.SsdScan<heads=4, head_dim=16, state_dim=16, chunk=8>(x, dt, A, B, C, s0)
ai.cheems.SsdScan<heads, head_dim, state_dim, chunk>(x, dt, A, B, C, state) -> (y, state_out) opset ["":18]
  xt = Transpose<perm=[0,2,1,3]>(x)
  bt = Transpose<perm=[0,2,1,3]>(B)
  ct = Transpose<perm=[0,2,1,3]>(C)
  dtt = Transpose<perm=[0,2,1]>(dt)
  const.f32.1 = Constant<value=float[]{1}>()
  const.f32.0 = Constant<value=float[]{0}>()
  const.f32.20 = Constant<value=float[]{20}>()
  sp_exp = Exp(dtt)
  sp_u = Add(sp_exp, const.f32.1)
  sp_d = Sub(sp_u, const.f32.1)
  sp_log = Log(sp_u)
  sp_num = Mul(sp_log, sp_exp)
  sp_ratio = Div(sp_num, sp_d)
  sp_tiny = Equal(sp_d, const.f32.0)
  sp_log1p = Where(sp_tiny, sp_exp, sp_ratio)
  sp_big = Greater(dtt, const.f32.20)
  softplus = Where(sp_big, dtt, sp_log1p)
  const.i64[1] = Constant<value=int64[1]{1}>()
  a_col = Unsqueeze(A, const.i64[1])
  da = Mul(softplus, a_col)
  dt_shape = Shape(dt)
  const.i64.1 = Constant<value=int64[]{1}>()
  seq = Gather<axis=0>(dt_shape, const.i64.1)
  chunk = Constant<value_int=@chunk>()
  chunk_len = Min(chunk, seq)
  chunk_m1 = Sub(chunk, const.i64.1)
  seq_up = Add(seq, chunk_m1)
  chunks = Div(seq_up, chunk)
  padded = Mul(chunks, chunk_len)
  const.i64.0 = Constant<value=int64[]{0}>()
  padded_idx = Range(const.i64.0, padded, const.i64.1)
  last_token = Sub(seq, const.i64.1)
  source_token = Min(padded_idx, last_token)
  real_token = Less(padded_idx, seq)
  x_padded = Gather<axis=2>(xt, source_token)
  b_padded = Gather<axis=2>(bt, source_token)
  c_padded = Gather<axis=2>(ct, source_token)
  delta_gathered = Gather<axis=2>(softplus, source_token)
  delta_padded = Where(real_token, delta_gathered, const.f32.0)
  da_gathered = Gather<axis=2>(da, source_token)
  da_padded = Where(real_token, da_gathered, const.f32.0)
  bh = Shape<start=0, end=2>(xt)
  const.i64[0] = Constant<value=int64[1]{0}>()
  chunks_1d = Unsqueeze(chunks, const.i64[0])
  chunk_len_1d = Unsqueeze(chunk_len, const.i64[0])
  head_dim = Shape<start=3, end=4>(x)
  state_dim = Shape<start=3, end=4>(B)
  x_chunked_shape = Concat<axis=0>(bh, chunks_1d, chunk_len_1d, head_dim)
  b_chunked_shape = Concat<axis=0>(bh, chunks_1d, chunk_len_1d, state_dim)
  delta_chunked_shape = Concat<axis=0>(bh, chunks_1d, chunk_len_1d)
  x_chunked = Reshape(x_padded, x_chunked_shape)
  b_chunked = Reshape(b_padded, b_chunked_shape)
  c_chunked = Reshape(c_padded, b_chunked_shape)
  delta_chunked = Reshape(delta_padded, delta_chunked_shape)
  da_chunked = Reshape(da_padded, delta_chunked_shape)
  intra_idx = Range(const.i64.0, chunk_len, const.i64.1)
  intra_t = Unsqueeze(intra_idx, const.i64[1])
  intra_strict = Greater(intra_t, intra_idx)
  intra_lower = GreaterOrEqual(intra_t, intra_idx)
  const.i64[-1] = Constant<value=int64[1]{-1}>()
  intra_col = Unsqueeze(da_chunked, const.i64[-1])
  intra_mat = Where(intra_strict, intra_col, const.f32.0)
  const.i64.-2 = Constant<value=int64[]{-2}>()
  intra_seg = CumSum(intra_mat, const.i64.-2)
  const.f32.-inf = Constant<value=float[]{-inf}>()
  intra_masked = Where(intra_lower, intra_seg, const.f32.-inf)
  intra_decay = Exp(intra_masked)
  b_chunked_t = Transpose<perm=[0,1,2,4,3]>(b_chunked)
  cb = MatMul(c_chunked, b_chunked_t)
  cb_decay = Mul(cb, intra_decay)
  const.i64[3] = Constant<value=int64[1]{3}>()
  delta_row = Unsqueeze(delta_chunked, const.i64[3])
  w = Mul(cb_decay, delta_row)
  y_diag = MatMul(w, x_chunked)
  const.i64.-1 = Constant<value=int64[]{-1}>()
  seg_last = Gather<axis=3>(intra_seg, const.i64.-1)
  decay_last = Exp(seg_last)
  coef = Mul(decay_last, delta_chunked)
  const.i64[4] = Constant<value=int64[1]{4}>()
  coef_col = Unsqueeze(coef, const.i64[4])
  xw = Mul(x_chunked, coef_col)
  xw_t = Transpose<perm=[0,1,2,4,3]>(xw)
  chunk_states = MatMul(xw_t, b_chunked)
  const.i64.3 = Constant<value=int64[]{3}>()
  cum = CumSum(da_chunked, const.i64.3)
  chunk_total = Gather<axis=3>(cum, const.i64.-1)
  const.i64[0,0,1,0,0,0] = Constant<value=int64[6]{0, 0, 1, 0, 0, 0}>()
  chunk_total_padded = Pad(chunk_total, const.i64[0,0,1,0,0,0])
  const.i64[2] = Constant<value=int64[1]{2}>()
  state0 = Unsqueeze(state, const.i64[2])
  states = Concat<axis=2>(state0, chunk_states)
  chunks_p1 = Add(chunks, const.i64.1)
  inter_idx = Range(const.i64.0, chunks_p1, const.i64.1)
  inter_t = Unsqueeze(inter_idx, const.i64[1])
  inter_strict = Greater(inter_t, inter_idx)
  inter_lower = GreaterOrEqual(inter_t, inter_idx)
  inter_col = Unsqueeze(chunk_total_padded, const.i64[-1])
  inter_mat = Where(inter_strict, inter_col, const.f32.0)
  inter_seg = CumSum(inter_mat, const.i64.-2)
  inter_masked = Where(inter_lower, inter_seg, const.f32.-inf)
  inter_decay = Exp(inter_masked)
  const.i64[0,0,0] = Constant<value=int64[3]{0, 0, 0}>()
  state_size = Mul(head_dim, state_dim)
  states_flat_shape = Concat<axis=0>(const.i64[0,0,0], state_size)
  states_flat = Reshape(states, states_flat_shape)
  entering_flat = MatMul(inter_decay, states_flat)
  states_shape = Shape(states)
  entering_all = Reshape(entering_flat, states_shape)
  entering = Slice(entering_all, const.i64[0], chunks_1d, const.i64[2])
  state_out = Gather<axis=2>(entering_all, const.i64.-1)
  cum_col = Unsqueeze(cum, const.i64[4])
  e_cum = Exp(cum_col)
  entering_t = Transpose<perm=[0,1,2,4,3]>(entering)
  c_state = MatMul(c_chunked, entering_t)
  y_off = Mul(c_state, e_cum)
  y_chunked = Add(y_diag, y_off)
  padded_1d = Unsqueeze(padded, const.i64[0])
  y_padded_shape = Concat<axis=0>(bh, padded_1d, head_dim)
  y_padded = Reshape(y_chunked, y_padded_shape)
  seq_1d = Unsqueeze(seq, const.i64[0])
  y_bhsp = Slice(y_padded, const.i64[0], seq_1d, const.i64[2])
  y = Transpose<perm=[0,2,1,3]>(y_bhsp)
"#;

    const DYNAMIC_MASK_VALUES_F16: &str = r#"
m = ai.cheems.DynamicMaskValues(dt, A)
ai.cheems.DynamicMaskValues<>(dt, A) -> (m) opset ["":18]
  dt_f32 = Cast<to=1>(dt)
  A_f32 = Cast<to=1>(A)
  const.f32.1 = Constant<value=float[]{1}>()
  const.f32.0 = Constant<value=float[]{0}>()
  const.f32.20 = Constant<value=float[]{20}>()
  sp_exp = Exp(dt_f32)
  sp_u = Add(sp_exp, const.f32.1)
  sp_d = Sub(sp_u, const.f32.1)
  sp_log = Log(sp_u)
  sp_num = Mul(sp_log, sp_exp)
  sp_ratio = Div(sp_num, sp_d)
  sp_tiny = Equal(sp_d, const.f32.0)
  sp_log1p = Where(sp_tiny, sp_exp, sp_ratio)
  sp_big = Greater(dt_f32, const.f32.20)
  softplus = Where(sp_big, dt_f32, sp_log1p)
  a_sp = Mul(softplus, A_f32)
  m_bsh = Exp(a_sp)
  m_f32 = Transpose<perm=[0,2,1]>(m_bsh)
  m = Cast<to=10>(m_f32)
"#;

    const MASKED_ATTENTION: &str = r#"
o = ai.cheems.MaskedAttention<heads=4, kv_heads=2, head_dim=16, scale=0.25, mask="additive", ratio=0.25, keep_window=8>(q, k, v, mask, m)
ai.cheems.MaskedAttention<heads, kv_heads, head_dim, scale, mask, ratio, keep_window>(q, k, v, attention_mask, m) -> (out) opset ["":18]
  batch = Shape<start=0, end=1>(q)
  seq = Shape<start=1, end=2>(q)
  heads = Shape<start=2, end=3>(q)
  head_dim = Shape<start=3, end=4>(q)
  kv_heads = Shape<start=1, end=2>(k)
  keys = Shape<start=2, end=3>(k)
  group_size = Div(heads, kv_heads)
  group_rows = Mul(group_size, seq)
  qt = Transpose<perm=[0,2,1,3]>(q)
  grouped_shape = Concat<axis=0>(batch, kv_heads, group_rows, head_dim)
  qg = Reshape(qt, grouped_shape)
  kt = Transpose<perm=[0,1,3,2]>(k)
  qk = MatMul(qg, kt)
  scale = Constant<value_float=@scale>()
  qk_scaled = Mul(qk, scale)
  score_shape = Concat<axis=0>(batch, heads, seq, keys)
  scores = Reshape(qk_scaled, score_shape)
  q_shape = Shape(q)
  const.i64.1 = Constant<value=int64[]{1}>()
  seq_scalar = Gather<axis=0>(q_shape, const.i64.1)
  k_shape = Shape(k)
  const.i64.2 = Constant<value=int64[]{2}>()
  keys_scalar = Gather<axis=0>(k_shape, const.i64.2)
  const.i64.0 = Constant<value=int64[]{0}>()
  offset = Sub(keys_scalar, seq_scalar)
  query_idx = Range(const.i64.0, seq_scalar, const.i64.1)
  key_idx = Range(const.i64.0, keys_scalar, const.i64.1)
  const.i64[1] = Constant<value=int64[1]{1}>()
  query_col = Unsqueeze(query_idx, const.i64[1])
  last_visible = Add(query_col, offset)
  causal = LessOrEqual(key_idx, last_visible)
  padding = Equal(attention_mask, const.i64.0)
  token = Not(padding)
  const.i64[1,2] = Constant<value=int64[2]{1, 2}>()
  token4 = Unsqueeze(token, const.i64[1,2])
  visible = And(causal, token4)
  const.f32.-3.4028235e38 = Constant<value=float[]{-3.4028235e38}>()
  const.f32.0 = Constant<value=float[]{0}>()
  heads_scalar = Gather<axis=0>(q_shape, const.i64.2)
  m_shape = Shape(m)
  mask_heads_scalar = Gather<axis=0>(m_shape, const.i64.1)
  head_idx = Range(const.i64.0, heads_scalar, const.i64.1)
  head_idx_scaled = Mul(head_idx, mask_heads_scalar)
  mask_head_idx = Div(head_idx_scaled, heads_scalar)
  m_heads = Gather<axis=1>(m, mask_head_idx)
  ratio = Constant<value_float=@ratio>()
  keys_f32 = Cast<to=1>(keys_scalar)
  n_f32 = Mul(keys_f32, ratio)
  n = Cast<to=7>(n_f32)
  n_at_least_1 = Max(n, const.i64.1)
  const.i64[0] = Constant<value=int64[1]{0}>()
  n_1d = Unsqueeze(n_at_least_1, const.i64[0])
  smallest_values, smallest_indices = TopK<axis=-1, largest=0>(m_heads, n_1d)
  const.i64[9223372036854775807] = Constant<value=int64[1]{9223372036854775807}>()
  const.i64[-1] = Constant<value=int64[1]{-1}>()
  threshold = Slice(smallest_values, const.i64[-1], const.i64[9223372036854775807], const.i64[-1])
  below_threshold = Less(m_heads, threshold)
  ratio_active = Greater(n, const.i64.0)
  dropped = And(below_threshold, ratio_active)
  m_thresholded = Where(dropped, const.f32.-3.4028235e38, m_heads)
  const.i64[2] = Constant<value=int64[1]{2}>()
  key_bias4 = Unsqueeze(m_thresholded, const.i64[2])
  bias = Where(visible, key_bias4, const.f32.-3.4028235e38)
  keep_window = Constant<value_int=@keep_window>()
  keep_window_1d = Unsqueeze(keep_window, const.i64[0])
  window = Min(keep_window_1d, keys)
  largest_values, largest_indices = TopK<axis=-1, largest=1>(bias, window)
  bias_shape = Shape(bias)
  none_kept = ConstantOfShape<value=bool[1]{false}>(bias_shape)
  largest_indices_shape = Shape(largest_indices)
  const.bool.true = Constant<value=bool[]{true}>()
  kept_true = Expand(const.bool.true, largest_indices_shape)
  keep = ScatterElements<axis=-1>(none_kept, largest_indices, kept_true)
  bias_windowed = Where(keep, bias, const.f32.-3.4028235e38)
  logits = Add(scores, bias_windowed)
  probs = Softmax<axis=-1>(logits)
  probs_grouped_shape = Concat<axis=0>(batch, kv_heads, group_rows, keys)
  probs_grouped = Reshape(probs, probs_grouped_shape)
  out_grouped = MatMul(probs_grouped, v)
  out_shape = Concat<axis=0>(batch, heads, seq, head_dim)
  out_bhsd = Reshape(out_grouped, out_shape)
  out = Transpose<perm=[0,2,1,3]>(out_bhsd)
"#;

    const PK_TOPK: &str = r#"
s, i = ai.cheems.PkTopK<heads=2, num_keys=8, k=4>(q, keys)
ai.cheems.PkTopK<heads, num_keys, k>(q, keys) -> (scores, ids) opset ["":18]
  tokens_shape = Shape<start=0, end=2>(q)
  heads = Shape<start=0, end=1>(keys)
  num_keys = Shape<start=1, end=2>(keys)
  half = Shape<start=3, end=4>(keys)
  const.i64[2] = Constant<value=int64[1]{2}>()
  const.i64[1] = Constant<value=int64[1]{1}>()
  q_shape = Concat<axis=0>(tokens_shape, const.i64[2], heads, const.i64[1], half)
  q6 = Reshape(q, q_shape)
  keys_t = Transpose<perm=[2,0,3,1]>(keys)
  sim6 = MatMul(q6, keys_t)
  const.i64[4] = Constant<value=int64[1]{4}>()
  sim = Squeeze(sim6, const.i64[4])
  k = Constant<value_int=@k>()
  const.i64[0] = Constant<value=int64[1]{0}>()
  k_1d = Unsqueeze(k, const.i64[0])
  axis_best_values, axis_best_indices = TopK<axis=-1, largest=1>(sim, k_1d)
  const.i64.0 = Constant<value=int64[]{0}>()
  const.i64.1 = Constant<value=int64[]{1}>()
  sx = Gather<axis=2>(axis_best_values, const.i64.0)
  sy = Gather<axis=2>(axis_best_values, const.i64.1)
  ix = Gather<axis=2>(axis_best_indices, const.i64.0)
  iy = Gather<axis=2>(axis_best_indices, const.i64.1)
  sx_col = Unsqueeze(sx, const.i64[4])
  const.i64[3] = Constant<value=int64[1]{3}>()
  sy_row = Unsqueeze(sy, const.i64[3])
  candidates = Add(sx_col, sy_row)
  ix_col = Unsqueeze(ix, const.i64[4])
  iy_row = Unsqueeze(iy, const.i64[3])
  ix_nk = Mul(ix_col, num_keys)
  candidate_ids = Add(ix_nk, iy_row)
  const.i64[0,0,0] = Constant<value=int64[3]{0, 0, 0}>()
  candidate_count = Mul(k_1d, k_1d)
  candidates_flat_shape = Concat<axis=0>(const.i64[0,0,0], candidate_count)
  candidates_flat = Reshape(candidates, candidates_flat_shape)
  candidate_ids_flat = Reshape(candidate_ids, candidates_flat_shape)
  scores, best_indices = TopK<axis=-1, largest=1>(candidates_flat, k_1d)
  ids = GatherElements<axis=-1>(candidate_ids_flat, best_indices)
"#;

    const ROUTER_TOPK: &str = r#"
s, i = ai.cheems.RouterTopK<num_keys=8, k=4>(logits)
ai.cheems.RouterTopK<num_keys, k>(logits) -> (scores, ids) opset ["":18]
  width = Shape<start=2, end=3>(logits)
  const.i64[2] = Constant<value=int64[1]{2}>()
  num_keys = Div(width, const.i64[2])
  batch = Shape<start=0, end=1>(logits)
  seq = Shape<start=1, end=2>(logits)
  tokens = Mul(batch, seq)
  view_shape = Concat<axis=0>(const.i64[2], tokens, num_keys)
  view = Reshape(logits, view_shape)
  const.i64.0 = Constant<value=int64[]{0}>()
  const.i64.1 = Constant<value=int64[]{1}>()
  x = Gather<axis=0>(view, const.i64.0)
  y = Gather<axis=0>(view, const.i64.1)
  k = Constant<value_int=@k>()
  const.i64[0] = Constant<value=int64[1]{0}>()
  k_1d = Unsqueeze(k, const.i64[0])
  axis_k = Min(k_1d, num_keys)
  x_best_values, x_best_indices = TopK<axis=-1, largest=1>(x, axis_k)
  y_best_values, y_best_indices = TopK<axis=-1, largest=1>(y, axis_k)
  sx_col = Unsqueeze(x_best_values, const.i64[2])
  const.i64[1] = Constant<value=int64[1]{1}>()
  sy_row = Unsqueeze(y_best_values, const.i64[1])
  candidates = Add(sx_col, sy_row)
  ix_col = Unsqueeze(x_best_indices, const.i64[2])
  iy_row = Unsqueeze(y_best_indices, const.i64[1])
  ix_nk = Mul(ix_col, num_keys)
  candidate_ids = Add(ix_nk, iy_row)
  candidate_count = Mul(axis_k, axis_k)
  candidates_flat_shape = Concat<axis=0>(const.i64[0], candidate_count)
  candidates_flat = Reshape(candidates, candidates_flat_shape)
  candidate_ids_flat = Reshape(candidate_ids, candidates_flat_shape)
  best_values, best_indices = TopK<axis=-1, largest=1>(candidates_flat, k_1d)
  best_ids = GatherElements<axis=-1>(candidate_ids_flat, best_indices)
  tokens_shape = Shape<start=0, end=2>(logits)
  out_shape = Concat<axis=0>(tokens_shape, const.i64[1], k_1d)
  scores = Reshape(best_values, out_shape)
  ids = Reshape(best_ids, out_shape)
"#;

    const EXPERT_MIX: &str = r#"
o = ai.cheems.ExpertMix<act="silu", order="before_softmax", norm_topk=1>(x, s, i, down, up)
ai.cheems.ExpertMix<act, order, norm_topk>(x, scores, ids, down, up) -> (out) opset ["":18]
  probs = Softmax<axis=-1>(scores)
  const.i64[-1] = Constant<value=int64[1]{-1}>()
  probs_sum = ReduceSum<keepdims=1>(probs, const.i64[-1])
  probs_normed = Div(probs, probs_sum)
  down_rows = Gather<axis=0>(down, ids)
  tokens_shape = Shape<start=0, end=2>(x)
  const.i64[1] = Constant<value=int64[1]{1}>()
  dim = Shape<start=2, end=3>(x)
  x_col_shape = Concat<axis=0>(tokens_shape, const.i64[1], dim, const.i64[1])
  x_col = Reshape(x, x_col_shape)
  expert_in5 = MatMul(down_rows, x_col)
  const.i64[4] = Constant<value=int64[1]{4}>()
  expert_in = Squeeze(expert_in5, const.i64[4])
  sigmoid = Sigmoid(expert_in)
  silu = Mul(expert_in, sigmoid)
  weights = Mul(silu, probs_normed)
  up_rows = Gather<axis=0>(up, ids)
  heads = Shape<start=2, end=3>(scores)
  per_head = Shape<start=3, end=4>(scores)
  slots = Mul(heads, per_head)
  weights_row_shape = Concat<axis=0>(tokens_shape, const.i64[1], slots)
  weights_row = Reshape(weights, weights_row_shape)
  up_flat_shape = Concat<axis=0>(tokens_shape, slots, dim)
  up_flat = Reshape(up_rows, up_flat_shape)
  mixed = MatMul(weights_row, up_flat)
  x_shape = Shape(x)
  out = Reshape(mixed, x_shape)
"#;

    const INNER_VALUES: &str = r#"
o = ai.cheems.InnerValues<heads=2, k=3>(x, vq, keys, embed)
ai.cheems.InnerValues<heads, k>(x, vq, v_keys, v_embed) -> (out) opset ["":18]
  tokens_shape = Shape<start=0, end=2>(vq)
  heads = Shape<start=0, end=1>(v_keys)
  retrieval = Shape<start=1, end=2>(v_keys)
  const.i64[1] = Constant<value=int64[1]{1}>()
  vq_shape = Concat<axis=0>(tokens_shape, heads, const.i64[1], retrieval)
  vq5 = Reshape(vq, vq_shape)
  sim5 = MatMul(vq5, v_keys)
  const.i64[3] = Constant<value=int64[1]{3}>()
  sim = Squeeze(sim5, const.i64[3])
  k = Constant<value_int=@k>()
  const.i64[0] = Constant<value=int64[1]{0}>()
  k_1d = Unsqueeze(k, const.i64[0])
  best_values, best_indices = TopK<axis=-1, largest=1>(sim, k_1d)
  value_rows = Gather<axis=0>(v_embed, best_indices)
  const.i64[2,3] = Constant<value=int64[2]{2, 3}>()
  value_sum = ReduceSum<keepdims=0>(value_rows, const.i64[2,3])
  out = Mul(x, value_sum)
"#;
}
