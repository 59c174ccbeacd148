//! The shipped trained checkpoints (`models/`) against the numbers PyTorch recorded for them: MQAR per-example
//! counts on a subset of the evaluation set, the generator's fingerprint on the whole set, and the perplexity
//! windows of the language model; plus `cheems generate` and `cheems eval` through the CLI.

mod common;

use common::cheems_bin;

use cheems::eval::mqar::{evaluate, examples, fingerprint, MqarMeta};
use cheems::eval::ppl::perplexity;
use cheems::eval::{load_tokenizer, sample};
use cheems::runner::load;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `$CHEEMS_MODELS`, else `models` relative to the working directory (the crate root under `cargo test`).
fn models_dir() -> PathBuf {
    std::env::var_os("CHEEMS_MODELS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models"))
}

fn mqar_checkpoints() -> Vec<PathBuf> {
    let dir = models_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("mqar.json").is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no MQAR checkpoints under {}", dir.display());
    v
}

fn lm() -> PathBuf {
    models_dir().join("cheems-py")
}

#[test]
fn mqar_generator_reproduces_every_recorded_evaluation_set() {
    for ckpt in mqar_checkpoints() {
        let meta = MqarMeta::read(&ckpt).unwrap();
        let rec =
            meta.pytorch.as_ref().unwrap_or_else(|| panic!("{}: no pytorch block", ckpt.display()));
        let set = examples(&meta.task, rec.seed, rec.examples).unwrap();
        assert_eq!(fingerprint(&set), rec.fnv1a64, "{}: generated examples differ", ckpt.display());
        assert_eq!(rec.correct.len(), rec.examples);
    }
}

#[test]
fn mqar_counts_equal_pytorch_example_by_example() {
    for ckpt in mqar_checkpoints() {
        let meta = MqarMeta::read(&ckpt).unwrap();
        let rec = meta.pytorch.clone().unwrap();
        let n = if meta.task.seq_len > 256 { 6 } else { 12 };
        let loaded = load(&ckpt).unwrap();
        let r = evaluate(&loaded, &meta, rec.seed, n, 6, false).unwrap();
        assert_eq!(r.correct, rec.correct[..n], "{}: per-example correct counts", ckpt.display());
        let c = r.pytorch.unwrap();
        assert_eq!((c.compared, c.identical), (n, n));
    }
}

#[test]
fn lm_perplexity_windows_equal_pytorch() {
    let ckpt = lm();
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("ppl.json")).unwrap()).unwrap();
    let tokenizer = load_tokenizer(&ckpt).unwrap();
    let text = std::fs::read_to_string(ckpt.join("heldout.txt")).unwrap();
    let ids: Vec<i64> = tokenizer
        .encode(text.as_str(), false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect();
    let windows = rec["windows"].as_array().unwrap();
    let total_tokens: u64 = windows.iter().map(|w| w["tokens"].as_u64().unwrap() - 1).sum();
    assert_eq!(total_tokens, rec["predicted"].as_u64().unwrap());
    let context = rec["context"].as_u64().unwrap() as usize;
    let loaded = load(&ckpt).unwrap();
    let r = perplexity(&loaded, &ids, context, Some(2), false).unwrap();
    for (got, want) in r.windows.iter().zip(windows) {
        assert_eq!(got.start as u64, want["start"].as_u64().unwrap());
        assert_eq!(got.tokens as u64, want["tokens"].as_u64().unwrap());
        let want = want["nll"].as_f64().unwrap();
        let rel = (got.nll - want).abs() / want.abs();
        assert!(
            rel < 1e-4,
            "window at {}: cheems NLL {} vs PyTorch {want} (rel {rel:e})",
            got.start,
            got.nll
        );
    }
}

