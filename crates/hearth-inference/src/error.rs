//! The one error type of this crate: every failure a caller can act on has its own variant.

use std::path::PathBuf;

/// What went wrong while finding, verifying, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// A manifest is missing, unreadable or malformed.
    #[error("model manifest {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
    /// No manifest for this model id.
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// A weights file named in the manifest is not on disk.
    #[error("{path} is missing: run the setup step that fetches model weights")]
    MissingFile { path: PathBuf },
    /// A weights file has the wrong size.
    #[error("{path} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// A weights file has the wrong hash.
    #[error("{path} has sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A weights file could not be read into the model.
    #[error("could not load weights from {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    /// A GGUF file is malformed, truncated or lacks something the model needs.
    #[error("GGUF file {path}: {reason}")]
    Gguf { path: PathBuf, reason: String },
    /// The file is well formed but describes something this crate cannot run.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A request that cannot be served as asked (bad role, token limits, sampling settings).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The tokenizer file could not be used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The caller sent nothing to work on.
    #[error("input {index} is empty")]
    EmptyInput { index: usize },
    /// The caller sent more than one request may hold.
    #[error("input {index} is {actual} bytes; the limit is {limit}")]
    InputTooLong {
        index: usize,
        actual: usize,
        limit: usize,
    },
    /// A batch holds more items than one request may.
    #[error("{actual} inputs in one request; the limit is {limit}")]
    TooManyInputs { actual: usize, limit: usize },
    /// Text from the wire that is not UTF-8.
    #[error("input {index} is not valid UTF-8 (bad byte at offset {offset})")]
    InvalidUtf8 { index: usize, offset: usize },
    /// Bytes that are not an image we can read.
    #[error("input {index} is not a readable image: {reason}")]
    ImageDecode { index: usize, reason: String },
    /// An image larger than we agree to decode.
    #[error("input {index} is {width}x{height} pixels; the limit is {limit}x{limit}")]
    ImageTooLarge {
        index: usize,
        width: u32,
        height: u32,
        limit: u32,
    },
    /// The requested compute backend cannot be used here.
    #[error("backend {backend} is not available: {reason}")]
    BackendUnavailable {
        backend: &'static str,
        reason: String,
    },
    /// The backend failed while running the model.
    #[error("inference failed: {0}")]
    Execution(String),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl InferenceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = InferenceError> = std::result::Result<T, E>;
