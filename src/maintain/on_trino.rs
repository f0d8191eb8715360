//! Compaction done by Trino: floe picks the day partitions that need it
//! (its own planner and policy), Trino's `ALTER TABLE ... EXECUTE optimize`
//! rewrites them, and floe checks the result before reporting it
//! ([`crate::table::Table::check_handover`]: only `replace` snapshots, the
//! same live rows in every day, `main` put back otherwise).

use crate::error::{Error, Result};
use crate::pipeline::TrinoSettings;
use crate::table::Table;
use crate::table::iceberg::handover::Handover;
use crate::table::maintenance::{CompactOptions, CompactReport};
use crate::trino::{Outcome, TrinoClient, day_filter, quoted};

/// Has Trino compact what floe's planner picks in `table`, and checks it.
///
/// # Errors
/// When the table cannot be handed over (Delta, other partitioning), Trino
/// fails, or the check finds the data changed.
pub async fn compact(
    table: &mut Table,
    trino: &TrinoSettings,
    opts: &CompactOptions,
) -> Result<CompactReport> {
    let handover = table.plan_handover(opts).await?;
    if opts.dry_run || handover.report.input_files == 0 {
        let mut report = handover.report;
        report.engine = "trino".into();
        return Ok(report);
    }
    let client = TrinoClient::new(trino)?;
    let statement = optimize_statement(&handover, client.catalog())?;
    let session = [(
        format!("{}.target_max_file_size", client.catalog()),
        format!("{}B", handover.target_file_size),
    )];
    tracing::info!(table = %table.ident(), days = handover.days.len(), "compacting on Trino");
    match client.run_with(&statement, &session).await? {
        Outcome::Done(_) => {}
        Outcome::Failed(f) => {
            return Err(Error::Maintenance(format!(
                "{}: Trino's optimize failed: {f}; nothing was changed by floe",
                table.ident()
            )));
        }
    }
    let mut report = table.check_handover(&handover).await?;
    report.engine = "trino".into();
    Ok(report)
}

/// `ALTER TABLE ... EXECUTE optimize(file_size_threshold => ...)` on the
/// planned days.
fn optimize_statement(handover: &Handover, catalog: &str) -> Result<String> {
    let [schema] = handover.namespace.as_slice() else {
        return Err(Error::Config(format!(
            "{}.{}: Trino reads one-level namespaces",
            handover.namespace.join("."),
            handover.name
        )));
    };
    let mut sql = format!(
        "ALTER TABLE {}.{}.{} EXECUTE optimize(file_size_threshold => '{}B')",
        quoted(catalog),
        quoted(schema),
        quoted(&handover.name),
        handover.min_file_size
    );
    if let Some((column, zoned)) = &handover.day_column {
        sql.push_str(&format!(
            " WHERE {}",
            day_filter(column, &handover.days, *zoned)
        ));
    }
    Ok(sql)
}
