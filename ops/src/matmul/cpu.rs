//! CPU implementation of the matrix products.

use gemm::{gemm, Parallelism};

use super::{LinearParams, MatmulParams};
use crate::Result;

/// Multiply-adds from which `gemm` is allowed to use every rayon thread.
const PARALLEL_WORK: usize = 1 << 16;

fn parallelism(m: usize, k: usize, n: usize) -> Parallelism {
    if m.saturating_mul(k).saturating_mul(n) >= PARALLEL_WORK {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// `y[r, o] = Σ_i x[r, i]·w[o, i] + bias[o]`, with `w` stored `[out, in]`.
pub fn linear(p: &LinearParams, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
    p.validate(x.len(), w.len(), bias.map(<[f32]>::len))?;
    let (m, k, n) = (p.rows, p.in_features, p.out_features);
    let mut y = match bias {
        Some(bias) => bias.repeat(m),
        None => vec![0.0; m * n],
    };
    // SAFETY: `validate` checked that x holds rows·in, w out·in and y rows·out elements; with
    // these sizes and strides gemm only touches offsets inside the three buffers.
    unsafe {
        gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, k, n),
        )
    };
    Ok(y)
}

/// The dynamic mask values of a projection: `m[b, h, j] = exp(a[h]·softplus(dt[b, j, h]))` with `dt = x·wᵀ (+
/// bias)` over the rows `b·seq + j` of `x` (`p.rows` a multiple of `seq`), returned as `[B, Hm, seq]`.
pub fn mask_linear(
    p: &LinearParams,
    seq: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    a: &[f32],
) -> Result<Vec<f32>> {
    if seq == 0 || p.rows % seq != 0 {
        return Err(crate::KernelError::BadParams(format!(
            "{} rows are not sequences of {seq} rows",
            p.rows
        )));
    }
    let dt = linear(p, x, w, bias)?;
    let kp =
        crate::dynamic_mask::KeyValuesParams { batch: p.rows / seq, seq, heads: p.out_features };
    crate::dynamic_mask::key_values(&kp, &dt, a)
}

/// `c[i, j] = Σ_l a[i, l]·b[l, j]` for row-major `a` `[m, k]` and `b` `[k, n]`.
pub fn matmul(p: &MatmulParams, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    p.validate(a.len(), b.len())?;
    let (m, k, n) = (p.m, p.k, p.n);
    let mut c = vec![0.0; m * n];
    // SAFETY: `validate` checked that a holds m·k, b k·n and c m·n elements; with these sizes
    // and strides gemm only touches offsets inside the three buffers.
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism(m, k, n),
        )
    };
    Ok(c)
}
