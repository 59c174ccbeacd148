use proptest::prelude::*;

use super::*;
use crate::testutil::{assert_close, max_abs, Rng};
use crate::KernelError;

/// f32 recurrence against f64: error grows with the number of steps, relative to the largest value.
const TOL_PER_STEP: f64 = 2e-7;
const RTOL: f64 = 1e-5;

struct Case {
    p: SsdScanParams,
    x: Vec<f32>,
    dt: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    state0: Vec<f32>,
}

impl Case {
    fn random(p: SsdScanParams, a_range: (f32, f32), dt_range: (f32, f32), seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let tokens = p.batch * p.seq * p.heads;
        Case {
            x: rng.vec(tokens * p.head_dim, -1.0, 1.0),
            dt: rng.vec(tokens, dt_range.0, dt_range.1),
            a: rng.vec(p.heads, a_range.0, a_range.1),
            b: rng.vec(tokens * p.state_dim, -1.0, 1.0),
            c: rng.vec(tokens * p.state_dim, -1.0, 1.0),
            state0: rng.vec(p.batch * p.heads * p.head_dim * p.state_dim, -1.0, 1.0),
            p,
        }
    }

    fn run(&self) -> (Vec<f32>, Vec<f32>) {
        ssd_scan(&self.p, &self.x, &self.dt, &self.a, &self.b, &self.c, &self.state0).unwrap()
    }
}

fn softplus64(z: f64) -> f64 {
    if z > 20.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

fn reference(k: &Case) -> (Vec<f64>, Vec<f64>) {
    let p = &k.p;
    let (hp, n) = (p.head_dim, p.state_dim);
    let mut y = vec![0.0; k.x.len()];
    let mut state: Vec<f64> = k.state0.iter().map(|&v| f64::from(v)).collect();
    for b in 0..p.batch {
        for h in 0..p.heads {
            let s = &mut state[(b * p.heads + h) * hp * n..][..hp * n];
            for t in 0..p.seq {
                let tok = (b * p.seq + t) * p.heads + h;
                let delta = softplus64(f64::from(k.dt[tok]));
                let decay = (delta * f64::from(k.a[h])).exp();
                for i in 0..hp {
                    let mut acc = 0.0;
                    for j in 0..n {
                        let upd =
                            delta * f64::from(k.x[tok * hp + i]) * f64::from(k.b[tok * n + j]);
                        s[i * n + j] = s[i * n + j] * decay + upd;
                        acc += s[i * n + j] * f64::from(k.c[tok * n + j]);
                    }
                    y[tok * hp + i] = acc;
                }
            }
        }
    }
    (y, state)
}

fn check(k: &Case, what: &str) {
    let (y, state) = k.run();
    let (want_y, want_state) = reference(k);
    let steps = (k.p.seq + 1) as f64;
    let atol_y = TOL_PER_STEP * steps * (1.0 + max_abs(&want_y));
    let atol_s = TOL_PER_STEP * steps * (1.0 + max_abs(&want_state));
    assert_close(&y, &want_y, atol_y, RTOL, &format!("{what} y {:?}", k.p));
    assert_close(&state, &want_state, atol_s, RTOL, &format!("{what} state {:?}", k.p));
}

fn params(
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    state_dim: usize,
) -> SsdScanParams {
    SsdScanParams { batch, seq, heads, head_dim, state_dim }
}

#[test]
fn edge_shapes() {
    let shapes = [
        (1, 0, 2, 4, 4),
        (0, 3, 2, 4, 4),
        (1, 3, 0, 4, 4),
        (1, 3, 2, 0, 4),
        (1, 3, 2, 4, 0),
        (1, 1, 1, 1, 1),
        (2, 7, 3, 5, 3),
        (1, 31, 2, 32, 32),
        (1, 33, 1, 31, 33),
        (2, 64, 4, 16, 16),
    ];
    for (i, &(b, s, h, hp, n)) in shapes.iter().enumerate() {
        check(&Case::random(params(b, s, h, hp, n), (-2.0, 0.5), (-3.0, 1.0), i as u64), "edge");
    }
}

#[test]
fn empty_sequence_keeps_the_state() {
    let k = Case::random(params(2, 0, 3, 4, 5), (-1.0, 1.0), (-1.0, 1.0), 7);
    let (y, state) = k.run();
    assert!(y.is_empty());
    assert_eq!(state, k.state0);
}

#[test]
fn positive_a_grows_the_state() {
    let mut k = Case::random(params(2, 40, 2, 8, 8), (1.0, 1.0), (-4.0, -1.0), 3);
    k.state0.iter_mut().for_each(|v| *v = v.abs());
    k.x.iter_mut().for_each(|v| *v = 0.0);
    let (_, state) = k.run();
    assert!(state.iter().zip(&k.state0).all(|(s, s0)| s > s0), "A = +1 must make |S| grow");
    check(&k, "A=+1 no input");
    check(&Case::random(params(2, 40, 3, 8, 8), (1.0, 1.0), (-4.0, -1.0), 4), "A=+1");
    check(&Case::random(params(1, 20, 2, 4, 6), (0.5, 2.0), (-2.0, 2.0), 5), "A>0");
}

#[test]
fn scanning_in_two_calls_equals_one_call() {
    let full = Case::random(params(2, 9, 3, 5, 4), (-1.5, 1.0), (-3.0, 2.0), 11);
    let p = full.p;
    let prefix = |v: &[f32], per_token: usize, len: usize, off: usize| -> Vec<f32> {
        (0..p.batch)
            .flat_map(|b| v[(b * p.seq + off) * per_token..][..len * per_token].to_vec())
            .collect()
    };
    let part = |off: usize, len: usize, state0: Vec<f32>| Case {
        p: SsdScanParams { seq: len, ..p },
        x: prefix(&full.x, p.heads * p.head_dim, len, off),
        dt: prefix(&full.dt, p.heads, len, off),
        a: full.a.clone(),
        b: prefix(&full.b, p.heads * p.state_dim, len, off),
        c: prefix(&full.c, p.heads * p.state_dim, len, off),
        state0,
    };
    let (y_full, s_full) = full.run();
    let (y_head, s_head) = part(0, p.seq - 1, full.state0.clone()).run();
    let (y_last, s_last) = part(p.seq - 1, 1, s_head).run();
    assert_eq!(s_last, s_full, "final state after S-1 then 1 tokens");
    let per_token = p.heads * p.head_dim;
    for b in 0..p.batch {
        let full_b = &y_full[b * p.seq * per_token..][..p.seq * per_token];
        assert_eq!(
            &full_b[..(p.seq - 1) * per_token],
            &y_head[b * (p.seq - 1) * per_token..][..(p.seq - 1) * per_token]
        );
        assert_eq!(&full_b[(p.seq - 1) * per_token..], &y_last[b * per_token..][..per_token]);
    }
}

#[test]
fn errors_name_the_buffer() {
    let k = Case::random(params(1, 2, 2, 3, 4), (-1.0, 1.0), (-1.0, 1.0), 1);
    let p = k.p;
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a[..1], &k.b, &k.c, &k.state0)
    else {
        panic!()
    };
    assert!(msg.contains("`a` has 1 elements, expected 2"), "{msg}");
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a, &k.b, &k.c, &k.state0[1..])
    else {
        panic!()
    };
    assert!(msg.contains("`state0`"), "{msg}");
    let Err(KernelError::BadParams(msg)) =
        ssd_scan(&p, &k.x, &k.dt, &k.a, &k.c[1..], &k.c, &k.state0)
    else {
        panic!()
    };
    assert!(msg.contains("`b`"), "{msg}");
}

