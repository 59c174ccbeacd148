//! Fusion rules and packing: each fires where it should, is blocked where it must be, and leaves the numerics of
//! every fixture unchanged on the CPU executor.

mod common;

use cheems::exec::cpu::CpuExecutor;
use cheems::ir::op::{Norm, Ssd};
use cheems::ir::{DType, Dim, Fact, Graph, Op, OpKind, Tensor, ValueId};
use cheems::model::build::build;
use cheems::model::checkpoint::Checkpoint;
use cheems::passes::fuse::FuseOptions;
use cheems::passes::lower::Target;
use cheems::passes::{compile, CompileOptions};
use cheems::runner::{run, Inputs};
use common::{cases, compare_rows};
use std::collections::BTreeMap;

fn opts() -> CompileOptions {
    let mut o = CompileOptions::new(Target::Cpu);
    o.verify = true;
    o
}

/// `h = s ⊙ r + f; y = rms_norm(h, w)`, with `h` also a graph output (the next layer's residual).
fn residual_graph() -> Graph {
    let mut g = Graph::new();
    let x = Fact::new(DType::F32, [Dim::sym("B"), Dim::konst(8)]);
    let r = g.input("r", x.clone()).unwrap();
    let f = g.input("f", x).unwrap();
    let s = g.input("s", Fact::konst(DType::F32, &[8])).unwrap();
    let w = g.input("w", Fact::konst(DType::F32, &[8])).unwrap();
    let h = g.wire("res", Op::ScaledResidual, &[s, r, f]).unwrap();
    let y = g.wire("norm", Op::RmsNorm(Norm { eps: 1e-6 }), &[h, w]).unwrap();
    g.output("h", h).unwrap();
    g.output("y", y).unwrap();
    g
}

