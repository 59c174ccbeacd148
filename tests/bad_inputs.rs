//! Bad run inputs and checkpoints that load but do not build: each gives a clear error naming the file, field or
//! tensor, a non-zero exit from the CLI, and never a partial output file.

mod common;

use common::{cheems_bin, fixtures_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cheems run` on `ckpt` with `inputs` written to a file; returns (success, stderr, out path).
fn run_cli(
    ckpt: &Path,
    inputs: &[u8],
    out_existing: Option<&[u8]>,
) -> (bool, String, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let inp = tmp.path().join("inputs.json");
    std::fs::write(&inp, inputs).unwrap();
    let out = tmp.path().join("out.safetensors");
    if let Some(bytes) = out_existing {
        std::fs::write(&out, bytes).unwrap();
    }
    let o = Command::new(cheems_bin())
        .arg("run")
        .arg(ckpt)
        .arg("--inputs")
        .arg(&inp)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string(), out, tmp)
}

fn case() -> PathBuf {
    fixtures_dir().join("hf-doge-dense")
}

fn expect_error(inputs: &str, needles: &[&str]) {
    let (ok, err, out, _tmp) = run_cli(&case(), inputs.as_bytes(), None);
    assert!(!ok, "expected a failure for {inputs}");
    for n in needles {
        assert!(err.contains(n), "stderr for {inputs} lacks `{n}`:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "no output file may be written on failure");
}

#[test]
fn out_of_range_ids_name_the_position() {
    expect_error(r#"{"input_ids": [[1, 2, 192]]}"#, &["input_ids[0][2]", "192", "[0, 192)"]);
    expect_error(r#"{"input_ids": [[1, -1]]}"#, &["input_ids[0][1]", "-1"]);
    expect_error(
        r#"{"input_ids": [[1, 2]], "decode_input_ids": [[5000]]}"#,
        &["decode_input_ids[0][0]", "5000"],
    );
}

#[test]
fn empty_and_ragged_inputs() {
    expect_error(r#"{"input_ids": []}"#, &["`input_ids` is empty"]);
    expect_error(r#"{"input_ids": [[]]}"#, &["`input_ids[0]` is empty"]);
    expect_error(r#"{"input_ids": [[1, 2], [3]]}"#, &["`input_ids[1]` has 1 tokens"]);
    expect_error(
        r#"{"input_ids": [[1, 2]], "attention_mask": [[1]]}"#,
        &["attention_mask", "1×1", "1×2"],
    );
    expect_error(
        r#"{"input_ids": [[1, 2]], "attention_mask": [[1, 2]]}"#,
        &["attention_mask[0][1]", "0 or 1"],
    );
    expect_error(
        r#"{"input_ids": [[1, 2]], "decode_input_ids": [[1], [2]]}"#,
        &["decode_input_ids", "2 rows"],
    );
}

#[test]
fn malformed_inputs_files() {
    expect_error(r#"{"input_ids": [[1, 2]"#, &["inputs.json", "malformed JSON"]);
    expect_error(r#"{"ids": [[1]]}"#, &["inputs.json", "missing field `input_ids`"]);
    expect_error(r#"{"input_ids": [[1, 2.5]]}"#, &["input_ids[0][1]", "not an integer"]);
    expect_error(r#"{"input_ids": [1, 2]}"#, &["input_ids[0]", "list of integers"]);
    expect_error(r#"[1, 2]"#, &["inputs.json", "JSON object"]);
    let (ok, err, _, _t) = run_cli(&case(), b"{\"input_ids\": [[1, \xff]]}", None);
    assert!(!ok && err.contains("not UTF-8"), "{err}");
}

#[test]
fn a_failed_run_keeps_the_previous_output() {
    let (ok, _, out, _t) = run_cli(&case(), br#"{"input_ids": [[999]]}"#, Some(b"previous"));
    assert!(!ok);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    let (ok, err, out, _t) = run_cli(&case(), br#"{"input_ids": [[1, 2, 3]]}"#, Some(b"previous"));
    assert!(ok, "{err}");
    assert_ne!(std::fs::read(&out).unwrap(), b"previous", "a good run replaces the file");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

/// Copies a fixture and rewrites its safetensors with `edit` applied to the tensor list.
fn with_tensors(
    name: &str,
    edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let src = fixtures_dir().join(name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut list: Vec<(String, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec())).collect();
    edit(&mut list);
    let views: Vec<(String, safetensors::tensor::TensorView)> = list
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("model.safetensors"),
        safetensors::tensor::serialize(views, None).unwrap(),
    )
    .unwrap();
    dir
}

fn expect_build_error(dir: &Path, needles: &[&str]) {
    let (ok, err, out, _t) = run_cli(dir, br#"{"input_ids": [[1, 2, 3]]}"#, None);
    assert!(!ok);
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn an_extra_tensor_is_named() {
    let dir = with_tensors("hf-doge-dense", |l| {
        l.push(("model.layers.0.self_attn.stray".into(), vec![2], vec![0; 8]))
    });
    expect_build_error(dir.path(), &["unexpected tensor", "model.layers.0.self_attn.stray"]);
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = with_tensors("cheems-v1-dense", |l| {
        l.retain(|(n, _, _)| n != "model.layers.1.attn.o_proj.weight")
    });
    expect_build_error(dir.path(), &["model.layers.1.attn.o_proj.weight"]);
}

#[test]
fn a_wrong_shape_is_named() {
    let dir = with_tensors("cheems-head-dense-gqa", |l| {
        for (n, s, d) in l.iter_mut() {
            if n == "model.layers.1.ssd.x_proj.weight" {
                *s = vec![32, 64];
                d.truncate(32 * 64 * 4);
            }
        }
    });
    expect_build_error(dir.path(), &["model.layers.1.ssd.x_proj.weight", "[32, 64]"]);
}