#[test]
fn chunk_scan_takes_the_tensor_core_kernels_for_bf16_only() {
    let names = |d: &str, hp, n| {
        cuda::chunk_scan_kernels(d, &params(1, 100, 2, hp, n), true)
            .map(|(k, t)| format!("{k}/{t}"))
    };
    let tc8 =
        ["ssd_chunk_state_tc8_bf16/128", "ssd_state_pass_f32/256", "ssd_chunk_out_tc8_bf16/128"];
    let tc = ["ssd_chunk_state_tc_bf16/128", "ssd_state_pass_f32/256", "ssd_chunk_out_tc_bf16/128"];
    let ffma = ["ssd_chunk_state_f32/256", "ssd_state_pass_f32/256", "ssd_chunk_out_f32/256"];
    assert_eq!(names("bf16", 64, 64), tc8);
    assert_eq!(names("bf16", 16, 256), tc8);
    assert_eq!(names("bf16", 12, 12), tc);
    assert_eq!(names("bf16", 64, 36), tc);
    assert_eq!(names("bf16", 20, 64), tc);
    let misaligned = cuda::chunk_scan_kernels("bf16", &params(1, 100, 2, 64, 64), false);
    assert_eq!(misaligned.map(|(k, t)| format!("{k}/{t}")), tc, "a view at an odd offset");
    assert_eq!(names("f32", 64, 64), ffma);
    assert_eq!(names("f32", 12, 12), ffma);
    let code = cuda::CHUNK_SCAN_SOURCE.code;
    for k in tc8.iter().chain(&tc).chain(&ffma) {
        let name = k.split('/').next().unwrap();
        let defined = match name.strip_suffix("_bf16").and_then(|n| n.rsplit_once("_tc")) {
            Some((kernel, form)) => {
                code.contains(&format!("{kernel}_##SUFFIX##_bf16("))
                    && code.contains(&format!("SSD_TC_KERNELS(tc{form}, "))
            }
            None => code.contains(&format!("void {name}(")),
        };
        assert!(defined, "{name} is defined in the source");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random(b in 1usize..3, s in 0usize..40, h in 1usize..4, hp in 1usize..20, n in 1usize..20, seed: u64) {
        check(&Case::random(params(b, s, h, hp, n), (-2.0, 1.0), (-4.0, 2.0), seed), "random");
    }
}

/// CUDA against the CPU scan, with the inputs rounded to the kernel's dtype before the CPU sees them.
///
/// Tolerances are absolute, scaled by `1 + max|want|` (the growth cases span many orders of magnitude): the
/// CPU's own error bound (`TOL_PER_STEP` per token, above) plus `F32_CHUNK` for the GPU's reassociation, where
/// each output is one f32 sum of at most `L + N ≤ 320` products (`√320·2⁻²⁴` typical, a few times that at worst)
/// after at most `S/L` f32 state hand-overs; it does not grow with the chunk length beyond that sum. bf16 outputs
/// add one bf16 rounding (2⁻⁹ relative, doubled), f16 outputs one f16 rounding (2⁻¹², doubled; past f16's range, ∞);
/// the final state is f32 for every dtype. The bf16 tensor-core
/// path feeds each f32 operand as two bf16 halves (≤ 2⁻¹⁸ relative per product, which stays within `F32_CHUNK`);
/// one bf16 rounding of those operands (2⁻⁹ per product) would exceed it by more than 10×.
mod gpu {
    use super::*;
    use crate::cuda::{test_gpu, Elem, Gpu};
    use crate::testutil::in_shard;
    use cudarc::driver::CudaSlice;

    const F32_CHUNK: f64 = 1e-5;
    const RTOL_BF16: f64 = 2.0 * 0.001953125;
    const RTOL_F16: f64 = 2.0 * 0.000244140625;
    /// f16's largest finite value, and the least value it rounds to ∞.
    const F16_MAX: f64 = 65504.0;
    const F16_OVERFLOW: f64 = 65520.0;

    /// `k` with `x`, `dt`, `B` and `C` rounded through `T`.
    fn rounded<T: Elem>(k: &Case) -> Case {
        let r = |v: &[f32]| v.iter().map(|&v| T::from_f32(v).to_f32()).collect::<Vec<f32>>();
        Case {
            p: k.p,
            x: r(&k.x),
            dt: r(&k.dt),
            a: k.a.clone(),
            b: r(&k.b),
            c: r(&k.c),
            state0: k.state0.clone(),
        }
    }

    fn up<T: Elem>(gpu: &Gpu, v: &[f32]) -> CudaSlice<T> {
        gpu.upload(&v.iter().map(|&v| T::from_f32(v)).collect::<Vec<T>>()).unwrap()
    }

    fn down<T: Elem>(gpu: &Gpu, d: &CudaSlice<T>) -> Vec<f32> {
        gpu.download(d).unwrap().into_iter().map(|v| v.to_f32()).collect()
    }

    /// Device copies of a case's inputs; `y` poisoned with NaN.
    struct Dev<T: Elem> {
        x: CudaSlice<T>,
        dt: CudaSlice<T>,
        a: CudaSlice<f32>,
        b: CudaSlice<T>,
        c: CudaSlice<T>,
        state: CudaSlice<f32>,
        y: CudaSlice<T>,
    }

    impl<T: Elem> Dev<T> {
        fn new(gpu: &Gpu, k: &Case) -> Dev<T> {
            Dev {
                x: up(gpu, &k.x),
                dt: up(gpu, &k.dt),
                a: gpu.upload(&k.a).unwrap(),
                b: up(gpu, &k.b),
                c: up(gpu, &k.c),
                state: gpu.upload(&k.state0).unwrap(),
                y: up(gpu, &vec![f32::NAN; k.x.len()]),
            }
        }

        fn chunk_scan(&mut self, gpu: &Gpu, p: &SsdScanParams, chunk: usize) -> Result<()> {
            let Dev { x, dt, a, b, c, state, y } = self;
            cuda::ssd_chunk_scan(gpu, p, chunk, x, dt, a, b, c, state, y)
        }

        fn chunk_scan_in_groups(
            &mut self,
            gpu: &Gpu,
            p: &SsdScanParams,
            chunk: usize,
            group: usize,
        ) -> Result<()> {
            let Dev { x, dt, a, b, c, state, y } = self;
            let mut ws = gpu.zeros::<f32>(cuda::ssd_chunk_scan_workspace_len(p, chunk).max(1))?;
            cuda::ssd_chunk_scan_in_groups(gpu, p, chunk, group, x, dt, a, b, c, state, y, &mut ws)
        }

        fn step(&mut self, gpu: &Gpu, p: &SsdScanParams) -> Result<()> {
            let Dev { x, dt, a, b, c, state, y } = self;
            cuda::ssd_step(gpu, p, x, dt, a, b, c, None, state, y)
        }

        fn results(&self, gpu: &Gpu) -> (Vec<f32>, Vec<f32>) {
            (down(gpu, &self.y), gpu.download(&self.state).unwrap())
        }
    }

    /// Asserts GPU `(y, state)` against the CPU's, within the tolerances of the module doc.
    fn compare<T: Elem>(
        got: (Vec<f32>, Vec<f32>),
        want: (Vec<f32>, Vec<f32>),
        seq: usize,
        what: &str,
    ) {
        let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<f64>>();
        let (want_y, want_s) = (widen(want.0), widen(want.1));
        let tol = TOL_PER_STEP * (seq + 1) as f64 + F32_CHUNK;
        let rtol_y = match T::NAME {
            "bf16" => RTOL_BF16,
            "f16" => RTOL_F16,
            _ => 0.0,
        };
        let atol_y = tol * (1.0 + max_abs(&want_y));
        let (got_y, want_y) = if T::NAME == "f16" {
            within_f16(&got.0, &want_y, atol_y, rtol_y, what)
        } else {
            (got.0, want_y)
        };
        assert_close(&got_y, &want_y, atol_y, rtol_y, &format!("{what} y"));
        assert_close(
            &got.1,
            &want_s,
            tol * (1.0 + max_abs(&want_s)),
            0.0,
            &format!("{what} state"),
        );
    }

    /// The outputs an f16 `y` can hold, for `assert_close`: where the reference is past f16's range by more than the
    /// tolerance, `got` must have overflowed to ∞ of its sign (as PyTorch's f16 does); where it is within the
    /// tolerance of the range's end, either is right and the element is left out.
    fn within_f16(
        got: &[f32],
        want: &[f64],
        atol: f64,
        rtol: f64,
        what: &str,
    ) -> (Vec<f32>, Vec<f64>) {
        let mut kept = (Vec::new(), Vec::new());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let margin = atol + rtol * w.abs();
            if w.abs() + margin < F16_MAX {
                kept.0.push(g);
                kept.1.push(w);
            } else if w.abs() - margin > F16_OVERFLOW {
                assert!(
                    g.is_infinite() && (g > 0.0) == (w > 0.0),
                    "{what} y[{i}]: {g}, but the reference {w} overflows f16"
                );
            }
        }
        kept
    }

    fn prefill<T: Elem>(k: &Case, chunk: usize, what: &str) {
        let Some(gpu) = test_gpu() else { return };
        let k = rounded::<T>(k);
        let mut dev = Dev::<T>::new(&gpu, &k);
        dev.chunk_scan(&gpu, &k.p, chunk).unwrap();
        let what = format!("ssd_chunk_scan_{} {what} {:?} chunk {chunk}", T::NAME, k.p);
        compare::<T>(dev.results(&gpu), k.run(), k.p.seq, &what);
    }

    fn step<T: Elem>(k: &Case, what: &str) {
        let Some(gpu) = test_gpu() else { return };
        let k = rounded::<T>(k);
        let mut dev = Dev::<T>::new(&gpu, &k);
        dev.step(&gpu, &k.p).unwrap();
        let what = format!("ssd_step_{} {what} {:?}", T::NAME, k.p);
        compare::<T>(dev.results(&gpu), k.run(), 1, &what);
    }

    fn both(k: &Case, chunk: usize, what: &str) {
        prefill::<f32>(k, chunk, what);
        prefill::<half::bf16>(k, chunk, what);
        prefill::<half::f16>(k, chunk, what);
    }

    const DECAY: (f32, f32) = (-2.0, 0.5);
    const DT: (f32, f32) = (-3.0, 1.0);

    #[test]
    fn chunk_scan_edge_shapes_match_the_cpu_scan() {
        let shapes = [
            (1, 1, 1, 1, 1, 64),
            (3, 1, 4, 16, 16, 64),
            (1, 5, 2, 16, 16, 64),
            (1, 63, 1, 16, 16, 64),
            (2, 128, 3, 64, 64, 64),
            (1, 129, 2, 64, 128, 64),
            (2, 200, 2, 128, 128, 64),
            (1, 65, 1, 256, 256, 64),
            (2, 70, 3, 5, 33, 64),
            (1, 40, 1, 65, 7, 64),
            (3, 64, 8, 16, 64, 64),
            (1, 50, 2, 16, 16, 1),
            (2, 100, 3, 32, 48, 7),
            (1, 129, 2, 64, 64, 16),
            (2, 97, 2, 64, 64, 32),
        ];
        for (i, &(b, s, h, hp, n, chunk)) in shapes.iter().enumerate().filter(|(i, _)| in_shard(*i))
        {
            both(&Case::random(params(b, s, h, hp, n), DECAY, DT, 300 + i as u64), chunk, "edge");
        }
    }

    #[test]
    fn chunk_scan_covers_thousands_of_blocks() {
        both(&Case::random(params(16, 3, 128, 16, 16), DECAY, DT, 1), 64, "many heads");
        both(&Case::random(params(2, 600, 4, 64, 64), (-2.0, -0.01), DT, 2), 64, "many chunks");
    }

    /// The fixtures' head dims (12, 16) and the 350M preset's SSD shape (H16, P = N = 64) over more than 16 chunks
    /// (the state pass's prefetch group), with L = 1 and lengths that are not a multiple of the chunk; long
    /// sequences decay (A < 0) so that the state stays finite.
    #[test]
    fn chunk_scan_model_shapes_match_the_cpu_scan() {
        let shapes = [
            (1, 1, 4, 12, 12, 64, DECAY),
            (2, 70, 4, 12, 12, 64, DECAY),
            (3, 130, 4, 16, 16, 64, DECAY),
            (1, 1, 16, 64, 64, 64, DECAY),
            (2, 1100, 16, 64, 64, 64, (-2.0, -0.01)),
            (1, 4100, 16, 64, 64, 64, (-2.0, -0.01)),
            (2, 2500, 2, 64, 64, 16, (-2.0, -0.01)),
        ];
        for (i, &(b, s, h, hp, n, chunk, decay)) in shapes.iter().enumerate() {
            both(&Case::random(params(b, s, h, hp, n), decay, DT, 800 + i as u64), chunk, "model");
        }
    }

    /// `chunk_state` blocks carrying the state over groups of 1 to more than `chunks` chunks, with a partial last
    /// group and a partial last chunk, on every kernel form (tc8; tc with P = 20; f32) and two state tiles (N = 100).
    #[test]
    fn chunk_groups_match_the_cpu_scan() {
        let Some(gpu) = test_gpu() else { return };
        let shapes = [
            (2, 600, 3, 64, 64, 64, (-2.0, -0.01)),
            (1, 300, 2, 32, 48, 16, (-2.0, -0.01)),
            (1, 200, 2, 20, 100, 32, DECAY),
            (2, 130, 2, 16, 16, 64, DECAY),
        ];
        for (i, &(b, s, h, hp, n, chunk, decay)) in shapes.iter().enumerate() {
            let k = Case::random(params(b, s, h, hp, n), decay, DT, 900 + i as u64);
            let (k32, k16) = (rounded::<f32>(&k), rounded::<half::bf16>(&k));
            let (want32, want16) = (k32.run(), k16.run());
            let chunks = s.div_ceil(chunk);
            for group in [1, 2, 3, 4, 7, chunks, chunks + 3] {
                let what = format!("{:?} chunk {chunk} group {group}", k.p);
                let mut dev = Dev::<f32>::new(&gpu, &k32);
                dev.chunk_scan_in_groups(&gpu, &k32.p, chunk, group).unwrap();
                compare::<f32>(dev.results(&gpu), want32.clone(), s, &what);
                let mut dev = Dev::<half::bf16>::new(&gpu, &k16);
                dev.chunk_scan_in_groups(&gpu, &k16.p, chunk, group).unwrap();
                compare::<half::bf16>(dev.results(&gpu), want16.clone(), s, &what);
            }
        }
        let k = Case::random(params(1, 10, 1, 4, 4), DECAY, DT, 950);
        let mut dev = Dev::<f32>::new(&gpu, &k);
        let Err(KernelError::BadParams(msg)) = dev.chunk_scan_in_groups(&gpu, &k.p, 4, 0) else {
            panic!("group 0 is refused")
        };
        assert!(msg.contains("group"), "{msg}");
    }

    #[test]
    fn chunk_scan_with_positive_a_grows_like_the_cpu_scan() {
        for (i, &(s, chunk)) in [(40, 64), (130, 64), (130, 16), (64, 64)].iter().enumerate() {
            let k = Case::random(params(2, s, 3, 32, 64), (1.0, 1.0), (-4.0, -1.0), 40 + i as u64);
            both(&k, chunk, "A=+1");
        }
        let k = Case::random(params(1, 100, 2, 16, 16), (0.5, 2.0), (-4.0, -2.0), 50);
        both(&k, 64, "A>0");
    }

    #[test]
    fn chunk_scan_with_zero_initial_state() {
        let mut k = Case::random(params(2, 90, 3, 64, 64), DECAY, DT, 60);
        k.state0.iter_mut().for_each(|v| *v = 0.0);
        both(&k, 64, "zero state0");
    }

    #[test]
    fn chunk_length_does_not_change_the_result() {
        let Some(gpu) = test_gpu() else { return };
        let k = Case::random(params(2, 150, 2, 64, 64), DECAY, DT, 70);
        let run = |chunk| {
            let mut dev = Dev::<f32>::new(&gpu, &k);
            dev.chunk_scan(&gpu, &k.p, chunk).unwrap();
            dev.results(&gpu)
        };
        let (y64, s64) = run(64);
        for chunk in [1, 13, 32] {
            let want = (y64.clone(), s64.clone());
            compare::<f32>(run(chunk), want, k.p.seq, &format!("chunk {chunk} vs 64"));
        }
    }

    #[test]
    fn empty_inputs_launch_nothing_and_keep_the_state() {
        let Some(gpu) = test_gpu() else { return };
        for (b, s, h, hp, n) in [(2, 0, 3, 4, 5), (0, 3, 2, 4, 4), (1, 3, 0, 4, 4), (1, 3, 2, 0, 4)]
        {
            let k = Case::random(params(b, s, h, hp, n), DECAY, DT, 80);
            let mut dev = Dev::<f32>::new(&gpu, &k);
            dev.chunk_scan(&gpu, &k.p, 64).unwrap();
            let (y, state) = dev.results(&gpu);
            assert_eq!(state, k.state0, "{:?}", k.p);
            assert!(y.iter().all(|v| v.is_nan()), "nothing written to y");
        }
        let k = Case::random(params(2, 3, 2, 4, 0), DECAY, DT, 81);
        let mut dev = Dev::<half::bf16>::new(&gpu, &k);
        dev.chunk_scan(&gpu, &k.p, 64).unwrap();
        assert!(dev.results(&gpu).0.iter().all(|&v| v == 0.0), "state_dim 0 gives y = 0");
        let k = Case::random(params(2, 1, 2, 4, 0), DECAY, DT, 82);
        let mut dev = Dev::<f32>::new(&gpu, &k);
        dev.step(&gpu, &k.p).unwrap();
        assert!(dev.results(&gpu).0.iter().all(|&v| v == 0.0), "state_dim 0 gives y = 0");
    }

    #[test]
    fn a_dirty_workspace_is_overwritten() {
        let Some(gpu) = test_gpu() else { return };
        let k = Case::random(params(2, 100, 3, 32, 16), DECAY, DT, 90);
        let mut clean = Dev::<f32>::new(&gpu, &k);
        clean.chunk_scan(&gpu, &k.p, 32).unwrap();
        let len = cuda::ssd_chunk_scan_workspace_len(&k.p, 32);
        let mut ws = gpu.upload(&vec![f32::NAN; len + 5]).unwrap();
        let mut dirty = Dev::<f32>::new(&gpu, &k);
        let Dev { x, dt, a, b, c, state, y } = &mut dirty;
        cuda::ssd_chunk_scan_with_workspace(&gpu, &k.p, 32, x, dt, a, b, c, state, y, &mut ws)
            .unwrap();
        assert_eq!(dirty.results(&gpu), clean.results(&gpu));
    }

    #[test]
    fn step_matches_the_cpu_scan() {
        let shapes = [
            (1, 1, 1, 1),
            (3, 4, 16, 16),
            (2, 3, 7, 33),
            (1, 2, 9, 31),
            (2, 8, 64, 128),
            (1, 2, 128, 128),
            (1, 1, 256, 256),
            (40, 64, 16, 16),
        ];
        for (i, &(b, h, hp, n)) in shapes.iter().enumerate() {
            let k = Case::random(params(b, 1, h, hp, n), DECAY, DT, 400 + i as u64);
            step::<f32>(&k, "edge");
            step::<half::bf16>(&k, "edge");
            step::<half::f16>(&k, "edge");
        }
        let k = Case::random(params(2, 1, 3, 32, 64), (1.0, 2.0), (-1.0, 2.0), 450);
        step::<f32>(&k, "A>0");
        step::<half::bf16>(&k, "A>0");
        step::<half::f16>(&k, "A>0");
    }

    /// Both decode kernels, both row counts per thread, lane counts 1 to 32 and two 4-column groups per lane, at
    /// the fixtures' head dims (12, 16) and the 350M preset's (64) up to batch 256.
    #[test]
    fn step_layouts_match_the_cpu_scan() {
        let shapes = [
            (1, 4, 12, 12),
            (2, 4, 16, 16),
            (1, 1, 5, 4),
            (3, 2, 7, 8),
            (1, 16, 64, 64),
            (16, 16, 64, 64),
            (64, 16, 64, 64),
            (256, 16, 64, 64),
            (40, 16, 100, 200),
            (33, 16, 64, 36),
            (9, 64, 65, 256),
        ];
        for (i, &(b, h, hp, n)) in shapes.iter().enumerate() {
            let k = Case::random(params(b, 1, h, hp, n), DECAY, DT, 700 + i as u64);
            step::<f32>(&k, "layout");
            step::<half::bf16>(&k, "layout");
            step::<half::f16>(&k, "layout");
        }
    }

    /// `k` (values of `T`) with B and C rotated by the CPU reference in `T`'s rounding, and the random tables
    /// (`[B, N]`, rounded to `T`) it used.
    fn roped<T: Elem>(k: &Case, seed: u64) -> (Case, Vec<f32>, Vec<f32>) {
        let p = k.p;
        let mut rng = Rng::new(seed);
        let positions: Vec<i64> = (0..p.batch).map(|_| rng.below(5000) as i64).collect();
        let freqs = crate::rope::inv_freq(10_000.0, p.state_dim);
        let (cos, sin) = crate::rope::tables(&positions, &freqs);
        let r = |v: Vec<f32>| v.into_iter().map(|v| T::from_f32(v).to_f32()).collect::<Vec<f32>>();
        let (cos, sin) = (r(cos), r(sin));
        let rp = crate::rope::RopeParams { rows: p.batch, heads: p.heads, dim: p.state_dim };
        let rot = |m: &[f32]| crate::rope::apply_rounded::<T>(&rp, m, &cos, &sin).unwrap();
        let case = Case {
            p,
            x: k.x.clone(),
            dt: k.dt.clone(),
            a: k.a.clone(),
            b: rot(&k.b),
            c: rot(&k.c),
            state0: k.state0.clone(),
        };
        (case, cos, sin)
    }

    /// The decode step with RoPE fused (B and C rotated on load) against the CPU scan of B and C rotated by the CPU
    /// reference in `T`'s rounding; and bit for bit against `rope_apply` then `ssd_step` on the GPU when both take
    /// the same kernel form (`state_dim` a multiple of 8, or not of 4).
    fn step_rope<T: Elem>(k: &Case, what: &str) {
        let Some(gpu) = test_gpu() else { return };
        let k = rounded::<T>(k);
        let p = k.p;
        let (want, cos, sin) = roped::<T>(&k, 99 + p.state_dim as u64);
        let (dcos, dsin) = (up::<T>(&gpu, &cos), up::<T>(&gpu, &sin));
        let mut fused = Dev::<T>::new(&gpu, &k);
        {
            let Dev { x, dt, a, b, c, state, y } = &mut fused;
            let rope = cuda::StepRope { cos: &dcos, sin: &dsin };
            cuda::ssd_step(&gpu, &p, x, dt, a, b, c, Some(rope), state, y).unwrap();
        }
        let got = fused.results(&gpu);
        let name = format!("ssd_step_rope_{} {what} {p:?}", T::NAME);
        compare::<T>(got.clone(), want.run(), 1, &name);

        let mut plain = Dev::<T>::new(&gpu, &k);
        let rp = crate::rope::RopeParams { rows: p.batch, heads: p.heads, dim: p.state_dim };
        let rotated = |m: &CudaSlice<T>| {
            let mut out = up::<T>(&gpu, &vec![f32::NAN; m.len()]);
            crate::rope::cuda::apply(&gpu, &rp, m, &dcos, &dsin, &mut out).unwrap();
            out
        };
        (plain.b, plain.c) = (rotated(&plain.b), rotated(&plain.c));
        plain.step(&gpu, &p).unwrap();
        if p.state_dim % 8 == 0 || p.state_dim % 4 != 0 {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let unfused = plain.results(&gpu);
            assert_eq!(
                bits(&got.0),
                bits(&unfused.0),
                "{name}: y differs from rope_apply + ssd_step"
            );
            assert_eq!(
                bits(&got.1),
                bits(&unfused.1),
                "{name}: state differs from rope_apply + ssd_step"
            );
        }
    }

    #[test]
    fn step_with_rope_matches_rope_then_step() {
        let shapes = [
            (1, 1, 1, 2),
            (2, 3, 5, 6),
            (1, 4, 12, 12),
            (2, 4, 16, 16),
            (3, 2, 7, 8),
            (1, 16, 64, 64),
            (256, 16, 64, 64),
            (40, 16, 100, 200),
            (9, 64, 65, 256),
            (2, 2, 3, 34),
        ];
        for (i, &(b, h, hp, n)) in shapes.iter().enumerate() {
            let k = Case::random(params(b, 1, h, hp, n), DECAY, DT, 900 + i as u64);
            step_rope::<f32>(&k, "rope");
            step_rope::<half::bf16>(&k, "rope");
            step_rope::<half::f16>(&k, "rope");
        }
    }

    #[test]
    fn step_with_rope_refuses_odd_state_dims_and_short_tables() {
        let Some(gpu) = test_gpu() else { return };
        for (n, table) in [(5, 5), (4, 3)] {
            let k = Case::random(params(1, 1, 2, 3, n), DECAY, DT, 5);
            let mut dev = Dev::<f32>::new(&gpu, &k);
            let (cos, sin) =
                (up::<f32>(&gpu, &vec![1.0; table]), up::<f32>(&gpu, &vec![0.0; table]));
            let Dev { x, dt, a, b, c, state, y } = &mut dev;
            let rope = cuda::StepRope { cos: &cos, sin: &sin };
            let err = cuda::ssd_step(&gpu, &k.p, x, dt, a, b, c, Some(rope), state, y).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(if n % 2 == 1 { "even state_dim" } else { "cos" }), "{msg}");
        }
    }

    /// Tokens `off..off + len` of every sequence of `k`, starting from `state0`.
    fn slice(k: &Case, off: usize, len: usize, state0: Vec<f32>) -> Case {
        let p = k.p;
        let take = |v: &[f32], per_token: usize| -> Vec<f32> {
            (0..p.batch)
                .flat_map(|b| v[(b * p.seq + off) * per_token..][..len * per_token].to_vec())
                .collect()
        };
        Case {
            p: SsdScanParams { seq: len, ..p },
            x: take(&k.x, p.heads * p.head_dim),
            dt: take(&k.dt, p.heads),
            a: k.a.clone(),
            b: take(&k.b, p.heads * p.state_dim),
            c: take(&k.c, p.heads * p.state_dim),
            state0,
        }
    }

    /// Prefill of `S` tokens then one step equals a prefill of `S + 1` tokens, on the GPU and on the CPU.
    fn prefill_then_step<T: Elem>(k: &Case, chunk: usize) {
        let Some(gpu) = test_gpu() else { return };
        let k = rounded::<T>(k);
        let (p, s) = (k.p, k.p.seq - 1);
        let what = format!("{} {p:?} chunk {chunk}", T::NAME);
        let mut full = Dev::<T>::new(&gpu, &k);
        full.chunk_scan(&gpu, &p, chunk).unwrap();
        let (y_full, s_full) = full.results(&gpu);
        let head = slice(&k, 0, s, k.state0.clone());
        let mut dev = Dev::<T>::new(&gpu, &head);
        dev.chunk_scan(&gpu, &head.p, chunk).unwrap();
        let (y_head, s_head) = dev.results(&gpu);
        let last = slice(&k, s, 1, s_head);
        let mut dev = Dev::<T>::new(&gpu, &last);
        dev.step(&gpu, &last.p).unwrap();
        let (y_last, s_last) = dev.results(&gpu);
        let per_token = p.heads * p.head_dim;
        let y_split: Vec<f32> = (0..p.batch)
            .flat_map(|b| {
                let mut v = y_head[b * s * per_token..][..s * per_token].to_vec();
                v.extend_from_slice(&y_last[b * per_token..][..per_token]);
                v
            })
            .collect();
        compare::<T>((y_split.clone(), s_last.clone()), (y_full, s_full), p.seq, &what);
        compare::<T>((y_split, s_last), k.run(), p.seq, &format!("{what} vs CPU"));
    }

    #[test]
    fn prefill_then_step_equals_a_longer_prefill() {
        for (i, &(b, s, h, hp, n, chunk)) in [
            (2, 65, 3, 64, 64, 64),
            (1, 2, 2, 16, 16, 64),
            (3, 64, 2, 32, 128, 64),
            (1, 129, 4, 64, 128, 64),
            (2, 40, 2, 16, 16, 16),
        ]
        .iter()
        .enumerate()
        {
            let k = Case::random(params(b, s, h, hp, n), DECAY, DT, 500 + i as u64);
            prefill_then_step::<f32>(&k, chunk);
            prefill_then_step::<half::bf16>(&k, chunk);
            prefill_then_step::<half::f16>(&k, chunk);
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        let Some(gpu) = test_gpu() else { return };
        let k = Case::random(params(2, 5, 3, 8, 4), DECAY, DT, 600);
        let mut dev = Dev::<f32>::new(&gpu, &k);
        for chunk in [0, 65] {
            let r = dev.chunk_scan(&gpu, &k.p, chunk);
            assert!(matches!(r, Err(KernelError::BadParams(_))), "chunk {chunk}: {r:?}");
        }
        let r = dev.step(&gpu, &k.p);
        assert!(matches!(r, Err(KernelError::BadParams(_))), "step with seq 5: {r:?}");
        let Dev { x, dt, a, b, c, state, .. } = &mut dev;
        let mut short_y = gpu.zeros::<f32>(x.len() - 1).unwrap();
        let r = cuda::ssd_chunk_scan(&gpu, &k.p, 64, x, dt, a, b, c, state, &mut short_y);
        let Err(KernelError::BadParams(msg)) = r else { panic!("{r:?}") };
        assert!(msg.contains("`y`"), "{msg}");
        let mut ws = gpu.zeros::<f32>(cuda::ssd_chunk_scan_workspace_len(&k.p, 4) - 1).unwrap();
        let mut y = gpu.zeros::<f32>(x.len()).unwrap();
        let r = cuda::ssd_chunk_scan_with_workspace(
            &gpu, &k.p, 4, x, dt, a, b, c, state, &mut y, &mut ws,
        );
        let Err(KernelError::BadParams(msg)) = r else { panic!("{r:?}") };
        assert!(msg.contains("`workspace`"), "{msg}");
        let wide = Case::random(params(1, 1, 1, 1, 257), DECAY, DT, 601);
        let mut dev = Dev::<f32>::new(&gpu, &wide);
        assert!(matches!(dev.chunk_scan(&gpu, &wide.p, 64), Err(KernelError::BadParams(_))));
        assert!(matches!(dev.step(&gpu, &wide.p), Err(KernelError::BadParams(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn random_prefills_match_the_cpu_scan(
            b in 1usize..4, s in 1usize..200, h in 1usize..9, hp in 1usize..130, n in 1usize..130,
            chunk in prop_oneof![Just(64usize), Just(32), Just(16), 1usize..65], seed: u64,
        ) {
            both(&Case::random(params(b, s, h, hp, n), (-2.0, 0.25), (-4.0, 2.0), seed), chunk, "random");
        }

        #[test]
        fn random_prefills_with_16_byte_rows_match_the_cpu_scan(
            b in 1usize..3, s in 1usize..200, h in 1usize..5, hp in 1usize..33, n in 1usize..33,
            chunk in prop_oneof![Just(64usize), 1usize..65], seed: u64,
        ) {
            let k = Case::random(params(b, s, h, 8 * hp, 8 * n), (-2.0, 0.25), (-4.0, 2.0), seed);
            both(&k, chunk, "random, P and N multiples of 8");
        }

        #[test]
        fn random_steps_match_the_cpu_scan(
            b in 1usize..4, h in 1usize..9, hp in 1usize..257, n in 1usize..257, seed: u64,
        ) {
            let k = Case::random(params(b, 1, h, hp, n), (-2.0, 1.0), (-4.0, 2.0), seed);
            step::<f32>(&k, "random");
            step::<half::bf16>(&k, "random");
            step::<half::f16>(&k, "random");
            if n % 2 == 0 {
                step_rope::<f32>(&k, "random");
                step_rope::<half::bf16>(&k, "random");
                step_rope::<half::f16>(&k, "random");
            }
        }
    }
}

#[test]
fn step_layout_picks_vector_accesses_when_rows_are_16_byte_aligned() {
    use cuda::{step_layout, StepLayout};
    let vec = |b, h, hp, n| step_layout(&params(b, 1, h, hp, n), true, false);
    assert_eq!(vec(256, 16, 64, 64), StepLayout::Vec { lanes: 16, rows: 4, blocks: 4096 });
    assert_eq!(vec(1, 16, 64, 64), StepLayout::Vec { lanes: 16, rows: 1, blocks: 64 });
    assert_eq!(vec(1, 4, 12, 12), StepLayout::Vec { lanes: 4, rows: 1, blocks: 4 });
    assert_eq!(vec(1, 1, 256, 256), StepLayout::Vec { lanes: 32, rows: 1, blocks: 32 });
    assert_eq!(vec(2, 4, 16, 33), StepLayout::Scalar { blocks: 16 });
    assert_eq!(vec(2, 4, 16, 6), StepLayout::Scalar { blocks: 16 });
    let name = |b, h, hp, n, dtype| {
        let p = params(b, 1, h, hp, n);
        cuda::step_kernel(dtype, &p, step_layout(&p, true, false), false)
    };
    assert_eq!(name(256, 16, 64, 64, "bf16"), "ssd_step_vec1x4_bf16");
    assert_eq!(name(1, 16, 64, 64, "f32"), "ssd_step_vec1x1_f32");
    assert_eq!(name(9, 64, 65, 256, "bf16"), "ssd_step_vec2x4_bf16");
    assert_eq!(name(1, 1, 256, 256, "f32"), "ssd_step_vec2x1_f32");
    assert_eq!(name(2, 4, 16, 33, "bf16"), "ssd_step_bf16");
    let misaligned = step_layout(&params(2, 1, 4, 16, 64), false, false);
    assert_eq!(misaligned, StepLayout::Scalar { blocks: 16 }, "a view at an odd offset");
    let rope = |n| step_layout(&params(1, 1, 16, 64, n), true, true);
    assert_eq!(rope(64), vec(1, 16, 64, 64), "rope keeps the layout when halves hold whole groups");
    assert_eq!(rope(12), StepLayout::Scalar { blocks: 128 }, "half of 12 splits a 4-column group");
    let p = params(256, 1, 16, 64, 64);
    assert_eq!(
        cuda::step_kernel("bf16", &p, step_layout(&p, true, true), true),
        "ssd_step_rope_vec1x4_bf16"
    );
    assert_eq!(
        cuda::step_kernel("f32", &p, StepLayout::Scalar { blocks: 1 }, true),
        "ssd_step_rope_f32"
    );
    for (b, h, hp, n) in [(3, 5, 7, 4), (64, 16, 64, 64), (9, 64, 65, 256), (40, 16, 100, 200)] {
        let StepLayout::Vec { lanes, rows, blocks } = vec(b, h, hp, n) else { panic!() };
        assert!(lanes.is_power_of_two() && lanes <= 32);
        assert!(2 * lanes >= n / 4, "two 4-column groups per lane cover a row of {n}");
        assert!(
            blocks * rows * (256 / lanes) >= b * h * hp,
            "every row of {b}×{h}×{hp} is covered"
        );
    }
}

/// Groups of chunks fill one wave of `chunk_state` blocks, in the least power of two that does; one chunk a group
/// while every chunk fits.
#[test]
fn state_groups_fill_one_wave() {
    use cuda::{state_group, STATE_BLOCKS_PER_SM};
    assert_eq!(state_group(16, 16, 132), 1, "Cheems-350M at 1K: 256 blocks of one chunk");
    assert_eq!(state_group(16, 33, 132), 1, "528 blocks of one chunk");
    assert_eq!(state_group(16, 34, 132), 2, "544 blocks of one chunk are more than a wave");
    assert_eq!(state_group(16, 64, 132), 2, "at 4K: 32 groups of 2");
    assert_eq!(state_group(16, 128, 132), 4, "at 8K");
    assert_eq!(state_group(16, 256, 132), 8, "at 16K: 32 groups of 8");
    assert_eq!(
        state_group(2048, 3, 132),
        3,
        "more blocks a chunk than a wave: one group a sequence"
    );
    assert_eq!(state_group(16, 0, 132), 1);
    for per in [1, 7, 16, 64, 528, 529, 5000] {
        for chunks in [1, 2, 63, 64, 65, 256, 1000] {
            let g = state_group(per, chunks, 132);
            let wave = (STATE_BLOCKS_PER_SM * 132).max(per);
            assert!((1..=chunks).contains(&g), "{per} {chunks}: {g}");
            assert!(chunks.div_ceil(g) * per <= wave, "{per} {chunks}: {g} overfills");
            let least = g == 1 || g == chunks || chunks.div_ceil(g / 2) * per > wave;
            assert!(g == chunks || g.is_power_of_two(), "{per} {chunks}: {g}");
            assert!(least, "{per} {chunks}: {g} is not the least");
        }
    }
    let bound = format!("SSD_TC_KERNELS(tc8, true, {STATE_BLOCKS_PER_SM})");
    assert!(cuda::CHUNK_SCAN_SOURCE.code.contains(&bound), "the source launches {bound}");
}

/// Every decode kernel the launcher can name (both row counts, one and two column groups, the scalar fallback) is in
/// the compiled module (no GPU needed).
#[test]
fn step_kernels_compile_for_sm_90() {
    let Some(cubin) = crate::testutil::sm90_cubin(&cuda::STEP_SOURCE) else { return };
    let mut named = std::collections::BTreeSet::new();
    for (b, h, hp, n) in
        [(1, 16, 64, 64), (256, 16, 64, 64), (1, 1, 256, 256), (256, 4, 64, 256), (2, 4, 16, 33)]
    {
        for (aligned, rope) in [(true, false), (false, false), (true, true), (false, true)] {
            let p = params(b, 1, h, hp, n);
            let layout = cuda::step_layout(&p, aligned, rope);
            for dtype in ["f32", "bf16", "f16"] {
                let name = cuda::step_kernel(dtype, &p, layout, rope);
                assert!(crate::testutil::has_symbol(&cubin, &name), "{name} missing");
                named.insert(name);
            }
        }
    }
    for form in ["vec1x1", "vec1x4", "vec2x1", "vec2x4"] {
        for rope in ["", "_rope"] {
            let name = format!("ssd_step{rope}_{form}_bf16");
            assert!(named.contains(&name), "no shape above takes {name}");
        }
    }
}
