//! The node's identity: its ed25519 key, kept in the data folder readable by the owner alone.

use std::path::Path;

use hearth_protocol::KeyPair;

use super::WorkerError;

/// Load the node's key from `path`, or create it (mode 0600) on first run.
pub fn load_or_create_identity(path: &Path) -> Result<KeyPair, WorkerError> {
    let bad = |reason: String| WorkerError::Identity {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => KeyPair::from_secret_bytes(&bytes).map_err(|e| bad(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = KeyPair::generate().map_err(|e| bad(e.to_string()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| bad(hearth_instance::explain_io(&e)))?;
            }
            hearth_instance::write_private(path, &key.secret_bytes())
                .map_err(|e| bad(hearth_instance::explain_io(&e)))?;
            Ok(key)
        }
        Err(e) => Err(bad(hearth_instance::explain_io(&e))),
    }
}