fn inputs(seed: u32) -> BTreeMap<String, Tensor> {
    let v = |n: usize, k: u32| {
        (0..n)
            .map(|i| ((i as u32 * 7919 + k * 104729 + seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    BTreeMap::from([
        ("r".to_string(), Tensor::f32(vec![3, 8], v(24, 1)).unwrap()),
        ("f".to_string(), Tensor::f32(vec![3, 8], v(24, 2)).unwrap()),
        ("s".to_string(), Tensor::f32(vec![8], v(8, 3)).unwrap()),
        ("w".to_string(), Tensor::f32(vec![8], v(8, 4)).unwrap()),
    ])
}

#[test]
fn residual_rms_norm_fires_and_keeps_the_residual_output() {
    let mut g = residual_graph();
    let before = CpuExecutor::new(g.clone()).unwrap().run(inputs(1), &[]).unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert_eq!(cx.rewrites.get("residual_rms_norm"), Some(&1));
    assert_eq!(
        g.dump().unwrap(),
        "%0 r = Input -> f32[B,8]\n%1 f = Input -> f32[B,8]\n%2 s = Input -> f32[8]\n%3 w = Input -> f32[8]\n\
         %6 norm.fused = ResidualRmsNorm { norm: Norm { eps: 1e-6 }, scaled: true }(%2, %0, %1, %3) -> f32[B,8], f32[B,8]\n\
         output h = %6\noutput y = %6:1\n"
    );
    let after = CpuExecutor::new(g).unwrap().run(inputs(1), &[]).unwrap();
    assert_eq!(before, after, "the fused op computes exactly the two steps");
}

#[test]
fn a_disabled_rule_and_no_fuse_leave_the_graph_alone() {
    let mut g = residual_graph();
    let dump = g.dump().unwrap();
    let mut o = opts();
    o.fuse = FuseOptions { disabled: vec!["residual_rms_norm".into()], max_rewrites: None };
    let cx = compile(&mut g, &o).unwrap();
    assert!(cx.rewrites.is_empty());
    assert_eq!(g.dump().unwrap(), dump);
    let mut o = opts();
    o.no_fuse = true;
    compile(&mut g, &o).unwrap();
    assert_eq!(g.dump().unwrap(), dump);
}

#[test]
fn a_norm_of_anything_but_a_residual_is_not_fused() {
    let mut g = Graph::new();
    let x = g.input("x", Fact::konst(DType::F32, &[2, 8])).unwrap();
    let w = g.input("w", Fact::konst(DType::F32, &[8])).unwrap();
    let y = g.wire("norm", Op::RmsNorm(Norm { eps: 1e-6 }), &[x, w]).unwrap();
    g.output("y", y).unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert!(cx.rewrites.is_empty());
    assert_eq!(g.census().get(&OpKind::RmsNorm), Some(&1));
}

/// `ssd_scan(x, dt, A, rope(B, cos, sin), rope(C, cos_c, sin), state)` with `y`, the state and, with
/// `b_out`, the rotated B as graph outputs.
fn ssd_graph(separate_c_table: bool, b_out: bool) -> Graph {
    let mut g = Graph::new();
    let (b, s) = (Dim::sym("B"), Dim::sym("S"));
    let f = |dims: &[Dim]| Fact::new(DType::F32, dims.iter().cloned());
    let (h, n) = (Dim::konst(2), Dim::konst(4));
    let tok = [b.clone(), s.clone(), h.clone(), n.clone()];
    let x = g.input("x", f(&tok)).unwrap();
    let dt = g.input("dt", f(&[b.clone(), s.clone(), h.clone()])).unwrap();
    let a = g.input("a", f(std::slice::from_ref(&h))).unwrap();
    let bm = g.input("b", f(&tok)).unwrap();
    let c = g.input("c", f(&tok)).unwrap();
    let state = g.input("state", f(&[b.clone(), h, n.clone(), n.clone()])).unwrap();
    let table = [b, s, n];
    let cos = g.input("cos", f(&table)).unwrap();
    let sin = g.input("sin", f(&table)).unwrap();
    let cos_c = if separate_c_table { g.input("cos_c", f(&table)).unwrap() } else { cos };
    let rb = g.wire("b_rope", Op::Rope, &[bm, cos, sin]).unwrap();
    let rc = g.wire("c_rope", Op::Rope, &[c, cos_c, sin]).unwrap();
    let ssd = Ssd { heads: 2, head_dim: 4, state_dim: 4, chunk: 2, rope: false };
    let y = g.wire("scan", Op::SsdScan(ssd), &[x, dt, a, rb, rc, state]).unwrap();
    g.output("y", y).unwrap();
    g.output("state_out", ValueId { node: y.node, port: 1 }).unwrap();
    if b_out {
        g.output("b_rotated", rb).unwrap();
    }
    g
}

fn ssd_inputs(separate_c_table: bool) -> BTreeMap<String, Tensor> {
    let v = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
    };
    let (b, s) = (2, 3);
    let mut m = BTreeMap::from([
        ("x".to_string(), Tensor::f32(vec![b, s, 2, 4], v(b * s * 8, 1)).unwrap()),
        ("dt".to_string(), Tensor::f32(vec![b, s, 2], v(b * s * 2, 2)).unwrap()),
        ("a".to_string(), Tensor::f32(vec![2], vec![-0.5, -1.5]).unwrap()),
        ("b".to_string(), Tensor::f32(vec![b, s, 2, 4], v(b * s * 8, 3)).unwrap()),
        ("c".to_string(), Tensor::f32(vec![b, s, 2, 4], v(b * s * 8, 4)).unwrap()),
        ("state".to_string(), Tensor::f32(vec![b, 2, 4, 4], v(b * 32, 5)).unwrap()),
        ("cos".to_string(), Tensor::f32(vec![b, s, 4], v(b * s * 4, 6)).unwrap()),
        ("sin".to_string(), Tensor::f32(vec![b, s, 4], v(b * s * 4, 7)).unwrap()),
    ]);
    if separate_c_table {
        m.insert("cos_c".into(), Tensor::f32(vec![b, s, 4], v(b * s * 4, 8)).unwrap());
    }
    m
}

#[test]
fn ssd_rope_fires_and_keeps_the_scan_and_state_outputs() {
    let mut g = ssd_graph(false, false);
    let before = CpuExecutor::new(g.clone()).unwrap().run(ssd_inputs(false), &[]).unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert_eq!(cx.rewrites.get("ssd_rope"), Some(&1));
    let census = g.census();
    assert_eq!(census.get(&OpKind::Rope), None, "both rotations moved into the scan");
    let scan = g.find("scan.rope").expect("the fused scan");
    assert!(matches!(&g.node(scan).op, Op::SsdScan(s) if s.rope));
    assert_eq!(g.inputs_of(scan).len(), 8);
    let after = CpuExecutor::new(g).unwrap().run(ssd_inputs(false), &[]).unwrap();
    assert_eq!(before, after, "the fused scan rotates exactly as the Rope nodes did");
}

#[test]
fn ssd_rope_is_blocked_by_other_readers_and_by_different_tables() {
    for (separate, b_out) in [(true, false), (false, true)] {
        let mut g = ssd_graph(separate, b_out);
        let dump = g.dump().unwrap();
        let cx = compile(&mut g, &opts()).unwrap();
        assert_eq!(cx.rewrites.get("ssd_rope"), None, "separate tables {separate}, B read {b_out}");
        assert_eq!(g.dump().unwrap(), dump);
    }
    let mut g = ssd_graph(false, false);
    let mut o = opts();
    o.fuse.disabled = vec!["ssd_rope".into()];
    let cx = compile(&mut g, &o).unwrap();
    assert!(cx.rewrites.is_empty());
    assert_eq!(g.census().get(&OpKind::Rope), Some(&2));
}

/// `rope(rms_norm(x, w), cos, sin)`, with the normed heads also a graph output when `norm_out`.
fn norm_rope_graph(norm_out: bool) -> Graph {
    let mut g = Graph::new();
    let (b, s) = (Dim::sym("B"), Dim::sym("S"));
    let f = |dims: &[Dim]| Fact::new(DType::F32, dims.iter().cloned());
    let x = g.input("x", f(&[b.clone(), s.clone(), Dim::konst(3), Dim::konst(6)])).unwrap();
    let w = g.input("w", Fact::konst(DType::F32, &[6])).unwrap();
    let cos = g.input("cos", f(&[b.clone(), s.clone(), Dim::konst(6)])).unwrap();
    let sin = g.input("sin", f(&[b, s, Dim::konst(6)])).unwrap();
    let n = g.wire("q_norm", Op::RmsNorm(Norm { eps: 1e-6 }), &[x, w]).unwrap();
    let y = g.wire("q_rope", Op::Rope, &[n, cos, sin]).unwrap();
    g.output("y", y).unwrap();
    if norm_out {
        g.output("normed", n).unwrap();
    }
    g
}

fn norm_rope_inputs() -> BTreeMap<String, Tensor> {
    let v = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
    };
    let (b, s) = (2, 4);
    BTreeMap::from([
        ("x".to_string(), Tensor::f32(vec![b, s, 3, 6], v(b * s * 18, 1)).unwrap()),
        ("w".to_string(), Tensor::f32(vec![6], v(6, 2)).unwrap()),
        ("cos".to_string(), Tensor::f32(vec![b, s, 6], v(b * s * 6, 3)).unwrap()),
        ("sin".to_string(), Tensor::f32(vec![b, s, 6], v(b * s * 6, 4)).unwrap()),
    ])
}

#[test]
fn norm_rope_fires_and_keeps_the_numerics() {
    let mut g = norm_rope_graph(false);
    let before = CpuExecutor::new(g.clone()).unwrap().run(norm_rope_inputs(), &[]).unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert_eq!(cx.rewrites.get("norm_rope"), Some(&1));
    assert_eq!(
        g.dump().unwrap(),
        "%0 x = Input -> f32[B,S,3,6]\n%1 w = Input -> f32[6]\n%2 cos = Input -> f32[B,S,6]\n\
         %3 sin = Input -> f32[B,S,6]\n\
         %6 q_rope.norm = NormRope(Norm { eps: 1e-6 })(%0, %1, %2, %3) -> f32[B,S,3,6]\noutput y = %6\n"
    );
    let after = CpuExecutor::new(g).unwrap().run(norm_rope_inputs(), &[]).unwrap();
    assert_eq!(before, after, "the fused op computes exactly the norm then the rotation");
}

#[test]
fn norm_rope_is_blocked_by_another_reader_of_the_norm() {
    let mut g = norm_rope_graph(true);
    let dump = g.dump().unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert_eq!(cx.rewrites.get("norm_rope"), None);
    assert_eq!(g.dump().unwrap(), dump);
    let mut g = norm_rope_graph(false);
    let mut o = opts();
    o.fuse.disabled = vec!["norm_rope".into()];
    assert!(compile(&mut g, &o).unwrap().rewrites.is_empty());
    assert_eq!(g.census().get(&OpKind::Rope), Some(&1));
}

/// `y = s + expert_mix(x, scores, ids, down, up)` (or the operands swapped), with the mixture itself also an output
/// when `mix_out`.
fn mix_graph(swapped: bool, mix_out: bool) -> Graph {
    use cheems::ir::op::{Act, ExpertAct, ExpertMix};
    let mut g = Graph::new();
    let f = |dims: &[usize]| Fact::konst(DType::F32, dims);
    let x = g.input("x", f(&[1, 3, 8])).unwrap();
    let scores = g.input("scores", f(&[1, 3, 2, 2])).unwrap();
    let ids = g.input("ids", Fact::konst(DType::I64, &[1, 3, 2, 2])).unwrap();
    let down = g.input("down", f(&[5, 8])).unwrap();
    let up = g.input("up", f(&[5, 8])).unwrap();
    let s = g.input("s", f(&[1, 3, 8])).unwrap();
    let e =
        ExpertMix { act: Act::Silu, order: ExpertAct::BeforeSoftmax, norm_topk: false, add: false };
    let mix = g.wire("mix", Op::ExpertMix(e), &[x, scores, ids, down, up]).unwrap();
    let ins = if swapped { [mix, s] } else { [s, mix] };
    let y = g.wire("sum", Op::Add, &ins).unwrap();
    g.output("y", y).unwrap();
    if mix_out {
        g.output("mix", mix).unwrap();
    }
    g
}

fn mix_inputs() -> BTreeMap<String, Tensor> {
    let v = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
    };
    let ids: Vec<i64> = (0..12).map(|i| (i * 3 % 5) as i64).collect();
    BTreeMap::from([
        ("x".to_string(), Tensor::f32(vec![1, 3, 8], v(24, 1)).unwrap()),
        ("scores".to_string(), Tensor::f32(vec![1, 3, 2, 2], v(12, 2)).unwrap()),
        ("ids".to_string(), Tensor::i64(vec![1, 3, 2, 2], ids).unwrap()),
        ("down".to_string(), Tensor::f32(vec![5, 8], v(40, 3)).unwrap()),
        ("up".to_string(), Tensor::f32(vec![5, 8], v(40, 4)).unwrap()),
        ("s".to_string(), Tensor::f32(vec![1, 3, 8], v(24, 5)).unwrap()),
    ])
}

#[test]
fn expert_mix_add_fires_in_either_operand_order() {
    for swapped in [false, true] {
        let mut g = mix_graph(swapped, false);
        let before = CpuExecutor::new(g.clone()).unwrap().run(mix_inputs(), &[]).unwrap();
        let cx = compile(&mut g, &opts()).unwrap();
        assert_eq!(cx.rewrites.get("expert_mix_add"), Some(&1), "swapped {swapped}");
        assert_eq!(g.census().get(&OpKind::Add), None);
        let mix = g.find("mix.add").expect("the fused mixture");
        assert!(matches!(&g.node(mix).op, Op::ExpertMix(e) if e.add));
        let after = CpuExecutor::new(g).unwrap().run(mix_inputs(), &[]).unwrap();
        assert_eq!(before, after, "the fused mixture adds exactly as the Add did");
    }
}

#[test]
fn expert_mix_add_is_blocked_when_the_mixture_has_another_reader() {
    let mut g = mix_graph(false, true);
    let dump = g.dump().unwrap();
    let cx = compile(&mut g, &opts()).unwrap();
    assert_eq!(cx.rewrites.get("expert_mix_add"), None);
    assert_eq!(g.dump().unwrap(), dump);
    let mut g = mix_graph(false, false);
    let mut o = opts();
    o.fuse.disabled = vec!["expert_mix_add".into()];
    assert!(compile(&mut g, &o).unwrap().rewrites.is_empty());
}

/// `m = dynamic_mask_values(linear(x, w (, b)), A)`, with the linear's `dt` also an output when `dt_out`.
fn mask_graph(bias: bool, dt_out: bool) -> Graph {
    let mut g = Graph::new();
    let f = |dims: &[usize]| Fact::konst(DType::F32, dims);
    let x =
        g.input("x", Fact::new(DType::F32, [Dim::sym("B"), Dim::sym("S"), Dim::konst(6)])).unwrap();
    let w = g.input("w", f(&[4, 6])).unwrap();
    let a = g.input("A", f(&[4])).unwrap();
    let mut ins = vec![x, w];
    if bias {
        ins.push(g.input("b", f(&[4])).unwrap());
    }
    let dt = g.wire("dt", Op::Linear { bias }, &ins).unwrap();
    let m = g.wire("mask", Op::DynamicMaskValues, &[dt, a]).unwrap();
    g.output("m", m).unwrap();
    if dt_out {
        g.output("dt", dt).unwrap();
    }
    g
}

fn mask_inputs() -> BTreeMap<String, Tensor> {
    let v = |n: usize, k: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 250.0 - 2.0).collect()
    };
    BTreeMap::from([
        ("x".to_string(), Tensor::f32(vec![2, 3, 6], v(36, 1)).unwrap()),
        ("w".to_string(), Tensor::f32(vec![4, 6], v(24, 2)).unwrap()),
        ("A".to_string(), Tensor::f32(vec![4], v(4, 3)).unwrap()),
        ("b".to_string(), Tensor::f32(vec![4], v(4, 4)).unwrap()),
    ])
}