#[test]
fn greedy_decoding_equals_pytorch_cached_decoding() {
    let ckpt = lm();
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("ppl.json")).unwrap()).unwrap();
    let g = &rec["greedy"];
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
    };
    let prompt = ids(&g["prompt_ids"]);
    let tokenizer = load_tokenizer(&ckpt).unwrap();
    let text = g["prompt"].as_str().unwrap();
    let encoded: Vec<i64> =
        tokenizer.encode(text, false).unwrap().get_ids().iter().map(|&i| i as i64).collect();
    assert_eq!(prompt[1..], encoded[..], "prompt tokenization");
    let want = ids(&g["ids"]);
    let loaded = load(&ckpt).unwrap();
    let eos = loaded.model.config.eos_token_id;
    let params = sample::SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };
    let mut s = sample::Sampler::new(params).unwrap();
    let got =
        sample::generate(&loaded.model, &loaded.exec, &prompt, want.len(), &mut s, eos, |_| Ok(()))
            .unwrap()
            .ids;
    assert_eq!(got, want);
}

#[test]
fn generation_is_deterministic_for_a_seed() {
    let ckpt = lm();
    let loaded = load(&ckpt).unwrap();
    let tokenizer = load_tokenizer(&ckpt).unwrap();
    let prompt: Vec<i64> = tokenizer
        .encode("def add(a, b):\n", false)
        .unwrap()
        .get_ids()
        .iter()
        .map(|&i| i as i64)
        .collect();
    let run = |seed| {
        let params = sample::SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.95, seed };
        let mut s = sample::Sampler::new(params).unwrap();
        sample::generate(&loaded.model, &loaded.exec, &prompt, 12, &mut s, None, |_| Ok(()))
            .unwrap()
            .ids
    };
    let a = run(5);
    assert_eq!(a.len(), 12);
    assert_eq!(a, run(5));
    assert!((0..4).any(|s| run(100 + s) != a), "different seeds should give different samples");
}

fn generate(args: &[&str]) -> std::process::Output {
    Command::new(cheems_bin()).arg("generate").args(args).output().unwrap()
}

#[test]
fn generate_cli_streams_the_prompt_and_continuation() {
    let ckpt = lm();
    let ckpt = ckpt.to_str().unwrap();
    let args = [ckpt, "--prompt", "class Stack:\n", "--max-tokens", "16", "--seed", "3"];
    let a = generate(&args);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let text = String::from_utf8(a.stdout.clone()).unwrap();
    assert!(text.starts_with("class Stack:\n"), "{text}");
    assert!(String::from_utf8_lossy(&a.stderr).contains("tokens/s"));
    assert_eq!(generate(&args).stdout, a.stdout, "same seed, same text");
}

#[test]
fn generate_cli_rejects_bad_requests_clearly() {
    let lm = lm();
    let lm = lm.to_str().unwrap();
    let no_tok = models_dir().join("cheems-tiny");
    let cases: [(Vec<&str>, &str); 5] = [
        (vec![no_tok.to_str().unwrap()], "tokenizer.json"),
        (vec![lm, "--prompt", ""], "prompt is empty"),
        (vec![lm, "--temperature", "-1"], "--temperature"),
        (vec![lm, "--top-p", "0"], "--top-p"),
        (vec!["/nonexistent/ckpt"], "config.json missing"),
    ];
    for (args, needle) in cases {
        let out = generate(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(err.contains(needle), "{args:?}: error {err:?} should mention {needle:?}");
    }
}

#[test]
fn eval_cli_reports_json() {
    let ckpt = mqar_checkpoints().remove(0);
    let out = Command::new(cheems_bin())
        .args(["eval", "mqar"])
        .arg(&ckpt)
        .args(["--examples", "3", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["examples"], 3);
    assert_eq!(v["pytorch"]["identical"], 3);
    let text = lm().join("heldout.txt");
    let out = Command::new(cheems_bin())
        .args(["eval", "ppl"])
        .arg(lm())
        .arg("--text")
        .arg(&text)
        .args(["--windows", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ppl"].as_f64().unwrap() > 1.0);
    let missing = Command::new(cheems_bin())
        .args(["eval", "ppl"])
        .arg(lm())
        .args(["--text", "/nonexistent.txt"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.txt"));
}

#[test]
fn checkpoints_without_mqar_json_are_refused_by_eval_mqar() {
    let out = Command::new(cheems_bin()).args(["eval", "mqar"]).arg(lm()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mqar.json"));
    assert!(Path::new(&lm()).join("tokenizer.json").is_file());
}
