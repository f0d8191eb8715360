//! `[job.expect] sql`: custom tests (dbt's singular tests) over the rows a
//! run wrote, before they are committed. `{this}` is this run's written
//! files (`floe_run.<table>`), read back through the table layer, so memory
//! stays bounded however many rows the run wrote. Other tables a query
//! names are read from the catalog at their current snapshot, the job's
//! own table among them (its rows before this run: a query can compare).

use datafusion::prelude::SessionContext;
use datafusion::sql::TableReference;

use super::expect::TestCount;
use crate::error::{Error, Result};
use crate::pipeline::Job;
use crate::rest::RestClient;
use crate::table::read::Location;
use crate::table::window::{Destination, Written};

/// The schema `{this}` is registered in (no catalog namespace is read
/// under it).
const RUN_SCHEMA: &str = "floe_run";

/// Failing rows shown per test in the report's examples.
const SAMPLE_ROWS: usize = 3;

/// The outcome of each `sql` test of `job` over `written`, and a few
/// failing rows per failed test for the report's examples.
///
/// # Errors
/// A query that does not plan or run (naming the test), or a table it
/// names that the catalog does not have.
pub async fn run(
    dest: &Destination,
    job: &Job,
    written: &Written,
    client: Option<&RestClient>,
) -> Result<(Vec<TestCount>, Vec<String>)> {
    if job.expect.sql.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let this = format!("{RUN_SCHEMA}.{}", job.table);
    let ctx = SessionContext::new();
    written.register(dest, job, &ctx, &this).await?;
    let mut counts = Vec::with_capacity(job.expect.sql.len());
    let mut examples = Vec::new();
    for test in &job.expect.sql {
        let name = format!("sql({})", test.name.trim());
        // A query that does not plan is the declaration's fault (exit 2,
        // like a model's test that does not apply); one that fails while
        // running, the data's.
        let words = |e: &datafusion::error::DataFusionError| {
            format!(
                "job {}: [job.expect] {name} could not run: {}",
                job.name,
                e.find_root()
            )
        };
        let unplanned =
            |e: datafusion::error::DataFusionError| Error::Config(words(&e)).caused_by(e);
        let fail = |e: datafusion::error::DataFusionError| Error::Contract(words(&e)).caused_by(e);
        let sql = test
            .query_on(&this)
            .map_err(|e| Error::Config(format!("job {}: key `expect.sql`: {e}", job.name)))?;
        register_others(&ctx, job, &sql, &this, client).await?;
        let rows = ctx
            .sql(&sql)
            .await
            .map_err(unplanned)?
            .collect()
            .await
            .map_err(fail)?;
        let failures: usize = rows.iter().map(|b| b.num_rows()).sum();
        if failures > 0 {
            examples.push(format!("{name}: {}", sample(&rows)));
        }
        counts.push(TestCount {
            test: name,
            failures: failures as u64,
            allowed: 0,
        });
    }
    Ok((counts, examples))
}

/// Registers the catalog tables `sql` names besides `this`.
async fn register_others(
    ctx: &SessionContext,
    job: &Job,
    sql: &str,
    this: &str,
    client: Option<&RestClient>,
) -> Result<()> {
    let state = ctx.state();
    let bad = |e: datafusion::error::DataFusionError| {
        Error::Config(format!(
            "job {}: key `expect.sql`: the query does not parse: {e}",
            job.name
        ))
        .caused_by(e)
    };
    let statement = state
        .sql_to_statement(sql, &datafusion::config::Dialect::Generic)
        .map_err(bad)?;
    let references = state.resolve_table_references(&statement).map_err(bad)?;
    for reference in references {
        let ident = match &reference {
            TableReference::Partial { schema, table }
            | TableReference::Full { schema, table, .. } => {
                format!("{schema}.{table}")
            }
            // A bare name: a CTE of the query, or a mistake DataFusion
            // names when it plans.
            TableReference::Bare { .. } => continue,
        };
        if ident == this || ctx.table_exist(ident.as_str()).unwrap_or(false) {
            continue;
        }
        let client = client.ok_or_else(|| {
            Error::Config(format!(
                "job {}: key `expect.sql` reads {ident}, but no catalog is reachable",
                job.name
            ))
        })?;
        let source = Location::catalog(&ident)?
            .load(client, &ident)
            .await?
            .ok_or_else(|| {
                Error::Config(format!(
                    "job {}: key `expect.sql` reads {ident}, which the catalog does not have",
                    job.name
                ))
            })?;
        source.register(ctx, None).await?;
    }
    Ok(())
}

/// The first failing rows, one line each (`col=value, ...`).
fn sample(rows: &[arrow_array::RecordBatch]) -> String {
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in rows {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
            .collect();
        for row in 0..batch.num_rows() {
            if lines.len() == SAMPLE_ROWS {
                return lines.join("; ");
            }
            let cells: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .zip(&formatters)
                .map(|(f, fmt)| format!("{}={}", f.name(), fmt.value(row)))
                .collect();
            lines.push(cells.join(", "));
        }
    }
    lines.join("; ")
}
