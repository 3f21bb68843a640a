//! The engine's error type. Errors are values with a kind so that the CLI can print them and a server can map
//! them to a status code; every message names the file and, where one is involved, the tensor.

use std::path::PathBuf;

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it claims to be: bad magic, truncated, offsets out of bounds, bad metadata.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// The file is well formed but holds something hearth does not run (an architecture or weight type).
    #[error("{path}: unsupported: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// A required tensor is absent or has the wrong shape.
    #[error("{path}: tensor {tensor}: {msg}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// The request itself is wrong: a prompt longer than the context, a chat without a template.
    #[error("{0}")]
    BadRequest(String),
    /// The device (a GPU's memory) cannot hold what was asked: a model's weights, a KV cache.
    #[error("{0}")]
    OutOfMemory(String),
    /// Anything else: a tokenizer or template failure.
    #[error("{0}")]
    Other(String),
}

/// Shorthand used throughout the engine.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn unsupported(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn tensor(
        path: impl Into<PathBuf>,
        tensor: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
