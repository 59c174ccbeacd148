//! Embedding lookup: `y[n, :] = table[ids[n], :]` with `table` `[rows, dim]`, `y` `[ids.len(), dim]`.

pub mod cpu;
pub mod cuda;
#[cfg(test)]
mod tests;

pub use cpu::gather;

use crate::{check_len, KernelError, Result};

/// Checks `table` `[rows, dim]` and that every id lies in `0..rows`.
pub fn validate(table: usize, rows: usize, dim: usize, ids: &[i64]) -> Result<()> {
    check_len("table", table, &[("rows", rows), ("dim", dim)])?;
    check_len("y", ids.len().wrapping_mul(dim), &[("ids", ids.len()), ("dim", dim)])?;
    match ids.iter().position(|&id| !usize::try_from(id).is_ok_and(|id| id < rows)) {
        Some(n) => Err(KernelError::BadParams(format!(
            "`ids[{n}]` = {} is outside the table's {rows} rows",
            ids[n]
        ))),
        None => Ok(()),
    }
}
