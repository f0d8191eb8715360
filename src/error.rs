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
    /// The REST catalog refused or failed a request.
    #[error("catalog: {0}")]
    Catalog(String),
    /// The catalog (or a store) did not answer: the connection failed or
    /// dropped, or it answered with a server error. Worth retrying.
    #[error("no answer: {0}")]
    Unavailable(String),
    /// Reading or writing table files failed.
    #[error("storage: {0}")]
    Storage(String),
    /// A source could not be read.
    #[error("source: {0}")]
    Source(String),
    /// Other writers kept changing the table; the run gave up.
    #[error("commit conflict: {0}")]
    CommitConflict(String),
    /// Maintenance failed for some tables (each one's error is reported).
    #[error("maintenance: {0}")]
    Maintenance(String),
    /// A SQL model is invalid (its file, and the line and column when known).
    #[error("model {0}")]
    Model(String),
    /// A model's data tests failed; its table was not published.
    #[error("data tests failed: {0}")]
    DataTest(String),
    /// The delivered rows break the job's `[job.expect]` contract
    /// (duplicates, cadence gaps, empty days); nothing was committed.
    #[error("source contract: {0}")]
    Contract(String),
    /// An overwrite would have deleted the rows of these days (as
    /// `YYYY-MM-DD` and `YYYY-MM-DD..YYYY-MM-DD` ranges) without putting any
    /// back, and the run was not told it may; nothing was committed.
    #[error("the overwrite would empty days that hold rows: {0}")]
    WouldEmpty(String),
    /// Too many records were rejected; nothing was committed.
    #[error("{0}")]
    Rejected(String),
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
    /// Whether trying again may succeed (the catalog or store did not
    /// answer); the commit retry policy reads it.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// The process exit code: 1 when the data was the problem (rejects over
    /// the threshold, a broken source contract, failed data tests), 2 for
    /// every other error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Rejected(_) | Error::DataTest(_) | Error::Contract(_) | Error::WouldEmpty(_) => {
                1
            }
            _ => 2,
        }
    }
}
