//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong when loading, running, training or saving a model or adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file (config, adapter config, tokenizer config, index) is not valid JSON or lacks a field.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A required file of a model or adapter directory is missing.
    #[error("missing file {0}")]
    MissingFile(PathBuf),
    /// A safetensors file could not be parsed (truncated, bad header, ...).
    #[error("{path}: invalid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The configuration asks for something this runtime does not support.
    #[error("unsupported configuration: {0}")]
    Unsupported(String),
    /// The configuration is self-contradictory (e.g. heads do not divide the hidden size).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A tensor the configuration requires is absent from the weights.
    #[error("tensor {0} is missing from the weights")]
    MissingTensor(String),
    /// A tensor has a different shape than the configuration implies.
    #[error("tensor {name} has shape {found:?}, but the configuration implies {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape found in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype this runtime cannot use as weights (integers, f64, ...).
    #[error("tensor {name} has dtype {dtype}, expected a float dtype (f32, bf16 or f16)")]
    BadDtype {
        /// Tensor name.
        name: String,
        /// The dtype found.
        dtype: String,
    },
    /// A PEFT adapter cannot be used with this base model or this runtime.
    #[error("adapter: {0}")]
    Adapter(String),
    /// The tokenizer failed (loading, training, encoding or decoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The caller passed arguments that do not fit together (batch sizes, adapter indices, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.into(),
            source,
        }
    }
}

/// Reads a file, mapping a missing file to [`Error::MissingFile`].
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile(path.to_path_buf())
        } else {
            Error::io(path, e)
        }
    })
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path, e))
}

/// Writes a file, creating nothing but the file itself.
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}
