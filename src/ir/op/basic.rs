//! Inference for the dense building blocks: embedding, norms, linears, residuals, MLPs and shape ops.

use super::arity;
use crate::ir::dim::Dim;
use crate::ir::dtype::DType;
use crate::ir::fact::Fact;
use anyhow::{bail, Result};

/// Fails unless `f` has dtype `dt`.
pub(crate) fn want_dtype(f: &Fact, dt: DType, what: &str) -> Result<()> {
    if f.dtype != dt {
        bail!("{what} {f} must be {dt}");
    }
    Ok(())
}

/// Fails unless `f` has rank `r`.
pub(crate) fn want_rank(f: &Fact, r: usize, what: &str) -> Result<()> {
    if f.rank() != r {
        bail!("{what} {f} must have rank {r}");
    }
    Ok(())
}

/// Fails unless `f` has rank at least `r`.
pub(crate) fn want_min_rank(f: &Fact, r: usize, what: &str) -> Result<()> {
    if f.rank() < r {
        bail!("{what} {f} must have rank at least {r}");
    }
    Ok(())
}

/// Fails unless the two dims are equal.
pub(crate) fn want_dim(got: &Dim, want: &Dim, what: &str) -> Result<()> {
    if got != want {
        bail!("{what} is {got}, must be {want}");
    }
    Ok(())
}

/// Fails unless `f` is f32 with exactly the shape `dims`.
pub(crate) fn want_shape(f: &Fact, dims: &[Dim], what: &str) -> Result<()> {
    want_dtype(f, DType::F32, what)?;
    if f.shape.as_slice() != dims {
        let want = Fact::new(DType::F32, dims.iter().cloned());
        bail!("{what} {f} must be {want}");
    }
    Ok(())
}

fn last(f: &Fact) -> &Dim {
    f.shape.last().expect("rank checked by the caller")
}

pub(crate) fn infer_embedding(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::I64, "ids")?;
    want_dtype(i[1], DType::F32, "table")?;
    want_rank(i[1], 2, "table")?;
    let mut shape = i[0].shape.clone();
    shape.push(i[1].shape[1].clone());
    Ok(Fact { dtype: DType::F32, shape })
}

pub(crate) fn infer_rms_norm(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::F32, "x")?;
    want_min_rank(i[0], 1, "x")?;
    want_shape(i[1], &[last(i[0]).clone()], "w")?;
    Ok(i[0].clone())
}

pub(crate) fn infer_linear(i: &[&Fact], bias: bool) -> Result<Fact> {
    arity(i, if bias { 3 } else { 2 })?;
    want_dtype(i[0], DType::F32, "x")?;
    want_min_rank(i[0], 1, "x")?;
    want_dtype(i[1], DType::F32, "w")?;
    want_rank(i[1], 2, "w")?;
    if &i[1].shape[1] != last(i[0]) {
        bail!("w {} must have {} input features, the last axis of x {}", i[1], last(i[0]), i[0]);
    }
    let out = i[1].shape[0].clone();
    if bias {
        want_shape(i[2], std::slice::from_ref(&out), "b")?;
    }
    let mut shape = i[0].shape.clone();
    *shape.last_mut().expect("rank checked") = out;
    Ok(Fact { dtype: DType::F32, shape })
}

pub(crate) fn infer_scaled_residual(i: &[&Fact]) -> Result<Fact> {
    arity(i, 3)?;
    want_dtype(i[1], DType::F32, "r")?;
    want_min_rank(i[1], 1, "r")?;
    want_shape(i[0], &[last(i[1]).clone()], "w")?;
    if i[2] != i[1] {
        bail!("f {} must match r {}", i[2], i[1]);
    }
    Ok(i[1].clone())
}

pub(crate) fn infer_add(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::F32, "a")?;
    if i[0] != i[1] {
        bail!("b {} must match a {}", i[1], i[0]);
    }
    Ok(i[0].clone())
}

fn linear_chain(x: &Fact, weights: &[(&Fact, &str)], biases: Option<&[&Fact]>) -> Result<Fact> {
    let mut cur = x.clone();
    for (n, (w, name)) in weights.iter().enumerate() {
        let mut ops: Vec<&Fact> = vec![&cur, w];
        if let Some(b) = biases {
            ops.push(b[n]);
        }
        cur = infer_linear(&ops, biases.is_some()).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    }
    Ok(cur)
}

pub(crate) fn infer_gated_mlp(i: &[&Fact], bias: bool) -> Result<Fact> {
    arity(i, if bias { 7 } else { 4 })?;
    let biases = bias.then(|| &i[4..7]);
    let gate = linear_chain(i[0], &[(i[1], "w_gate")], biases.map(|b| &b[0..1]))?;
    let up = linear_chain(i[0], &[(i[2], "w_up")], biases.map(|b| &b[1..2]))?;
    if gate != up {
        bail!("w_gate {} and w_up {} must have the same shape", i[1], i[2]);
    }
    let out = linear_chain(&up, &[(i[3], "w_down")], biases.map(|b| &b[2..3]))?;
    if out != *i[0] {
        bail!("w_down {} must map back to the width of x {}", i[3], i[0]);
    }
    Ok(out)
}

