//! Cross-domain mixture of experts: product-key routing, the HF router, the expert mix, and Doge-IFA's
//! inner-function values (the same retrieval applied to values).

use super::arity;
use super::basic::{want_dtype, want_rank, want_shape};
use super::{Act, ExpertAct};
use crate::ir::dim::Dim;
use crate::ir::dtype::DType;
use crate::ir::fact::Fact;
use anyhow::{bail, Result};
use smallvec::{smallvec, SmallVec};

/// Per head: `sim_p = q_p · keys[h,:,p]` for p ∈ {x, y}; top-`k` per axis; top-`k` of the k² sums;
/// expert id `ix·nk + iy` (MODEL.md §3.2 CDMoE).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PkTopK {
    pub heads: usize,
    pub num_keys: usize,
    pub k: usize,
}

/// HF Doge router: the `[B,S,2·nk]` logits read as `[2, B·S, nk]`, full sort per axis, top-`k` of nk² sums.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouterTopK {
    pub num_keys: usize,
    pub k: usize,
}

/// `Σ_h Σ_k w_hk · up[e_hk]` with `w = act(x·down[e]) · softmax(s)` (or the activation after the product).
/// Operands `(x, scores, ids, down, up)`, and with `add` a sixth of `x`'s shape added to the mixture (the
/// `expert_mix_add` fusion of the following `Add`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExpertMix {
    pub act: Act,
    pub order: ExpertAct,
    pub norm_topk: bool,
    /// The output is `mixture + operand 5`.
    #[serde(default)]
    pub add: bool,
}

/// `x ⊙ Σ_h Σ_{n ∈ topk(vq_h·v_keys[h])} v_embed[n]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InnerValues {
    pub heads: usize,
    pub k: usize,
}

fn routed(b: &Dim, s: &Dim, heads: usize, k: usize) -> SmallVec<[Fact; 1]> {
    let shape = [b.clone(), s.clone(), heads.into(), k.into()];
    smallvec![Fact::new(DType::F32, shape.clone()), Fact::new(DType::I64, shape)]
}

impl PkTopK {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<SmallVec<[Fact; 1]>> {
        arity(i, 2)?;
        want_dtype(i[1], DType::F32, "keys")?;
        want_rank(i[1], 4, "keys")?;
        let half = i[1].shape[3].clone();
        let keys = [self.heads.into(), self.num_keys.into(), Dim::konst(2), half.clone()];
        want_shape(i[1], &keys, "keys")?;
        want_rank(i[0], 3, "q")?;
        let q = &i[0].shape;
        let width = &Dim::from(2 * self.heads) * &half;
        want_shape(i[0], &[q[0].clone(), q[1].clone(), width], "q")?;
        if self.k == 0 || self.k > self.num_keys {
            bail!("k = {} must be in 1..={}", self.k, self.num_keys);
        }
        Ok(routed(&q[0], &q[1], self.heads, self.k))
    }
}

impl RouterTopK {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<SmallVec<[Fact; 1]>> {
        arity(i, 1)?;
        want_rank(i[0], 3, "logits")?;
        let q = &i[0].shape;
        want_shape(i[0], &[q[0].clone(), q[1].clone(), (2 * self.num_keys).into()], "logits")?;
        if self.k == 0 || self.k > self.num_keys * self.num_keys {
            bail!("top_k = {} must be in 1..={}", self.k, self.num_keys * self.num_keys);
        }
        Ok(routed(&q[0], &q[1], 1, self.k))
    }
}

impl ExpertMix {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<Fact> {
        arity(i, if self.add { 6 } else { 5 })?;
        want_dtype(i[0], DType::F32, "x")?;
        want_rank(i[0], 3, "x")?;
        want_rank(i[1], 4, "scores")?;
        let s = &i[1].shape;
        want_shape(
            i[1],
            &[i[0].shape[0].clone(), i[0].shape[1].clone(), s[2].clone(), s[3].clone()],
            "scores",
        )?;
        want_dtype(i[2], DType::I64, "ids")?;
        if i[2].shape != i[1].shape {
            bail!("ids {} must match scores {}", i[2], i[1]);
        }
        want_rank(i[3], 2, "down")?;
        let e = i[3].shape[0].clone();
        want_shape(i[3], &[e.clone(), i[0].shape[2].clone()], "down")?;
        want_shape(i[4], &[e, i[0].shape[2].clone()], "up")?;
        if self.add {
            want_shape(i[5], &i[0].shape, "add")?;
        }
        Ok(i[0].clone())
    }
}

impl InnerValues {
    pub(crate) fn infer(&self, i: &[&Fact]) -> Result<Fact> {
        arity(i, 4)?;
        want_dtype(i[0], DType::F32, "x")?;
        want_rank(i[0], 3, "x")?;
        want_rank(i[2], 3, "v_keys")?;
        let vk = &i[2].shape;
        want_shape(i[2], &[self.heads.into(), vk[1].clone(), vk[2].clone()], "v_keys")?;
        let x = &i[0].shape;
        want_shape(i[1], &[x[0].clone(), x[1].clone(), &Dim::from(self.heads) * &vk[1]], "vq")?;
        want_shape(i[3], &[vk[2].clone(), x[2].clone()], "v_embed")?;
        match vk[2].as_konst() {
            Some(nv) if self.k >= 1 && self.k as i64 <= nv => {}
            _ => bail!("k = {} must be in 1..={}", self.k, vk[2]),
        }
        Ok(i[0].clone())
    }
}
