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
    pub name: &'a str,
    pub inputs: &'a [String],
    pub outputs: &'a [String],
    pub dtype: FloatType,
    pub opset: i64,
}

/// A custom node and the function body that defines its op type.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomOp {
    pub node: NodeProto,
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

/// `SsdScan(x, dt, A, B, C, state) -> (y, state')` in the quadratic (dual) form: with `a_t = softplus(dt_t)·A`
/// and `seg[t,s] = Σ_{s<r≤t} a_r` (a cumulative sum of the strictly lower triangle, masked with −inf above the
/// diagonal before `exp`), `y_t = Σ_{s≤t} (C_t·B_s)·exp(seg[t,s])·Δ_s·x_s + exp(cum_t)·(S0·C_t)` and
/// `state' = exp(cum_last)·S0 + Σ_s exp(seg[last,s])·Δ_s·x_s ⊗ B_s`.
pub fn ssd_scan(s: &Ssd, site: &Site) -> Result<CustomOp> {
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
    let seq = b.dim(&dt, 1, "seq");
    let (zero, one) = (b.i64_scalar(0), b.i64_scalar(1));
    let idx = b.op("Range", &[&zero, &seq, &one], vec![], "idx");
    let t_col = b.unsqueeze(&idx, &[1], "t_col");
    let strict = b.bin("Greater", &t_col, &idx, "strict");
    let lower = b.bin("GreaterOrEqual", &t_col, &idx, "lower");
    let da_col = b.unsqueeze(&da, &[3], "da_col");
    let zero_f = b.float(0.0, FloatType::F32);
    let da_mat = b.op("Where", &[&strict, &da_col, &zero_f], vec![], "da_mat");
    let axis2 = b.i64_scalar(2);
    let seg = b.op("CumSum", &[&da_mat, &axis2], vec![], "seg");
    let neg_inf = b.float(f32::NEG_INFINITY, FloatType::F32);
    let seg_masked = b.op("Where", &[&lower, &seg, &neg_inf], vec![], "seg_masked");
    let decay = b.un("Exp", &seg_masked, "decay");
    let bt_t = b.transpose(&bt, &[0, 1, 3, 2], "bt_t");
    let cb = b.bin("MatMul", &ct, &bt_t, "cb");
    let cb_decay = b.bin("Mul", &cb, &decay, "cb_decay");
    let delta_row = b.unsqueeze(&delta, &[2], "delta_row");
    let w = b.bin("Mul", &cb_decay, &delta_row, "w");
    let y_diag = b.bin("MatMul", &w, &xt, "y_diag");
    let cum = b.op("CumSum", &[&da, &axis2], vec![], "cum");
    let cum_col = b.unsqueeze(&cum, &[3], "cum_col");
    let e_cum = b.un("Exp", &cum_col, "e_cum");
    let state_t = b.transpose("state", &[0, 1, 3, 2], "state_t");
    let c_state = b.bin("MatMul", &ct, &state_t, "c_state");
    let y_init = b.bin("Mul", &c_state, &e_cum, "y_init");
    let y_sum = b.bin("Add", &y_diag, &y_init, "y_sum");
    let y = b.transpose(&y_sum, &[0, 2, 1, 3], "y_f32");
    finish(&mut b, &y, t, "y");
    let last_i = b.i64_scalar(-1);
    let seg_last = b.op("Gather", &[&seg, &last_i], vec![attr_int("axis", 2)], "seg_last");
    let decay_last = b.un("Exp", &seg_last, "decay_last");
    let coef = b.bin("Mul", &decay_last, &delta, "coef");
    let coef_col = b.unsqueeze(&coef, &[3], "coef_col");
    let xw = b.bin("Mul", &xt, &coef_col, "xw");
    let xw_t = b.transpose(&xw, &[0, 1, 3, 2], "xw_t");
    let s_new = b.bin("MatMul", &xw_t, &bt, "s_new");
    let total = b.op("Gather", &[&cum, &last_i], vec![attr_int("axis", 2)], "total");
    let total4 = b.unsqueeze(&total, &[2, 3], "total4");
    let e_total = b.un("Exp", &total4, "e_total");
    let kept = b.bin("Mul", "state", &e_total, "kept");
    b.op_to("Add", &[&kept, &s_new], vec![], "state_out");
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
    let minus1 = b.i64s(&[-1]);
    let qt = b.transpose(&q, &[0, 2, 1, 3], "qt");
    let grouped = b.concat(&[&b1, &g1, &minus1, &dh1], 0, "grouped_shape");
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
                    b.op("Slice", &[&smallest, &minus1, &big, &last_axis], vec![], "threshold");
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
        let bias_shape = b.op("Shape", &[&bias], vec![], "bias_shape");
        let falses = b.op(
            "ConstantOfShape",
            &[&bias_shape],
            vec![attr_tensor("value", tensor_bool("", &[1], &[false]))],
            "none_kept",
        );
        let idx_shape = b.op("Shape", &[&kept_idx], vec![], "kept_shape");
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
    let pg_shape = b.concat(&[&b1, &g1, &minus1, &t1], 0, "probs_grouped_shape");
    let pg = b.reshape(&probs, &pg_shape, "probs_grouped");
    let og = b.bin("MatMul", &pg, &v, "out_grouped");
    let out_shape = b.concat(&[&b1, &h1, &s1, &dh1], 0, "out_shape");
    let o4 = b.reshape(&og, &out_shape, "out_bhsd");
    let o = b.transpose(&o4, &[0, 2, 1, 3], "out_f32");
    finish(&mut b, &o, t, "out");
    assemble(site, "MaskedAttention", attrs, &formal_in, &formal_out, b)
}

