//! The floe library's error type.

/// Result alias with floe's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a floe command, grouped by what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag, environment variable or file setting is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The catalog server could not start.
    #[error("catalog server: {0}")]
    CatalogStart(#[from] floe_catalog::StartError),
    /// An I/O failure outside storage (signals, the terminal, local folders).
    #[error("{context}: {source}")]
    Io {
        /// What floe was doing.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error: 2 for usage and configuration
    /// problems, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}
