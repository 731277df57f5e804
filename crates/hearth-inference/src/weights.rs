//! Shared checks on loaded weights.

use std::path::Path;

use burn::store::{ApplyResult, ModuleSnapshot, ModuleStore};
use burn::tensor::Tensor;

use crate::error::{InferenceError, Result};

/// A tensor's values, row-major, read back to the host (on wgpu this waits for the work).
pub(crate) fn tensor_values<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .try_into_data()
        .map_err(|e| InferenceError::Execution(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| InferenceError::Execution(format!("{e:?}")))
}

/// `[rows, cols]` row-major to `[cols, rows]` row-major.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    const TILE: usize = 32;
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// Apply `store` (opened on `path`) to `module`, then [`check_complete`].
pub(crate) fn load_complete<M: ModuleSnapshot, S: ModuleStore>(
    module: &mut M,
    store: &mut S,
    path: &Path,
) -> Result<()> {
    let result = module
        .load_from(store)
        .map_err(|e| InferenceError::Weights {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    check_complete(path, &result)
}

/// Fail unless every tensor of the model was loaded from `path` without error (wrong shapes and
/// dtypes show up as errors, absent tensors as missing).
fn check_complete(path: &Path, result: &ApplyResult) -> Result<()> {
    if let Some(error) = result.errors.first() {
        return Err(InferenceError::Weights {
            path: path.to_owned(),
            reason: format!(
                "{} tensor(s) could not be applied; first: {error:?}",
                result.errors.len()
            ),
        });
    }
    if !result.missing.is_empty() {
        let names: Vec<&str> = result
            .missing
            .iter()
            .take(5)
            .map(|(name, _)| name.as_str())
            .collect();
        return Err(InferenceError::Weights {
            path: path.to_owned(),
            reason: format!(
                "{} tensor(s) missing, e.g. {}",
                result.missing.len(),
                names.join(", ")
            ),
        });
    }
    tracing::debug!(
        path = %path.display(),
        applied = result.applied.len(),
        unused = result.unused.len(),
        "weights loaded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_value() {
        let values: Vec<f32> = (0..35).map(|v| v as f32).collect();
        let t = transpose(&values, 5, 7);
        for r in 0..5 {
            for c in 0..7 {
                assert_eq!(t[c * 5 + r], values[r * 7 + c]);
            }
        }
    }
}
