//! `on_entry_error = "skip"`: a `for_each` entry whose requests failed (a
//! ticker the API refuses today) must not sink the others nor erase its own
//! rows. Its rows of the days it was not fetched for are read from the
//! table as it is and written again with the run's rows, so the overwrite
//! keeps them exactly (their `_ingest_time`, `_source` and `_hash` too).

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::RecordBatch;
use chrono::NaiveDate;

use super::Unit;
use crate::error::{Error, Result};
use crate::pipeline::{EntryErrors, Job, Source};
use crate::table::days::{day_number, describe_days};
use crate::table::window::Destination;

/// An entry's key columns (table column ← entry key) and the days whose
/// rows of it are kept.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The entry.
    pub entry: BTreeMap<String, String>,
    /// Days (since 1970-01-01) nothing was fetched for.
    pub days: BTreeSet<i32>,
}

/// The columns that tell a `for_each` entry's rows apart: each job column
/// that reads one of the entry's keys, with the key.
///
/// # Errors
/// When no column reads a key: the entry's rows could not be found, so
/// skipping it would erase them.
pub fn key_columns(job: &Job) -> Result<Vec<(String, String)>> {
    let Source::Http(h) = &job.source else {
        return Ok(Vec::new());
    };
    let keys: BTreeSet<&String> = h.for_each.iter().flat_map(|e| e.keys()).collect();
    let columns: Vec<(String, String)> = job
        .columns
        .iter()
        .filter(|c| keys.contains(&c.source_field().to_string()))
        .map(|c| (c.name.clone(), c.source_field().to_string()))
        .collect();
    if columns.is_empty() && h.on_entry_error == EntryErrors::Skip {
        return Err(Error::Config(format!(
            "job {}: on_entry_error = \"skip\" keeps a failed entry's rows by the columns that hold its for_each keys ({}); add one to the job's columns, e.g. {{ name = \"{}\", type = \"string\" }}",
            job.name,
            keys.iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            keys.iter().next().map_or("key", |k| k.as_str()),
        )));
    }
    Ok(columns)
}

/// The entries (with their days) no page was landed for: the failed ones.
pub fn missing(job: &Job, days: &[NaiveDate], units: &[Unit]) -> Vec<Carried> {
    let Source::Http(h) = &job.source else {
        return Vec::new();
    };
    if h.on_entry_error != EntryErrors::Skip {
        return Vec::new();
    }
    let mut out = Vec::new();
    for entry in &h.for_each {
        let missing: BTreeSet<i32> = days
            .iter()
            .map(|d| day_number(*d))
            .filter(|d| {
                !units
                    .iter()
                    .any(|u| u.vars.as_ref() == Some(entry) && u.keep.contains(d))
            })
            .collect();
        if !missing.is_empty() {
            out.push(Carried {
                entry: entry.clone(),
                days: missing,
            });
        }
    }
    out
}

/// The table's rows of the `carried` entries on their days, as they are.
///
/// # Errors
/// When the table cannot be read.
pub async fn rows(dest: &Destination, job: &Job, carried: &[Carried]) -> Result<Vec<RecordBatch>> {
    if carried.is_empty() {
        return Ok(Vec::new());
    }
    let columns = key_columns(job)?;
    let ident = job.table_ident();
    let Some(source) = dest.source(&ident).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in carried {
        let days = job.has_event_time().then_some(&c.days);
        let conditions: Vec<String> = columns
            .iter()
            .filter_map(|(column, key)| {
                let value = c.entry.get(key)?;
                Some(format!(
                    "CAST(\"{}\" AS VARCHAR) = '{}'",
                    column.replace('"', "\"\""),
                    value.replace('\'', "''")
                ))
            })
            .collect();
        let sql = format!("SELECT * FROM {ident} WHERE {}", conditions.join(" AND "));
        let query = |e: datafusion::error::DataFusionError| {
            Error::Storage(format!(
                "reading the rows of the skipped entry {:?} (days {}): {e}",
                c.entry,
                describe_days(&c.days)
            ))
            .caused_by(e)
        };
        let batches = source.query(days, &sql, query).await?;
        out.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
    }
    Ok(out)
}
