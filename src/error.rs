//! The floe library's error type.

/// Result alias with floe's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A lower-level error kept as the cause of one of floe's (an I/O, HTTP,
/// Parquet, Arrow, DataFusion, Iceberg or Delta error).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// Some `for_each` entries failed and were skipped (`on_entry_error =
    /// "skip"`): the others were committed, the failed ones' rows kept.
    #[error("partial: {0}")]
    Partial(String),
    /// Too many records were rejected; nothing was committed.
    #[error("{0}")]
    Rejected(String),
    /// `error`, with the lower-level error that caused it kept as its
    /// source: the message is `error`'s, and `caused by:` lines follow the
    /// cause's own chain. What kind of error it is, whether it is
    /// retryable and its exit code are `error`'s ([`Error::kind`]).
    #[error("{error}")]
    Caused {
        /// What went wrong, in floe's terms.
        error: Box<Error>,
        /// The lower-level error.
        #[source]
        cause: Cause,
    },
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
    /// This error, keeping `cause` as its source.
    #[must_use]
    pub fn caused_by(self, cause: impl Into<Cause>) -> Error {
        Error::Caused {
            error: Box::new(self),
            cause: cause.into(),
        }
    }

    /// What kind of error this is, its cause aside.
    pub fn kind(&self) -> &Error {
        match self {
            Error::Caused { error, .. } => error.kind(),
            other => other,
        }
    }

    /// Whether trying again may succeed (the catalog or store did not
    /// answer); the commit retry policy reads it.
    pub fn retryable(&self) -> bool {
        matches!(self.kind(), Error::Unavailable(_))
    }

    /// The process exit code: 1 when the data was the problem (rejects over
    /// the threshold, a broken source contract, failed data tests), 3 when
    /// a run committed without some skipped `for_each` entries, 2 for
    /// every other error.
    pub fn exit_code(&self) -> u8 {
        match self.kind() {
            Error::Partial(_) => 3,
            Error::Rejected(_) | Error::DataTest(_) | Error::Contract(_) | Error::WouldEmpty(_) => {
                1
            }
            _ => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_kept_and_the_kind_decides() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::Unavailable(format!("GET /v1/config: {io}")).caused_by(io);
        assert_eq!(e.to_string(), "no answer: GET /v1/config: refused");
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert_eq!(cause.to_string(), "refused");
        assert!(e.retryable(), "the retry policy reads through the cause");
        assert_eq!(e.exit_code(), 2);
        let data = Error::Contract("dup".into()).caused_by(std::fmt::Error);
        assert_eq!(data.exit_code(), 1);
        assert!(matches!(data.kind(), Error::Contract(_)));
        assert!(!data.retryable());
    }
}
