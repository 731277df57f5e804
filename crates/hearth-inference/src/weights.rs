//! Shared checks on loaded weights.

use std::path::Path;

use burn::store::ApplyResult;

use crate::error::{InferenceError, Result};

/// Fail unless every tensor of the model was loaded from `path` without error (wrong shapes and
/// dtypes show up as errors, absent tensors as missing).
pub(crate) fn check_complete(path: &Path, result: &ApplyResult) -> Result<()> {
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
