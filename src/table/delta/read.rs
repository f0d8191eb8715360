//! Reading Delta tables for queries: a table at one version as a
//! DataFusion table (restricted to whole `day` partitions when asked), the
//! days changed between two versions (from the log's `add`/`remove`
//! actions), and files written but not committed yet, read as the table
//! they would become part of.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider, provider_as_source};
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use super::{Closed, DAY_COLUMN, delta_err};
use crate::error::{Error, Result};
use crate::table::read::Changed;

/// `table` as a DataFusion table at its loaded version, restricted to
/// `days` (whole `day` partitions) when given and the table has them.
///
/// # Errors
/// When the provider cannot be built.
pub async fn provider(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
    days: Option<&BTreeSet<i32>>,
) -> Result<Arc<dyn TableProvider>> {
    let fail = |e: &dyn std::fmt::Display| Error::Model(format!("cannot read {name}: {e}"));
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| fail(&e))?;
    let provider = table.table_provider().await.map_err(|e| fail(&e))?;
    let by_day = table
        .snapshot()
        .is_ok_and(|s| s.metadata().partition_columns() == [DAY_COLUMN.to_string()]);
    let Some(days) = days.filter(|_| by_day) else {
        return Ok(provider);
    };
    let date = |d: i32| lit(ScalarValue::Date32(Some(d)));
    let predicate = crate::table::days::day_ranges(days)
        .into_iter()
        .map(|(lo, hi)| {
            col(DAY_COLUMN)
                .gt_eq(date(lo))
                .and(col(DAY_COLUMN).lt_eq(date(hi)))
        })
        .reduce(datafusion::logical_expr::Expr::or)
        .unwrap_or(lit(false));
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)
        .and_then(|b| b.filter(predicate))
        .and_then(|b| b.build())
        .map_err(|e| fail(&e))?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The columns of a `day`-partitioned Delta table that lie on the UTC day
/// of its partition: `day` itself and floe's event time `ts_utc` (the
/// column floe derives `day` from); none for other tables.
pub fn day_columns(table: &DeltaTable) -> BTreeSet<String> {
    let Ok(snapshot) = table.snapshot() else {
        return BTreeSet::new();
    };
    if snapshot.metadata().partition_columns() != [DAY_COLUMN.to_string()] {
        return BTreeSet::new();
    }
    let mut columns = BTreeSet::from([DAY_COLUMN.to_string()]);
    if snapshot
        .schema()
        .field(crate::pipeline::EVENT_TIME_COLUMN)
        .is_some()
    {
        columns.insert(crate::pipeline::EVENT_TIME_COLUMN.to_string());
    }
    columns
}

/// The days of `table` whose rows changed after version `from` up to `to`:
/// the `day` of every file added or removed with `dataChange` (so
/// compactions change nothing). A commit that is gone from the log, or
/// changes the table's definition or unpartitioned files, changes
/// everything.
///
/// # Errors
/// When the log cannot be read.
pub async fn changed(table: &DeltaTable, from: Option<i64>, to: Option<i64>) -> Result<Changed> {
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(if from == to {
            Changed::Nothing
        } else {
            Changed::Everything
        });
    };
    if from == to {
        return Ok(Changed::Nothing);
    }
    if from > to {
        return Ok(Changed::Everything);
    }
    let mut days = BTreeSet::new();
    for version in (from + 1)..=to {
        let Some(entry) = table
            .log_store()
            .read_commit_entry(version as u64)
            .await
            .map_err(delta_err("reading the Delta log"))?
        else {
            return Ok(Changed::Everything);
        };
        for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                Error::Storage(format!("Delta log version {version}: {e}")).caused_by(e)
            })?;
            if action.get("metaData").is_some() || action.get("protocol").is_some() {
                return Ok(Changed::Everything);
            }
            let Some(file) = action.get("add").or_else(|| action.get("remove")) else {
                continue;
            };
            if file.get("dataChange").and_then(|v| v.as_bool()) == Some(false) {
                continue;
            }
            let day = file
                .pointer(&format!("/partitionValues/{DAY_COLUMN}"))
                .and_then(|v| v.as_str())
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            match day {
                Some(d) => {
                    let micros = d
                        .and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_micros();
                    days.insert(crate::table::days::day_of(micros));
                }
                None => return Ok(Changed::Everything),
            }
        }
    }
    Ok(if days.is_empty() {
        Changed::Nothing
    } else {
        Changed::Days(days)
    })
}

/// A schema's columns as Delta's kernel names them (`name type`).
pub(crate) fn kernel_columns(schema: &arrow_schema::Schema) -> Result<Vec<String>> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let kernel: deltalake::kernel::StructType = schema
        .try_into_kernel()
        .map_err(|e| Error::Model(format!("the Delta schema: {e}")).caused_by(e))?;
    Ok(kernel
        .fields()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect())
}

/// The written, uncommitted files as one table, read from the table's store
/// under a URL of their own, with the `day` partition column derived from
/// `time_column` as readers of the committed table see it.
pub async fn staged_provider(
    ctx: &SessionContext,
    closed: &Closed,
    file_schema: &arrow_schema::SchemaRef,
    time_column: Option<&str>,
) -> Result<Arc<dyn TableProvider>> {
    let files = staged_files(ctx, closed, file_schema).await?;
    let Some(column) = time_column else {
        return Ok(files);
    };
    let mut columns: Vec<datafusion::logical_expr::Expr> = file_schema
        .fields()
        .iter()
        .map(|f| col(f.name().as_str()))
        .collect();
    columns.push(
        datafusion::logical_expr::cast(col(column), arrow_schema::DataType::Date32)
            .alias(DAY_COLUMN),
    );
    let plan = LogicalPlanBuilder::scan("staged", provider_as_source(files), None)
        .and_then(|b| b.project(columns))
        .and_then(|b| b.build())
        .map_err(|e| Error::Model(format!("cannot read the staged files: {e}")).caused_by(e))?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The written files as a table of their own columns: their full URLs,
/// read through the store at the root of the table's bucket (or the local
/// file system).
async fn staged_files(
    ctx: &SessionContext,
    closed: &Closed,
    file_schema: &arrow_schema::SchemaRef,
) -> Result<Arc<dyn TableProvider>> {
    let fail =
        |e: &dyn std::fmt::Display| Error::Model(format!("cannot read the staged files: {e}"));
    if closed.adds.is_empty() {
        let empty =
            MemTable::try_new(file_schema.clone(), vec![Vec::new()]).map_err(|e| fail(&e))?;
        return Ok(Arc::new(empty));
    }
    let base = closed.table_url();
    let mut host = base.clone();
    host.set_path("/");
    ctx.register_object_store(&host, closed.root_store());
    let urls = closed
        .adds
        .iter()
        .map(|a| {
            ListingTableUrl::parse(format!(
                "{}/{}",
                base.as_str().trim_end_matches('/'),
                a.path
            ))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(file_schema.clone());
    let table = ListingTable::try_new(config).map_err(|e| fail(&e))?;
    Ok(Arc::new(table))
}
