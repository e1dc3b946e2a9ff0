//! Why a config file, or a catalog in it, cannot be used: every error names the key.

use std::path::PathBuf;

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {msg}")]
    Invalid { key: String, msg: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, msg: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            msg: msg.into(),
        }
    }
}
