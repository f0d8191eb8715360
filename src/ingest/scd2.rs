//! `mode = "scd2"`: reference data with its history, as dbt's snapshots
//! keep it. A run's rows are collected (a reference list is small), then
//! merged with the table per `unique_key`:
//! - a current version whose columns did not change stays as it is;
//! - one that changed is closed (`_valid_to` = the run's time) and the new
//!   version opened (`_valid_from` = the run's time, `_valid_to` null);
//! - a key gone from the source is closed; a new key is opened;
//! - closed versions are kept.
//!
//! The result replaces the table whole (one `overwrite` snapshot).

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::Sink;
use crate::error::{Error, Result};
use crate::pipeline::Job;
use crate::table::read::register_as;
use crate::table::schema::{HASH, INGEST_TIME, SOURCE, VALID_FROM, VALID_TO};
use crate::table::window::Destination;

/// Collects the run's batches in memory.
#[derive(Debug, Default)]
pub struct Collected {
    /// The batches, as converted.
    pub batches: Vec<RecordBatch>,
}

impl Sink for Collected {
    async fn put(&mut self, batch: RecordBatch) -> Result<bool> {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
        Ok(true)
    }
}

/// `name` as a quoted SQL identifier.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table's rows after merging the run's `new` rows into them, at the
/// run's time `now` (microseconds).
///
/// # Errors
/// A key repeated in the run's rows, or a query that fails.
pub async fn merge(
    dest: &Destination,
    job: &Job,
    schema: &SchemaRef,
    new: Vec<RecordBatch>,
    now: i64,
) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: datafusion::error::DataFusionError| {
            Error::Storage(format!("job {}: scd2 {what}: {e}", job.name)).caused_by(e)
        }
    };
    let table = MemTable::try_new(schema.clone(), vec![new.clone()]).map_err(fail("run rows"))?;
    register_as(&ctx, "run.new", Arc::new(table))?;
    let keys: Vec<String> = job.unique_key.iter().map(|k| ident(k)).collect();
    repeated_keys(&ctx, job, &keys).await?;
    let Some(current) = dest.source(&job.table_ident()).await? else {
        // The first run: every row opens its first version.
        return Ok(new);
    };
    current.register(&ctx, None).await?;
    let cur: Vec<String> = current.name.split('.').map(ident).collect();
    let sql = merge_sql(job, schema, (&cur.join("."), &keys), now);
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(fail("merge"))?
        .collect()
        .await
        .map_err(fail("merge"))?;
    batches
        .iter()
        .map(|b| crate::table::content::conform(b, schema, &job.name))
        .collect()
}

/// A key repeated in the run's rows leaves no way to tell which version is
/// current (scd2) or which row replaces the table's (merge).
pub(super) async fn repeated_keys(ctx: &SessionContext, job: &Job, keys: &[String]) -> Result<()> {
    let sql = format!(
        "SELECT {k} FROM run.new GROUP BY {k} HAVING count(*) > 1 LIMIT 5",
        k = keys.join(", ")
    );
    let found = ctx
        .sql(&sql)
        .await
        .map_err(|e| Error::Storage(format!("job {}: unique_key: {e}", job.name)).caused_by(e))?
        .collect()
        .await
        .map_err(|e| Error::Storage(format!("job {}: unique_key: {e}", job.name)).caused_by(e))?;
    let rows: usize = found.iter().map(RecordBatch::num_rows).sum();
    if rows == 0 {
        return Ok(());
    }
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(&found)
        .map(|t| t.to_string())
        .unwrap_or_default();
    Err(Error::Contract(format!(
        "job {}: the source repeats a unique_key ({}), so its current version is unknown; nothing was committed:\n{shown}",
        job.name,
        job.unique_key.join(", ")
    )))
}

/// The merge as one query over `cur` (the table, quoted) and `run.new`.
fn merge_sql(
    job: &Job,
    schema: &SchemaRef,
    (cur_table, keys): (&str, &[String]),
    now: i64,
) -> String {
    let metadata = [VALID_FROM, VALID_TO, INGEST_TIME, SOURCE, HASH];
    let all: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let values: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !metadata.contains(n) && !job.unique_key.iter().any(|k| k == n))
        .map(ident)
        .collect();
    let on = keys
        .iter()
        .map(|k| format!("c.{k} = n.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let changed = if values.is_empty() {
        "false".to_string()
    } else {
        values
            .iter()
            .map(|v| format!("(c.{v} IS DISTINCT FROM n.{v})"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    let at = format!("arrow_cast({now}, 'Timestamp(Microsecond, Some(\"+00:00\"))')");
    let cur = |alias: &str| -> String {
        all.iter()
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let closed: String = all
        .iter()
        .map(|c| {
            if *c == ident(VALID_TO) {
                format!("{at} AS {c}")
            } else {
                format!("c.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let first_key = &keys[0];
    format!(
        "SELECT {history} FROM {cur_table} c WHERE c.{vt} IS NOT NULL \
         UNION ALL \
         SELECT {kept} FROM {cur_table} c JOIN run.new n ON {on} WHERE c.{vt} IS NULL AND NOT ({changed}) \
         UNION ALL \
         SELECT {closed} FROM {cur_table} c LEFT JOIN run.new n ON {on} WHERE c.{vt} IS NULL AND (n.{first_key} IS NULL OR ({changed})) \
         UNION ALL \
         SELECT {opened} FROM run.new n LEFT JOIN (SELECT * FROM {cur_table} WHERE {vt} IS NULL) c ON {on} WHERE c.{first_key} IS NULL OR ({changed})",
        history = cur("c"),
        kept = cur("c"),
        opened = cur("n"),
        vt = ident(VALID_TO),
    )
}
