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
