//! Rotary position embedding: the tables (with the dynamic-NTK frequency state) and their application.

use super::arity;
use super::basic::{want_dtype, want_rank, want_shape};
use crate::ir::dim::Dim;
use crate::ir::dtype::DType;
use crate::ir::fact::Fact;
use crate::model::config::DynamicNtk;
use anyhow::{bail, Result};
use smallvec::{smallvec, SmallVec};

/// RoPE table attributes. `rope_len` is the reference's `max_seq_len_cached`: it starts at
/// `max_position_embeddings` and grows to `max(positions)+1` when a call exceeds it (dynamic NTK), or resets when
/// a call stays below the original length; the frequencies are a function of it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rotary {
    /// Rotated width (the head dim).
    pub dim: usize,
    /// θ.
    pub theta: f64,
    pub dynamic: Option<DynamicNtk>,
    /// With a `rope_len` state input and output (the executor's sessions). Without it, the frequencies follow
    /// `max(M, max(positions)+1)` within the call, which equals the stateful rule for one generation from a fresh
    /// model (the export form: ONNX has no model-wide state).
    pub stateful: bool,
}

impl Rotary {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<SmallVec<[Fact; 1]>> {
        arity(i, if self.stateful { 2 } else { 1 })?;
        want_dtype(i[0], DType::I64, "positions")?;
        want_rank(i[0], 2, "positions")?;
        if self.stateful {
            want_dtype(i[1], DType::I64, "rope_len")?;
            if i[1].shape.as_slice() != [Dim::konst(1)] {
                bail!("rope_len {} must be i64[1]", i[1]);
            }
        }
        if self.dim == 0 || self.dim % 2 != 0 {
            bail!("rotary dim {} must be even and positive", self.dim);
        }
        let table =
            Fact::new(DType::F32, [i[0].shape[0].clone(), i[0].shape[1].clone(), self.dim.into()]);
        if self.stateful {
            Ok(smallvec![table.clone(), table, i[1].clone()])
        } else {
            Ok(smallvec![table.clone(), table])
        }
    }
}

pub(crate) fn infer_positions(i: &[&Fact]) -> Result<Fact> {
    arity(i, 2)?;
    want_dtype(i[0], DType::I64, "input_ids")?;
    want_rank(i[0], 2, "input_ids")?;
    want_dtype(i[1], DType::I64, "attention_mask")?;
    want_rank(i[1], 2, "attention_mask")?;
    Ok(i[0].clone())
}

pub(crate) fn infer_rope(i: &[&Fact]) -> Result<Fact> {
    arity(i, 3)?;
    want_dtype(i[0], DType::F32, "x")?;
    want_rank(i[0], 4, "x")?;
    let s = &i[0].shape;
    let table = [s[0].clone(), s[1].clone(), s[3].clone()];
    want_shape(i[1], &table, "cos")?;
    want_shape(i[2], &table, "sin")?;
    Ok(i[0].clone())
}

pub(crate) fn infer_norm_rope(i: &[&Fact]) -> Result<Fact> {
    arity(i, 4)?;
    let y = infer_rope(&[i[0], i[2], i[3]])?;
    want_shape(i[1], std::slice::from_ref(&i[0].shape[3]), "w")?;
    Ok(y)
}
