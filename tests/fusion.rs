//! Fusion rules and packing: each fires where it should, is blocked where it must be, and leaves the numerics of
//! every fixture unchanged on the CPU executor.

mod common;

use cheems::exec::cpu::CpuExecutor;
use cheems::ir::op::Norm;
use cheems::ir::{DType, Dim, Fact, Graph, Op, OpKind, Tensor};
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
/// the embedding, so it stays), sibling projections are packed, and the logits do not move: bit for bit with the
/// fusion rules alone, within the f32 tolerance with packing.
#[test]
fn every_fixture_fuses_and_keeps_its_logits() {
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
        let qk_norms = if model.config.attention.qk_norm { 2 * attn_layers } else { 0 };

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
            1 + qk_norms,
            "{name}: only layer 0's first norm (and q/k norms) remain"
        );
        assert!(!census.contains_key(&OpKind::SliceLast), "{name}: packing was disabled");
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
