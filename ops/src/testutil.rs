//! Helpers shared by the kernel tests: a deterministic RNG and a NaN-failing comparison.

/// SplitMix64: a small deterministic generator, good enough for test data.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A uniform value in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `n` uniform values in `[lo, hi)`.
    pub(crate) fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` values `j·step` with `j` uniform in `-levels..=levels`: sums of few products of them
    /// are exact in `f32`, and ties are frequent.
    pub(crate) fn quantized(&mut self, n: usize, levels: i32, step: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.below(2 * levels as usize + 1) as i32 - levels) as f32 * step)
            .collect()
    }
}

/// Largest `|v|` of `want` (0 for an empty slice).
pub(crate) fn max_abs(want: &[f64]) -> f64 {
    want.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Asserts `|got - want| <= atol + rtol·|want|` elementwise; NaN in either side fails.
///
/// The message names the check, the number of failures, and the worst index with both values.
pub(crate) fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length mismatch");
    let mut bad = 0;
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        let excess = err - (atol + rtol * w.abs());
        if excess.is_nan() || excess > 0.0 {
            bad += 1;
            let score = if excess.is_nan() { f64::INFINITY } else { excess };
            if worst.is_none_or(|(_, s)| score > s) {
                worst = Some((i, score));
            }
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: {bad} of {} elements outside atol {atol:e} + rtol {rtol:e}; worst at {i}: \
             got {}, want {}",
            got.len(),
            got[i],
            want[i]
        );
    }
}

/// The module of `src` compiled by NVRTC for sm_90 (no GPU needed), checked to be an ELF CUBIN; `None`, with a
/// printed line, when NVRTC is missing, which fails instead when `CHEEMS_REQUIRE_NVRTC` or `CHEEMS_REQUIRE_GPU` is
/// set.
pub(crate) fn sm90_cubin(src: &crate::cuda::Source) -> Option<Vec<u8>> {
    cubin_for(src, "sm_90")
}

/// [`sm90_cubin`] for the architecture `arch`.
pub(crate) fn cubin_for(src: &crate::cuda::Source, arch: &str) -> Option<Vec<u8>> {
    if !crate::cuda::test_nvrtc() {
        return None;
    }
    let cubin = crate::cuda::compile_cubin(src, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
    assert!(
        cubin.starts_with(b"\x7fELF"),
        "{} ({arch}): NVRTC did not return an ELF CUBIN",
        src.file
    );
    Some(cubin)
}

/// ptxas's report on `src` compiled for `arch` ([`crate::cuda::ptxas_report`]); `None` without NVRTC, as
/// [`cubin_for`].
pub(crate) fn ptxas_report(src: &crate::cuda::Source, arch: &str) -> Option<String> {
    if !crate::cuda::test_nvrtc() {
        return None;
    }
    Some(crate::cuda::ptxas_report(src, arch).unwrap_or_else(|e| panic!("{arch}: {e}")))
}

/// Whether a compiled module holds the symbol `name`.
pub(crate) fn has_symbol(cubin: &[u8], name: &str) -> bool {
    cubin.windows(name.len()).any(|w| w == name.as_bytes())
}

/// Whether case `n` of a test's loop is this process's: with `CHEEMS_TEST_SHARD=i/k` the cases with `n % k == i`,
/// otherwise every case. `tools/sanitize_kernels.py --shard` splits a long test over `k` processes this way.
pub(crate) fn in_shard(n: usize) -> bool {
    let Ok(spec) = std::env::var("CHEEMS_TEST_SHARD") else { return true };
    let parsed = spec
        .split_once('/')
        .and_then(|(i, k)| Some((i.parse::<usize>().ok()?, k.parse::<usize>().ok()?)));
    match parsed {
        Some((i, k)) if i < k => n % k == i,
        _ => panic!("CHEEMS_TEST_SHARD={spec:?}: want i/k with i < k"),
    }
}

/// `start`, a cache `[B, heads, cap, dim]`, with row `(b, j, h)` of `rows` (`[B, seq, heads, dim]`) at slot `at + j`
/// of sequence `b`, head `h` where that slot is in `0..cap`: the `_at` kernels' contract, on the host.
pub(crate) fn placed_on_host<T: Copy>(
    start: &[T],
    rows: &[T],
    [seqs, seq, heads, dim]: [usize; 4],
    cap: usize,
    at: i64,
) -> Vec<T> {
    let mut out = start.to_vec();
    for (b, j, h) in
        (0..seqs).flat_map(|b| (0..seq).flat_map(move |j| (0..heads).map(move |h| (b, j, h))))
    {
        if let Some(slot) = usize::try_from(at + j as i64).ok().filter(|&s| s < cap) {
            let (src, dst) =
                (((b * seq + j) * heads + h) * dim, ((b * heads + h) * cap + slot) * dim);
            out[dst..dst + dim].copy_from_slice(&rows[src..src + dim]);
        }
    }
    out
}
