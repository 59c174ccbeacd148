//! CPU implementations of the glue ops (the references of the CUDA kernels).

use crate::{KernelError, Result};

fn same(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(KernelError::BadParams(format!("`{what}` has {b} elements, expected {a}")));
    }
    Ok(())
}

/// `a + b`.
pub fn add(a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    same("b", a.len(), b.len())?;
    Ok(a.iter().zip(b).map(|(x, y)| x + y).collect())
}

/// `w[c]·res[r, c] + f[r, c]` with `w` of length `cols`.
pub fn scaled_residual(w: &[f32], res: &[f32], f: &[f32]) -> Result<Vec<f32>> {
    same("f", res.len(), f.len())?;
    if w.is_empty() || res.len() % w.len() != 0 {
        return Err(KernelError::BadParams(format!(
            "`w` of {} does not tile `res` of {}",
            w.len(),
            res.len()
        )));
    }
    let d = w.len();
    Ok(res.iter().zip(f).enumerate().map(|(i, (r, f))| w[i % d] * r + f).collect())
}

/// `x[r, :]·mask[r]` for `x` `[rows, cols]` and `mask` `[rows]`.
pub fn mask_rows(x: &[f32], mask: &[i64], cols: usize) -> Result<Vec<f32>> {
    same("x", mask.len() * cols, x.len())?;
    Ok(x.iter().enumerate().map(|(i, v)| v * mask[i / cols.max(1)] as f32).collect())
}

/// `[a, b, c, d] → [a, c, b, d]`.
pub fn swap_axes_12(x: &[f32], dims: [usize; 4]) -> Result<Vec<f32>> {
    let [a, b, c, d] = dims;
    same("x", a * b * c * d, x.len())?;
    let mut out = Vec::with_capacity(x.len());
    for ia in 0..a {
        for ic in 0..c {
            for ib in 0..b {
                let src = ((ia * b + ib) * c + ic) * d;
                out.extend_from_slice(&x[src..src + d]);
            }
        }
    }
    Ok(out)
}

/// Rows of `x` (`outer` × `inner_a`) and `y` (`outer` × `inner_b`) interleaved: `[x_0, y_0, x_1, y_1, ...]`.
pub fn concat(
    x: &[f32],
    y: &[f32],
    outer: usize,
    inner_a: usize,
    inner_b: usize,
) -> Result<Vec<f32>> {
    same("x", outer * inner_a, x.len())?;
    same("y", outer * inner_b, y.len())?;
    let mut out = Vec::with_capacity(x.len() + y.len());
    for o in 0..outer {
        out.extend_from_slice(&x[o * inner_a..(o + 1) * inner_a]);
        out.extend_from_slice(&y[o * inner_b..(o + 1) * inner_b]);
    }
    Ok(out)
}

/// Columns `start..start+len` of each row of `x` (`rows × cols`).
pub fn slice_cols(x: &[f32], cols: usize, start: usize, len: usize) -> Result<Vec<f32>> {
    if start + len > cols || (cols > 0 && x.len() % cols != 0) {
        return Err(KernelError::BadParams(format!(
            "columns {start}..{} of rows of {cols}",
            start + len
        )));
    }
    Ok(x.chunks(cols.max(1)).flat_map(|r| r[start..start + len].iter().copied()).collect())
}

/// `dst[o, pos + r, :] = x[o, r, :]`: `x` holds `outer` blocks of `rows × inner`, `dst` `outer` blocks of
/// `cap × inner`, and rows `pos..pos + rows` of each block are replaced.
pub fn place_rows<T: Copy>(
    x: &[T],
    dst: &mut [T],
    outer: usize,
    rows: usize,
    inner: usize,
    cap: usize,
    pos: usize,
) -> Result<()> {
    same("x", outer * rows * inner, x.len())?;
    same("dst", outer * cap * inner, dst.len())?;
    if pos + rows > cap {
        return Err(KernelError::BadParams(format!(
            "rows {pos}..{} exceed the capacity {cap}",
            pos + rows
        )));
    }
    for o in 0..outer {
        let at = (o * cap + pos) * inner;
        dst[at..at + rows * inner].copy_from_slice(&x[o * rows * inner..(o + 1) * rows * inner]);
    }
    Ok(())
}