pub(crate) fn infer_mlp(i: &[&Fact], bias: bool) -> Result<Fact> {
    arity(i, if bias { 5 } else { 3 })?;
    let biases = bias.then(|| &i[3..5]);
    let out = linear_chain(i[0], &[(i[1], "w_up"), (i[2], "w_down")], biases)?;
    if out != *i[0] {
        bail!("w_down {} must map back to the width of x {}", i[2], i[0]);
    }
    Ok(out)
}

pub(crate) fn infer_split_last(i: &[&Fact], parts: usize) -> Result<Fact> {
    arity(i, 1)?;
    want_min_rank(i[0], 1, "x")?;
    let Some(n) = last(i[0]).as_konst() else { bail!("x {} must have a constant last axis", i[0]) };
    if parts == 0 || n % parts as i64 != 0 {
        bail!("last axis of x {} does not split into {parts} parts", i[0]);
    }
    let mut shape = i[0].shape.clone();
    *shape.last_mut().expect("rank checked") = Dim::from(parts);
    shape.push(Dim::konst(n / parts as i64));
    Ok(Fact { dtype: i[0].dtype, shape })
}

pub(crate) fn infer_merge_last(i: &[&Fact]) -> Result<Fact> {
    arity(i, 1)?;
    want_min_rank(i[0], 2, "x")?;
    let mut shape = i[0].shape.clone();
    let m = shape.pop().expect("rank checked");
    let n = shape.pop().expect("rank checked");
    shape.push(&n * &m);
    Ok(Fact { dtype: i[0].dtype, shape })
}

pub(crate) fn infer_permute(i: &[&Fact], perm: &[usize]) -> Result<Fact> {
    arity(i, 1)?;
    want_rank(i[0], perm.len(), "x")?;
    let mut seen = vec![false; perm.len()];
    for &p in perm {
        if p >= perm.len() || std::mem::replace(&mut seen[p], true) {
            bail!("{perm:?} is not a permutation of 0..{}", perm.len());
        }
    }
    Ok(Fact { dtype: i[0].dtype, shape: perm.iter().map(|&p| i[0].shape[p].clone()).collect() })
}

pub(crate) fn infer_concat(i: &[&Fact], axis: usize) -> Result<Fact> {
    arity(i, 2)?;
    if i[0].dtype != i[1].dtype || i[0].rank() != i[1].rank() || axis >= i[0].rank() {
        bail!("cannot concatenate {} and {} along axis {axis}", i[0], i[1]);
    }
    let mut shape = i[0].shape.clone();
    for (ax, (a, b)) in i[0].shape.iter().zip(&i[1].shape).enumerate() {
        if ax == axis {
            shape[ax] = a + b;
        } else if a != b {
            bail!("cannot concatenate {} and {} along axis {axis}: axis {ax} differs", i[0], i[1]);
        }
    }
    Ok(Fact { dtype: i[0].dtype, shape })
}

pub(crate) fn infer_mask_tokens(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::F32, "x")?;
    want_rank(i[0], 3, "x")?;
    want_dtype(i[1], DType::I64, "attention_mask")?;
    want_rank(i[1], 2, "attention_mask")?;
    want_dim(&i[1].shape[0], &i[0].shape[0], "batch of attention_mask")?;
    Ok(i[0].clone())
}

pub(crate) fn infer_residual_rms_norm(
    i: &[&Fact],
    scaled: bool,
) -> Result<smallvec::SmallVec<[Fact; 1]>> {
    let h = if scaled {
        arity(i, 4)?;
        infer_scaled_residual(&i[..3])?
    } else {
        arity(i, 3)?;
        infer_add(&i[..2])?
    };
    let y = infer_rms_norm(&[&h, i[i.len() - 1]])?;
    Ok(smallvec::smallvec![h, y])
}

pub(crate) fn infer_slice_last(i: &[&Fact], start: usize, len: usize) -> Result<Fact> {
    arity(i, 1)?;
    want_min_rank(i[0], 1, "x")?;
    match last(i[0]).as_konst() {
        Some(n) if len > 0 && (start + len) as i64 <= n => {}
        _ => bail!("columns {start}..{} are outside the last axis of x {}", start + len, i[0]),
    }
    let mut shape = i[0].shape.clone();
    *shape.last_mut().expect("rank checked") = Dim::from(len);
    Ok(Fact { dtype: i[0].dtype, shape })
}
