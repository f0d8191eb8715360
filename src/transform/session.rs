//! DataFusion sessions for models and their tests: every table a query
//! reads is registered under its `namespace.table` name at one snapshot,
//! optionally restricted to some days of its `day(...)` partitioning: the
//! files of those day partitions (exact, no row filter), or, when some
//! files were written under another partition spec, a view with the day
//! predicate (pushed into the scan for pruning, then applied to the rows).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use datafusion::prelude::{SessionConfig, SessionContext};
use iceberg::table::Table;

use super::changes::day_column;
use super::provider::SnapshotTable;
use crate::error::{Error, Result};

/// Schema holding the unrestricted tables behind day-restricted views.
const HIDDEN_SCHEMA: &str = "floe_internal";

/// A table as a query sees it: one snapshot (none: no data yet).
#[derive(Debug, Clone)]
pub struct Source {
    /// `namespace.table`.
    pub name: String,
    /// The table (metadata including the snapshot).
    pub table: SourceTable,
    /// The snapshot read (a Delta table's version).
    pub snapshot_id: Option<i64>,
}

/// An upstream table of either format.
#[derive(Debug, Clone)]
pub enum SourceTable {
    /// An Iceberg table from the catalog.
    Iceberg(Table),
    /// A Delta table, loaded at the version read.
    Delta(Arc<deltalake::DeltaTable>),
}

/// A session with floe's settings: SQL spans on (so errors can name a line
/// and column), identifiers case-insensitive as in Spark and Trino.
pub fn context() -> SessionContext {
    let mut config = SessionConfig::new().with_information_schema(false);
    config.options_mut().sql_parser.collect_spans = true;
    SessionContext::new_with_config(config)
}

/// Registers `source` under its name, restricted to `days` when given and
/// the table is day-partitioned on a timestamp column.
///
/// # Errors
/// When the snapshot cannot be opened or the name is not `namespace.table`.
pub async fn register(
    ctx: &SessionContext,
    source: &Source,
    days: Option<&BTreeSet<i32>>,
) -> Result<()> {
    let (namespace, table) = source
        .name
        .split_once('.')
        .ok_or_else(|| Error::Model(format!("table {} needs a namespace", source.name)))?;
    let iceberg_table = match &source.table {
        SourceTable::Iceberg(t) => t,
        SourceTable::Delta(t) => {
            let provider = super::delta::provider(ctx, &source.name, t, days).await?;
            ensure_schema(ctx, namespace);
            ctx.register_table(format!("{namespace}.{table}"), provider)
                .map_err(|e| Error::Model(format!("cannot register {}: {e}", source.name)))?;
            return Ok(());
        }
    };
    let snapshot = SnapshotTable::new(iceberg_table.clone(), source.snapshot_id)?;
    let restricted = days.zip(day_column(iceberg_table.metadata()));
    let provider: Arc<dyn TableProvider> = match restricted {
        None => Arc::new(snapshot),
        // Whole day partitions: the files are chosen by partition value.
        Some((days, _)) if snapshot.days_are_exact().await? => {
            Arc::new(snapshot.only_days(days.clone()))
        }
        // Some files were written under another spec: filter the rows.
        Some((days, column)) => {
            let provider: Arc<dyn TableProvider> = Arc::new(snapshot);
            let tz = match provider
                .schema()
                .field_with_name(&column)
                .map(|f| f.data_type())
            {
                Ok(DataType::Timestamp(_, tz)) => tz.clone(),
                _ => None,
            };
            let hidden = format!("{namespace}__{table}");
            ensure_schema(ctx, HIDDEN_SCHEMA);
            ctx.register_table(format!("{HIDDEN_SCHEMA}.{hidden}"), provider.clone())
                .map_err(|e| Error::Model(format!("cannot register {}: {e}", source.name)))?;
            let plan = LogicalPlanBuilder::scan(
                format!("{HIDDEN_SCHEMA}.{hidden}"),
                provider_as_source(provider),
                None,
            )
            .and_then(|b| b.filter(day_predicate(&column, days, tz)))
            .and_then(|b| b.build())
            .map_err(|e| Error::Model(format!("cannot restrict {} to days: {e}", source.name)))?;
            Arc::new(ViewTable::new(plan, None))
        }
    };
    ensure_schema(ctx, namespace);
    ctx.register_table(format!("{namespace}.{table}"), provider)
        .map_err(|e| Error::Model(format!("cannot register {}: {e}", source.name)))?;
    Ok(())
}

pub(super) fn ensure_schema(ctx: &SessionContext, name: &str) {
    if let Some(catalog) = ctx.catalog("datafusion")
        && catalog.schema(name).is_none()
    {
        // Registering over an existing schema is impossible here (checked).
        let _ = catalog.register_schema(name, Arc::new(MemorySchemaProvider::new()));
    }
}

/// `column` within any of `days` (contiguous days become one range).
pub fn day_predicate(column: &str, days: &BTreeSet<i32>, tz: Option<Arc<str>>) -> Expr {
    let ts = |day: i32| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(i64::from(day) * crate::table::days::MICROS_PER_DAY),
            tz.clone(),
        ))
    };
    crate::table::days::day_ranges(days)
        .into_iter()
        .map(|(lo, hi)| col(column).gt_eq(ts(lo)).and(col(column).lt(ts(hi + 1))))
        .reduce(Expr::or)
        .unwrap_or(lit(false))
}
