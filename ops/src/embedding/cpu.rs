//! CPU implementation of the embedding lookup.

use crate::Result;

/// Rows `ids` of `table` `[rows, dim]`, concatenated into `[ids.len(), dim]`.
pub fn gather(table: &[f32], rows: usize, dim: usize, ids: &[i64]) -> Result<Vec<f32>> {
    super::validate(table.len(), rows, dim, ids)?;
    let mut y = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let row = id as usize * dim;
        y.extend_from_slice(&table[row..row + dim]);
    }
    Ok(y)
}
