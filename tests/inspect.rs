//! `cheems inspect --memory`: the activation plan of one call, through the CLI.

mod common;

use std::process::Command;

fn cheems() -> Command {
    Command::new(common::cheems_bin())
}

fn memory(args: &[&str]) -> serde_json::Value {
    let out = cheems()
        .args(["inspect", "models/cheems-tiny", "--memory", "--json"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["memory"].clone()
}

#[test]
fn the_plan_reuses_bytes_and_grows_with_the_call() {
    let short = memory(&["--tokens", "16"]);
    let long = memory(&["--tokens", "256"]);
    let u = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    for m in [&short, &long] {
        assert!(u(m, "peak_live_bytes") <= u(m, "arena_bytes"));
        assert!(u(m, "arena_bytes") < u(m, "unplanned_bytes"), "{m}");
        assert!(u(m, "state_bytes_after") > 0);
    }
    assert!(u(&long, "arena_bytes") > u(&short, "arena_bytes"));
    assert!(u(&long, "state_bytes_after") > u(&short, "state_bytes_after"));
    let f32 = memory(&["--tokens", "256", "--dtype", "f32"]);
    assert!(u(&f32, "arena_bytes") > u(&long, "arena_bytes"));
}

#[test]
fn an_empty_call_is_refused() {
    let out = cheems()
        .args(["inspect", "models/cheems-tiny", "--memory", "--batch", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch"));
}
