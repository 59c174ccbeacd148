//! Helpers shared by the integration tests: fixture discovery, tensor comparison and deterministic values.
#![allow(dead_code)]

use cheems::ir::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The cheems binary: `$CHEEMS_BIN` (the GPU machine has no build tree), else the one cargo built.
pub fn cheems_bin() -> PathBuf {
    std::env::var_os("CHEEMS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cheems")))
}

/// The golden fixtures: `$CHEEMS_FIXTURES`, else `../shared/fixtures` relative to the working directory.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("CHEEMS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/fixtures"))
}

/// Every fixture case folder, sorted; fails loudly when the fixtures are missing.
pub fn cases() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!("fixtures not found at {} ({e}); set CHEEMS_FIXTURES", dir.display())
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expected.safetensors").exists())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixture cases in {}", dir.display());
    v
}

/// All tensors of a safetensors file (f32 only).
pub fn read_safetensors(path: &std::path::Path) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, Tensor::f32(view.shape().to_vec(), data).unwrap())
        })
        .collect()
}

/// Largest absolute difference and largest absolute reference value over the rows `[.., row, :]` of the
/// `[B,T,X]` tensors where `keep(b, t)`; NaN in either is reported as an infinite difference.
pub fn compare_rows(
    got: &Tensor,
    want: &Tensor,
    keep: impl Fn(usize, usize) -> bool,
) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let d = want.dims();
    let (t, x) = (d[1], d[2]);
    let (g, w) = (got.as_f32().unwrap(), want.as_f32().unwrap());
    let (mut worst, mut scale) = (0f32, 0f32);
    for (i, (a, b)) in g.iter().zip(w).enumerate() {
        let row = i / x;
        if !keep(row / t, row % t) {
            continue;
        }
        let diff = if a.is_nan() || b.is_nan() { f32::INFINITY } else { (a - b).abs() };
        worst = worst.max(diff);
        scale = scale.max(b.abs());
    }
    (worst, scale)
}

/// The bound on an executor's logits in a 16-bit dtype (`"bf16"` or `"f16"`) against a fixture's float32 ones: the
/// larger of `rel × max|logit|` and 1.25 × how far the PyTorch reference itself lands when it runs in that dtype
/// (`tests/reference/<dtype>_deviation.json`, made by `tools/reference/bf16_deviation.py`). Routing by top-k can flip
/// under the rounding, so no executor in that dtype can be held closer than the reference's own run in it; 1.25
/// leaves room for rounding at other points than the reference's. `None` where the reference's own logits are not
/// all finite (float16 overflows past 65504): there is no bound to hold an executor to.
#[allow(dead_code)]
pub fn half_bound(dtype: &str, case: &str, what: &str, scale: f32, rel: f32) -> Option<f32> {
    let path = std::path::PathBuf::from(format!("tests/reference/{dtype}_deviation.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run from the repository root)", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entry = &v["cases"][case][what];
    assert!(entry.is_object(), "{}: no `{case}`/`{what}` entry", path.display());
    let reference = entry["max_abs_diff"].as_f64()?;
    Some((rel * scale).max(1.25 * reference as f32))
}

/// Whether any value of `t` is NaN or infinite.
#[allow(dead_code)]
pub fn any_non_finite(t: &Tensor) -> bool {
    t.as_f32().unwrap().iter().any(|v| !v.is_finite())
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants): deterministic test data without a dependency.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state, all 64 bits (the high ones are the better mixed).
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0
    }

    /// A value in `[0, 1)` from the state's top 24 bits.
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}
