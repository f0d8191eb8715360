//! Rejected records: kept with their reason in `<table>__rejects` (raw
//! record, reason, source, line, job, run id), appended once per run by
//! the table layer. `raw` is text; a record that is not UTF-8 is there
//! lossily (U+FFFD for the bad bytes) and exactly in `raw_bytes`, which is
//! null for every other reject (the text says it all).

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use chrono::Utc;
use serde::Serialize;

use super::IngestRequest;
use super::fields::RecordView;
use super::records::Unreadable;
use crate::error::{Error, Result};
use crate::pipeline::Job;

/// One rejected record.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    /// The record as read (lossy when the bytes are not UTF-8).
    pub raw: String,
    /// The exact bytes of the record when they are not UTF-8.
    #[serde(skip)]
    pub raw_bytes: Option<Vec<u8>>,
    /// Why it was rejected.
    pub reason: String,
    /// The file it came from.
    pub source: String,
    /// Its line (or record number).
    pub line: u64,
}

impl Reject {
    /// A record that failed conversion.
    pub(super) fn new(record: &impl RecordView, reason: String, source: &str) -> Self {
        Self {
            raw: record.raw().to_string(),
            raw_bytes: None,
            reason,
            source: source.to_string(),
            line: record.line(),
        }
    }

    /// Text that was not a record at all.
    pub(super) fn unreadable(u: Unreadable, source: &str) -> Self {
        Self {
            raw: u.raw,
            raw_bytes: u.raw_bytes,
            reason: u.reason,
            source: source.to_string(),
            line: u.line,
        }
    }
}

/// A run's rejects as one batch of the rejects table's schema `arrow`.
pub(super) fn batch(
    arrow: arrow_schema::SchemaRef,
    job: &Job,
    req: &IngestRequest,
    rejects: &[Reject],
) -> Result<RecordBatch> {
    let now = Utc::now().timestamp_micros();
    let n = rejects.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("+00:00")),
        Arc::new(StringArray::from(vec![job.name.as_str(); n])),
        Arc::new(StringArray::from(vec![req.run_id.as_str(); n])),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rejects.iter().map(|r| r.line as i64),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.reason.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rejects.iter().map(|r| r.raw.as_str()),
        )),
        Arc::new(BinaryArray::from_iter(
            rejects.iter().map(|r| r.raw_bytes.as_deref()),
        )),
    ];
    // Each column in the schema's own type (binary may be large binary).
    let columns = columns
        .iter()
        .zip(arrow.fields())
        .map(|(c, f)| arrow_cast::cast(c, f.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))?;
    RecordBatch::try_new(arrow, columns)
        .map_err(|e| Error::Storage(format!("rejects batch: {e}")).caused_by(e))
}
