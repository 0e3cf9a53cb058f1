//! The one error type of the library. Every variant names the file (and, where it applies, the
//! tensor) so that a user of a compressor learns *which* input failed and why.
//!
//! Low-level code (codecs, entropy coder) does not know file or tensor names: it builds errors with
//! empty `file`/`tensor` fields and the caller fills them in with [`Error::in_file`] and
//! [`Error::in_tensor`].

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input file is malformed (header, offsets, sizes, values).
    #[error("{}{}{reason}", prefix(file), tensor_prefix(tensor))]
    InvalidInput {
        file: String,
        tensor: String,
        reason: String,
    },

    /// A `.lowbit` file (or a section of it) is damaged or lies about its sizes.
    #[error(
        "{}{}corrupt .lowbit data: {reason}",
        prefix(file),
        tensor_prefix(tensor)
    )]
    Corrupt {
        file: String,
        tensor: String,
        reason: String,
    },

    /// Well-formed input that this version does not handle (an unknown dtype, a newer format).
    #[error("{}{}unsupported: {reason}", prefix(file), tensor_prefix(tensor))]
    Unsupported {
        file: String,
        tensor: String,
        reason: String,
    },

    /// A user option that cannot be honoured (a bit budget below what any codec reaches, a bad pattern).
    #[error("invalid option: {reason}")]
    InvalidOption { reason: String },

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },

    /// The caller asked the run to stop (the `Progress` sink said so).
    #[error("cancelled")]
    Cancelled,

    /// The GPU failed after part of the output was written; the output is incomplete and the run
    /// must start again on the CPU (the CLI and the page do so by themselves).
    #[error("the GPU failed while the output was being written ({reason}); start again with --backend cpu")]
    GpuFailedWhileWriting { reason: String },
}

fn prefix(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

fn tensor_prefix(tensor: &str) -> String {
    if tensor.is_empty() {
        String::new()
    } else {
        format!("tensor '{tensor}': ")
    }
}

impl Error {
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            file: String::new(),
            tensor: String::new(),
            reason: reason.into(),
        }
    }

    pub fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt {
            file: String::new(),
            tensor: String::new(),
            reason: reason.into(),
        }
    }

    pub fn unsupported(reason: impl Into<String>) -> Self {
        Error::Unsupported {
            file: String::new(),
            tensor: String::new(),
            reason: reason.into(),
        }
    }

    pub fn option(reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Fills in the file name where it is still empty.
    pub fn in_file(mut self, name: &str) -> Self {
        match &mut self {
            Error::InvalidInput { file, .. }
            | Error::Corrupt { file, .. }
            | Error::Unsupported { file, .. }
                if file.is_empty() =>
            {
                *file = name.to_string()
            }
            _ => {}
        }
        self
    }

    /// Fills in the tensor name where it is still empty.
    pub fn in_tensor(mut self, name: &str) -> Self {
        match &mut self {
            Error::InvalidInput { tensor, .. }
            | Error::Corrupt { tensor, .. }
            | Error::Unsupported { tensor, .. }
                if tensor.is_empty() =>
            {
                *tensor = name.to_string()
            }
            _ => {}
        }
        self
    }
}