#[test]
fn mask_values_fuse_with_their_projection_with_and_without_bias() {
    for bias in [false, true] {
        let rule = if bias { "mask_values_biased_linear" } else { "mask_values_linear" };
        let mut g = mask_graph(bias, false);
        let mut ins = mask_inputs();
        if !bias {
            ins.remove("b");
        }
        let before = CpuExecutor::new(g.clone()).unwrap().run(ins.clone(), &[]).unwrap();
        let cx = compile(&mut g, &opts()).unwrap();
        assert_eq!(cx.rewrites.get(rule), Some(&1), "bias {bias}: {:?}", cx.rewrites);
        let census = g.census();
        assert_eq!(census.get(&OpKind::Linear), None, "bias {bias}");
        assert_eq!(census.get(&OpKind::DynamicMaskValues), None, "bias {bias}");
        let fused = g.find("mask.projected").expect("the fused mask values");
        assert_eq!(g.node(fused).op, Op::ProjectedMaskValues { bias });
        let after = CpuExecutor::new(g).unwrap().run(ins, &[]).unwrap();
        assert_eq!(before, after, "bias {bias}: the fused mask values are the same f32 values");
    }
}

#[test]
fn mask_values_keep_a_projection_read_elsewhere() {
    for bias in [false, true] {
        let mut g = mask_graph(bias, true);
        let dump = g.dump().unwrap();
        let cx = compile(&mut g, &opts()).unwrap();
        assert!(cx.rewrites.is_empty(), "bias {bias}: {:?}", cx.rewrites);
        assert_eq!(g.dump().unwrap(), dump);
    }
    let mut g = mask_graph(false, false);
    let mut o = opts();
    o.fuse.disabled = vec!["mask_values_linear".into()];
    assert!(compile(&mut g, &o).unwrap().rewrites.is_empty());
}