/// The top-k candidates `sx[i] + sy[j]` (ids `ix[i]·nk + iy[j]`) over the last two axes of `sx`/`ix` and
/// `sy`/`iy`, flattened row-major: `(scores, ids)` of the `k` largest.
#[allow(clippy::too_many_arguments)]
fn product_top_k(
    b: &mut Builder,
    sx: &str,
    ix: &str,
    sy: &str,
    iy: &str,
    nk: &str,
    k: &str,
    flat: &[i64],
) -> (String, String) {
    let rank = flat.len() as i64 + 1;
    let sx_col = b.unsqueeze(sx, &[rank - 1], "sx_col");
    let sy_row = b.unsqueeze(sy, &[rank - 2], "sy_row");
    let cand = b.bin("Add", &sx_col, &sy_row, "candidates");
    let ix_col = b.unsqueeze(ix, &[rank - 1], "ix_col");
    let iy_row = b.unsqueeze(iy, &[rank - 2], "iy_row");
    let ix_nk = b.bin("Mul", &ix_col, nk, "ix_nk");
    let cand_ids = b.bin("Add", &ix_nk, &iy_row, "candidate_ids");
    let flat = b.i64s(flat);
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
    let (scores, ids) = product_top_k(&mut b, &sx, &ix, &sy, &iy, &nk, &k, &[0, 0, 0, -1]);
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
    let minus1 = b.i64s(&[-1]);
    let view_shape = b.concat(&[&two, &minus1, &nk], 0, "view_shape");
    let view = b.reshape(&logits, &view_shape, "view");
    let (x_i, y_i) = (b.i64_scalar(0), b.i64_scalar(1));
    let x = b.op("Gather", &[&view, &x_i], vec![attr_int("axis", 0)], "x");
    let y = b.op("Gather", &[&view, &y_i], vec![attr_int("axis", 0)], "y");
    let k = attr_i64_1d(&mut b, "k");
    let kk = b.bin("Min", &k, &nk, "axis_k");
    let (sx, ix) = b.top_k(&x, &kk, true, "x_best");
    let (sy, iy) = b.top_k(&y, &kk, true, "y_best");
    let (scores, ids) = product_top_k(&mut b, &sx, &ix, &sy, &iy, &nk, &k, &[0, -1]);
    let bs = b.shape_of("logits", 0, 2, "tokens_shape");
    let tail = b.i64s(&[1, -1]);
    let out_shape = b.concat(&[&bs, &tail], 0, "out_shape");
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
    let col = b.i64s(&[1, -1, 1]);
    let x_shape = b.concat(&[&bs, &col], 0, "x_col_shape");
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
    let row = b.i64s(&[1, -1]);
    let w_shape = b.concat(&[&bs, &row], 0, "weights_row_shape");
    let w_row = b.reshape(&w, &w_shape, "weights_row");
    let minus1 = b.i64s(&[-1]);
    let dim = b.shape_of("x", 2, 3, "dim");
    let up_shape = b.concat(&[&bs, &minus1, &dim], 0, "up_flat_shape");
    let up_flat = b.reshape(&up, &up_shape, "up_flat");
    let mixed = b.bin("MatMul", &w_row, &up_flat, "mixed");
    let x_full = b.op("Shape", &["x"], vec![], "x_shape");
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
