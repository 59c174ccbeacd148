//! Every golden fixture (outputs of the reference implementations) through the library API and the `cheems run`
//! CLI: prefill logits, decode logits, every layer's hidden states and the final norm output.

mod common;

use cheems::exec::cpu::CpuExecutor;
use cheems::model::build::{build_with, BuildOptions};
use cheems::runner::{load, run, Inputs};
use common::{cases, cheems_bin, compare_rows, read_safetensors};

/// f32 logits: max |Δ| over unpadded rows. The reference's own f64-vs-f32 spread is at most 1.9e-5 on these
/// cases (fixtures README), so 1e-4 leaves 5× room for a different but valid f32 summation order.
const LOGITS_ATOL_F32: f32 = 1e-4;
/// f32 logits and hidden states: max |Δ| relative to the largest reference magnitude of the tensor.
const REL_F32: f32 = 1e-5;

fn check(case: &std::path::Path) -> Vec<String> {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
    let expected = read_safetensors(&case.join("expected.safetensors"));
    let loaded = load(case).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let layers = loaded.model.config.layers.len();
    let taps: Vec<String> = (0..layers)
        .map(|i| format!("layers.{i}.residual2"))
        .chain(["final_norm".to_string()])
        .collect();
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let out = run(&loaded.model, &loaded.exec, &inputs, &tap_refs)
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let mask = inputs.attention_mask.clone();
    let keep = |b: usize, t: usize| mask.as_ref().is_none_or(|m| m[b][t] == 1);
    let mut failures = Vec::new();
    let mut judge =
        |what: &str, got: &cheems::ir::Tensor, want: &cheems::ir::Tensor, atol: Option<f32>| {
            let (worst, scale) = compare_rows(got, want, keep);
            let rel = worst / scale.max(f32::MIN_POSITIVE);
            let ok = atol.is_none_or(|a| worst <= a) && rel <= REL_F32;
            eprintln!(
                "{name:28} {what:24} max|Δ| {worst:.3e}  rel {rel:.3e}  (max|ref| {scale:.3e}) {}",
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{name} {what}: max|Δ| {worst:.3e} rel {rel:.3e}"));
            }
        };
    judge("logits", &out.logits, &expected["logits"], Some(LOGITS_ATOL_F32));
    for i in 0..layers {
        judge(
            &format!("hidden_states_layer{i}"),
            &out.taps[&taps[i]],
            &expected[&format!("hidden_states_layer{i}")],
            None,
        );
    }
    judge("final_norm_output", &out.taps["final_norm"], &expected["final_norm_output"], None);
    match (&out.decode_logits, expected.get("decode_logits")) {
        (Some(got), Some(want)) => {
            let (worst, scale) = compare_rows(got, want, |_, _| true);
            let rel = worst / scale;
            let ok = worst <= LOGITS_ATOL_F32 && rel <= REL_F32;
            eprintln!(
                "{name:28} {:24} max|Δ| {worst:.3e}  rel {rel:.3e}  {}",
                "decode_logits",
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!("{name} decode_logits: max|Δ| {worst:.3e} rel {rel:.3e}"));
            }
        }
        (None, None) => {}
        (g, w) => failures.push(format!(
            "{name}: decode logits produced {} / expected {}",
            g.is_some(),
            w.is_some()
        )),
    }
    failures
}

#[test]
fn every_fixture_matches_the_reference_through_the_library() {
    let failures: Vec<String> = cases().iter().flat_map(|c| check(c)).collect();
    assert!(failures.is_empty(), "fixture mismatches:\n{}", failures.join("\n"));
}

#[test]
fn every_fixture_matches_the_reference_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let out = tmp.path().join(format!("{name}.safetensors"));
        let status = std::process::Command::new(cheems_bin())
            .arg("run")
            .arg(&case)
            .arg("--inputs")
            .arg(case.join("inputs.json"))
            .arg("--out")
            .arg(&out)
            .arg("--json")
            .output()
            .unwrap();
        assert!(status.status.success(), "{name}: {}", String::from_utf8_lossy(&status.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(summary["out"], out.display().to_string());
        let got = read_safetensors(&out);
        let want = read_safetensors(&case.join("expected.safetensors"));
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let keep = |b: usize, t: usize| inputs.attention_mask.as_ref().is_none_or(|m| m[b][t] == 1);
        let (worst, _) = compare_rows(&got["logits"], &want["logits"], keep);
        assert!(worst <= LOGITS_ATOL_F32, "{name}: CLI logits max|Δ| {worst:e}");
        let (worst, _) = compare_rows(&got["decode_logits"], &want["decode_logits"], |_, _| true);
        assert!(worst <= LOGITS_ATOL_F32, "{name}: CLI decode_logits max|Δ| {worst:e}");
        assert_eq!(got.len(), 2, "{name}: exactly logits and decode_logits are written");
    }
}

/// The export form (positions and RoPE frequencies computed in the graph, per-key mask values recomputed from
/// the cached values, no model-wide state) computes the same logits.
#[test]
fn every_fixture_matches_the_reference_in_the_stateless_export_form() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let inputs = Inputs::read(&case.join("inputs.json")).unwrap();
        let want = read_safetensors(&case.join("expected.safetensors"));
        let ck = cheems::model::checkpoint::Checkpoint::open(&case).unwrap();
        let model = build_with(&ck.config, &ck.weights, BuildOptions { stateless: true }).unwrap();
        assert!(
            model.graph.find("position_ids").is_none()
                && model.graph.find("past.rope_len").is_none()
        );
        let exec = CpuExecutor::new(model.graph.clone()).unwrap();
        let out = run(&model, &exec, &inputs, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let keep = |b: usize, t: usize| inputs.attention_mask.as_ref().is_none_or(|m| m[b][t] == 1);
        let (worst, _) = compare_rows(&out.logits, &want["logits"], keep);
        assert!(worst <= LOGITS_ATOL_F32, "{name}: stateless logits max|Δ| {worst:e}");
        let (worst, _) =
            compare_rows(out.decode_logits.as_ref().unwrap(), &want["decode_logits"], |_, _| true);
        assert!(worst <= LOGITS_ATOL_F32, "{name}: stateless decode_logits max|Δ| {worst:e}");
    }
}