#[test]
fn max_rewrites_bisects() {
    let ck = Checkpoint::open(&cases()[0]).unwrap();
    let mut g = build(&ck.config, &ck.weights).unwrap().graph;
    let mut o = opts();
    o.no_fuse = false;
    o.fuse.max_rewrites = Some(1);
    let cx = compile(&mut g, &o).unwrap();
    assert_eq!(
        cx.rewrites.iter().filter(|(k, _)| **k != "pack_linears").map(|(_, v)| v).sum::<usize>(),
        1
    );
}

/// f32 logits after packing: packing changes the GEMM's blocking, i.e. only the f32 summation order, so the
/// executor's own fixture tolerance applies (the fused norm alone is checked bit for bit below).
const PACKED_ATOL_F32: f32 = 1e-4;

fn logits_of(model: &cheems::model::build::Model, inputs: &Inputs) -> (Tensor, Tensor) {
    let out = run(model, &CpuExecutor::new(model.graph.clone()).unwrap(), inputs, &[]).unwrap();
    (out.logits, out.decode_logits.unwrap())
}

/// On every fixture: every layer's two norms fuse with the residual before them (the first norm of layer 0 reads
/// the embedding, so it stays), the q/k norms with the rotation after them, every SSD layer's scan takes over the
/// RoPE of its B and C, every dynamic mask takes over the projection of its keys' `dt`, sibling projections are
/// packed, and the logits do not move: bit for bit with the
/// fusion rules alone, within the f32 tolerance with packing.
#[test]
fn every_fixture_fuses_and_keeps_its_logits() {
    let (mut norm_ropes, mut dynamic_masks) = (0, 0);
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let ck = Checkpoint::open(&case).unwrap();
        let model = build(&ck.config, &ck.weights).unwrap();
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let (logits, decode) = logits_of(&model, &inputs);
        let attn_layers = model
            .config
            .layers
            .iter()
            .filter(|k| **k == cheems::model::config::LayerKind::Attention)
            .count();
        let ac = &model.config.attention;
        let (qk_fused, qk_left) = match (ac.qk_norm, ac.rope_keys) {
            (false, _) => (0, 0),
            (true, true) => (2 * attn_layers, 0),
            (true, false) => (attn_layers, attn_layers),
        };

        let mut fused = model.clone();
        let mut o = opts();
        o.fuse.disabled = vec!["pack_linears".into()];
        let cx = compile(&mut fused.graph, &o).unwrap();
        let census = fused.graph.census();
        assert_eq!(
            census.get(&OpKind::ResidualRmsNorm).copied().unwrap_or(0),
            2 * model.config.layers.len(),
            "{name}: {:?}",
            cx.rewrites
        );
        assert_eq!(
            census.get(&OpKind::RmsNorm).copied().unwrap_or(0),
            1 + qk_left,
            "{name}: only layer 0's first norm (and k norms of unrotated keys) remain"
        );
        assert_eq!(cx.rewrites.get("norm_rope").copied().unwrap_or(0), qk_fused, "{name}");
        assert_eq!(census.get(&OpKind::NormRope).copied().unwrap_or(0), qk_fused, "{name}");
        norm_ropes += qk_fused;
        assert!(!census.contains_key(&OpKind::SliceLast), "{name}: packing was disabled");
        let ssd_layers = model
            .config
            .layers
            .iter()
            .filter(|k| **k == cheems::model::config::LayerKind::Ssd)
            .count();
        assert_eq!(cx.rewrites.get("ssd_rope").copied().unwrap_or(0), ssd_layers, "{name}");
        let ropes = |g: &Graph| g.census().get(&OpKind::Rope).copied().unwrap_or(0);
        assert_eq!(ropes(&fused.graph), ropes(&model.graph) - 2 * ssd_layers - qk_fused, "{name}");
        let mixes = model.graph.census().get(&OpKind::ExpertMix).copied().unwrap_or(0);
        assert_eq!(cx.rewrites.get("expert_mix_add").copied().unwrap_or(0), mixes, "{name}");
        let masks = model.graph.census().get(&OpKind::DynamicMaskValues).copied().unwrap_or(0);
        let projected = ["mask_values_linear", "mask_values_biased_linear"]
            .map(|r| cx.rewrites.get(r).copied().unwrap_or(0));
        assert_eq!(projected.iter().sum::<usize>(), masks, "{name}: every mask's projection fused");
        assert_eq!(census.get(&OpKind::ProjectedMaskValues).copied().unwrap_or(0), masks, "{name}");
        dynamic_masks += masks;
        let (l, d) = logits_of(&fused, &inputs);
        assert_eq!(l, logits, "{name}: fused logits differ");
        assert_eq!(d, decode, "{name}: fused decode logits differ");

        let mut packed = model.clone();
        let cx = compile(&mut packed.graph, &opts()).unwrap();
        assert!(
            cx.rewrites.get("pack_linears").copied().unwrap_or(0) >= 1,
            "{name}: no linears packed"
        );
        let (l, d) = logits_of(&packed, &inputs);
        let keep =
            |bi: usize, t: usize| inputs.attention_mask.as_ref().is_none_or(|m| m[bi][t] == 1);
        let (worst, _) = compare_rows(&l, &logits, keep);
        assert!(worst <= PACKED_ATOL_F32, "{name}: packed logits moved by {worst:e}");
        let (worst, _) = compare_rows(&d, &decode, |_, _| true);
        assert!(worst <= PACKED_ATOL_F32, "{name}: packed decode logits moved by {worst:e}");
    }
    assert!(norm_ropes > 0, "some fixture has q/k norms");
    assert!(dynamic_masks > 0, "some fixture has a dynamic mask");
}

#[test]
fn packing_merges_sibling_projections() {
    let case = cases().into_iter().find(|c| c.ends_with("cheems-v1-dense")).unwrap();
    let ck = Checkpoint::open(&case).unwrap();
    let mut g = build(&ck.config, &ck.weights).unwrap().graph;
    let mut o = opts();
    o.fuse.disabled = vec!["residual_rms_norm".into(), "add_rms_norm".into()];
    let cx = compile(&mut g, &o).unwrap();
    // 2 SSD layers (c, b, dt, x from one input), 2 attention layers (q, k, v), 4 MLPs (gate, up inside GatedMlp:
    // not linears, so not packed).
    assert_eq!(cx.rewrites.get("pack_linears"), Some(&4));
    let packed = g.find("model.layers.0.ssd.c_proj.packed").expect("packed SSD projections");
    assert_eq!(g.node(packed).outputs[0].to_string(), "f32[B,S,196]");
    assert!(g.find("model.layers.0.ssd.dt_proj.slice").is_some());
}
