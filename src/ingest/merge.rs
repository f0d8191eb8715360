//! `mode = "merge"`: the run's rows replace the table's rows with the same
//! `unique_key`, wherever they are, and every other row is kept (dlt's
//! `merge` write disposition; an incremental database read by `cursor`
//! lands this way, so a changed row comes back once, never twice).
//!
//! With an event time, only the days that hold a run row or a row it
//! replaces are rewritten. The old days of the run's keys are found by a
//! join of the table's key and time columns with the run's keys, streamed.
//! Those days' other rows are kept, and the commit overwrites exactly
//! those days. Without an event time the whole table is rewritten. The
//! run's rows are held in memory (an increment), the table is not.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Date32Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::scd2::ident;
use crate::error::{Error, Result};
use crate::pipeline::{EVENT_TIME_COLUMN, Job};
use crate::table::read::register_as;
use crate::table::window::Destination;

/// What a merge writes.
#[derive(Debug)]
pub struct Merged {
    /// The run's rows and the kept rows of the days (or table) rewritten.
    pub rows: Vec<RecordBatch>,
    /// The days rewritten (none: the whole table).
    pub days: Option<BTreeSet<i32>>,
}

/// The rows to write and the days they replace when `new` (the run's rows,
/// in `schema`) is merged into the table by `job.unique_key`.
///
/// # Errors
/// A key repeated in the run's rows, or a query that fails.
pub async fn merge(
    dest: &Destination,
    job: &Job,
    schema: &SchemaRef,
    new: Vec<RecordBatch>,
) -> Result<Merged> {
    let by_day = job.has_event_time();
    if new.iter().all(|b| b.num_rows() == 0) {
        return Ok(Merged {
            rows: Vec::new(),
            days: Some(BTreeSet::new()),
        });
    }
    let fail = |what: &'static str| {
        move |e: datafusion::error::DataFusionError| {
            Error::Storage(format!("job {}: merge {what}: {e}", job.name)).caused_by(e)
        }
    };
    // The run's rows as a table, shared by both contexts below.
    let run: Arc<MemTable> =
        Arc::new(MemTable::try_new(schema.clone(), vec![new.clone()]).map_err(fail("run rows"))?);
    let ctx = SessionContext::new();
    register_as(&ctx, "run.new", run.clone())?;
    let keys: Vec<String> = job.unique_key.iter().map(|k| ident(k)).collect();
    super::scd2::repeated_keys(&ctx, job, &keys).await?;
    let run_days = if by_day {
        days_of(&ctx, "SELECT DISTINCT CAST(ts_utc AS DATE) FROM run.new").await?
    } else {
        BTreeSet::new()
    };
    let Some(current) = dest.source(&job.table_ident()).await? else {
        // The first run: every row is new.
        return Ok(Merged {
            rows: new,
            days: by_day.then_some(run_days),
        });
    };
    let on = keys
        .iter()
        .map(|k| format!("c.{k} = n.{k}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    let table: String = current
        .name
        .split('.')
        .map(ident)
        .collect::<Vec<_>>()
        .join(".");
    let days = if by_day {
        current.register(&ctx, None).await?;
        let old = days_of(
            &ctx,
            &format!(
                "SELECT DISTINCT CAST(c.{t} AS DATE) FROM {table} c JOIN run.new n ON {on}",
                t = ident(EVENT_TIME_COLUMN)
            ),
        )
        .await?;
        Some(run_days.union(&old).copied().collect::<BTreeSet<i32>>())
    } else {
        None
    };
    // The kept rows: the rewritten days' (or the table's) rows whose key
    // the run does not bring.
    let kept_ctx = SessionContext::new();
    register_as(&kept_ctx, "run.new", run)?;
    current.register(&kept_ctx, days.as_ref()).await?;
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("c.{}", ident(f.name())))
        .collect();
    let sql = format!(
        "SELECT {} FROM {table} c LEFT ANTI JOIN run.new n ON {on}",
        columns.join(", ")
    );
    let kept = kept_ctx
        .sql(&sql)
        .await
        .map_err(fail("kept rows"))?
        .collect()
        .await
        .map_err(fail("kept rows"))?;
    let mut rows = kept
        .iter()
        .map(|b| crate::table::content::conform(b, schema, &job.name))
        .collect::<Result<Vec<_>>>()?;
    rows.extend(new);
    Ok(Merged { rows, days })
}

/// The days (since 1970-01-01) of a query's one date column.
async fn days_of(ctx: &SessionContext, sql: &str) -> Result<BTreeSet<i32>> {
    let fail = |e: datafusion::error::DataFusionError| {
        Error::Storage(format!("merge: finding the days to rewrite: {e}")).caused_by(e)
    };
    let batches = ctx
        .sql(sql)
        .await
        .map_err(fail)?
        .collect()
        .await
        .map_err(fail)?;
    let mut out = BTreeSet::new();
    for b in &batches {
        let dates = b.column(0).as_primitive::<Date32Type>();
        out.extend(
            (0..dates.len())
                .filter(|i| dates.is_valid(*i))
                .map(|i| dates.value(i)),
        );
    }
    Ok(out)
}
