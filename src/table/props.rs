//! Table properties floe reads and the keys floe records in snapshot
//! summaries (Iceberg) and commit info (Delta), in one place.

use std::collections::HashMap;

/// The run that made a snapshot or commit (`--run-id`).
pub const RUN_ID_KEY: &str = "floe.run-id";
/// The job (or `transform:<model>`) that made it.
pub const JOB_KEY: &str = "floe.job";
/// The window an ingest run replaced (`from/to`).
pub const WINDOW_KEY: &str = "floe.window";
/// Per job: the newest run id, carried forward by every later snapshot so
/// that a retried run finds its commit even after others landed.
pub const LAST_RUN_PREFIX: &str = "floe.last-run.";
/// State a later run reads back (carried forward like the run records).
pub const STATE_PREFIX: &str = "floe.state.";
/// A Kafka job's next offsets, `{"topic": {"partition": next_offset}}`,
/// committed with the rows they delivered (a state key: carried forward).
pub const KAFKA_OFFSETS_KEY: &str = "floe.state.kafka.offsets";
/// A database source's cursor: the largest value committed.
pub const DATABASE_CURSOR_KEY: &str = "floe.state.database.cursor";

/// The table property naming the data file size to aim for.
pub const TARGET_FILE_SIZE: &str = "write.target-file-size-bytes";
/// The data file size when a table does not name one (as Iceberg's).
pub const DEFAULT_TARGET_FILE_SIZE: usize = 128 * 1024 * 1024;

/// The target data file size in `props` (a table's, or a job's).
pub fn target_file_size(props: &impl Properties) -> usize {
    props
        .property(TARGET_FILE_SIZE)
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE)
}

/// Property maps of either kind (a table's, a job's).
pub trait Properties {
    /// The value of `key`.
    fn property(&self, key: &str) -> Option<&str>;
}

impl Properties for HashMap<String, String> {
    fn property(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Properties for std::collections::BTreeMap<String, String> {
    fn property(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}
