//! `cheems dump` with the pass flags: the graph after chosen passes, and errors naming what exists.

mod common;

use std::process::{Command, Output};

fn dump(args: &[&str]) -> Output {
    Command::new(common::cheems_bin())
        .args(["dump", "models/cheems-tiny"])
        .args(args)
        .output()
        .unwrap()
}

/// The sections of a dump, by the pass named in each `# after pass P` header.
fn sections(out: &Output) -> Vec<(String, String)> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut parts = Vec::new();
    for block in text.split("# after pass ").skip(1) {
        let (pass, body) = block.split_once('\n').unwrap();
        parts.push((pass.to_string(), body.to_string()));
    }
    parts
}

#[test]
fn dump_after_prints_the_graph_after_each_named_pass_in_pipeline_order() {
    let out = dump(&["--target", "cuda", "--dump-after", "fuse", "--dump-after", "pack_linears"]);
    let s = sections(&out);
    let names: Vec<&str> = s.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["pack_linears", "fuse"]);
    let (packed, fused) = (&s[0].1, &s[1].1);
    assert!(packed.contains("packed_weight") && !packed.contains("ResidualRmsNorm"));
    assert!(fused.contains("packed_weight") && fused.contains("ResidualRmsNorm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("passes run: pack_linears, fuse, lower"), "{stderr}");
}

#[test]
fn stop_after_ends_the_pipeline_and_the_graph_as_built_has_no_pass_applied() {
    let s = sections(&dump(&["--target", "cuda:sm_90", "--stop-after", "pack_linears"]));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, "pack_linears");
    assert!(s[0].1.contains("packed_weight") && !s[0].1.contains("ResidualRmsNorm"));
    let built = dump(&[]);
    assert!(built.status.success());
    let text = String::from_utf8(built.stdout).unwrap();
    assert!(!text.contains("# after pass") && !text.contains("packed_weight"));
}

#[test]
fn disabled_rules_and_rewrite_limits_reach_the_fusion_pass() {
    let full = sections(&dump(&["--target", "cuda"]));
    let count = |s: &[(String, String)]| s[0].1.matches("ResidualRmsNorm").count();
    let fused = |s: &[(String, String)]| {
        let g = &s[0].1;
        ["ResidualRmsNorm", "rope: true", "add: true"]
            .iter()
            .map(|m| g.matches(m).count())
            .sum::<usize>()
    };
    assert!(count(&full) > 1);
    assert_eq!(fused(&sections(&dump(&["--target", "cuda", "--max-rewrites", "1"]))), 1);
    let off = sections(&dump(&["--target", "cuda", "--disable-rule", "residual_rms_norm"]));
    assert_eq!(count(&off), 0);
    assert!(fused(&off) > 0, "the other rules still fire");
    let none = sections(&dump(&["--target", "cuda", "--no-fuse"]));
    assert!(count(&none) == 0 && !none[0].1.contains("packed_weight"));
}

#[test]
fn unknown_passes_and_rules_are_errors_that_list_what_exists() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--target", "cuda", "--stop-after", "fusion"],
            "no such pass in this pipeline (pack_linears, fuse, lower)",
        ),
        (&["--target", "cuda", "--no-fuse", "--dump-after", "fuse"], "packing and fusion are off"),
        (&["--target", "cpu", "--dump-after", "fuse"], "(lower; packing and fusion are off)"),
        (
            &["--target", "cuda", "--disable-rule", "rms"],
            "no such rule; the rules are pack_linears, residual_rms_norm",
        ),
        (&["--dump-after", "fuse"], "--dump-after selects passes: give --target"),
    ];
    for (args, want) in cases {
        let out = dump(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn compile_refuses_an_unknown_rule_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("tiny.cheems");
    let out = Command::new(common::cheems_bin())
        .args([
            "compile",
            "models/cheems-tiny",
            "--target",
            "cuda:sm_90",
            "--disable-rule",
            "fuse_all",
            "-o",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--disable-rule fuse_all: no such rule; the rules are"), "{stderr}");
    assert!(!out_dir.exists());
}

#[test]
fn bench_takes_the_fusion_switches_for_cuda_checkpoints_only() {
    let bench = |args: &[&str]| {
        Command::new(common::cheems_bin()).arg("bench").args(args).output().unwrap()
    };
    let out = bench(&["models/cheems-tiny", "--target", "cpu", "--disable-rule", "norm_rope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("CPU executor never fuses"), "{stderr}");
    let tmp = tempfile::tempdir().unwrap();
    let art = tmp.path().join("tiny.cheems");
    let out = Command::new(common::cheems_bin())
        .args(["compile", "models/cheems-tiny", "--target", "cpu", "-o"])
        .arg(&art)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bench(&[art.to_str().unwrap(), "--target", "cuda", "--no-fuse"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("compiled already"), "{stderr}");
}
