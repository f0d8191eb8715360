//! Models over Delta tables. An upstream Delta table (a job's or a model's)
//! is read at one version through delta-rs's DataFusion provider, restricted
//! to days by its `day` partition column; which of its days changed
//! between two versions comes from the `add`/`remove` actions of the
//! commits in between. A model with `format = "delta"` is written by
//! ingest's Delta writer lanes; Delta has no branches, so its data tests
//! run over the uncommitted files themselves, and the model's table is
//! committed (one `WRITE` replacing the refreshed days or everything) only
//! when they pass. The commit info records the upstream versions and the
//! model's hash, as the Iceberg snapshot summary does.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::catalog::view::ViewTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider, provider_as_source};
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;
use futures::TryStreamExt;

use super::audit;
use super::changes::Changed;
use super::model::Model;
use super::session::{self, Source, SourceTable};
use super::{ModelReport, sql_error};
use crate::error::{Error, Result};
use crate::places::Places;
use crate::table::delta::{self as delta_out, DAY_COLUMN, Replace, Target};
use crate::table::schema::arrow_schema;

/// Commits a model's run is looked for in (newest first).
const HEAD_LOOKBACK: usize = 1000;

fn delta_err(what: &str) -> impl Fn(deltalake::DeltaTableError) -> Error + '_ {
    move |e| Error::Storage(format!("{what}: {e}"))
}

/// The Delta table `name` at its newest version; none when it has none.
///
/// # Errors
/// When the table cannot be opened.
pub async fn load(places: &Places, name: &str) -> Result<Option<Source>> {
    let target = places.target(name)?;
    let table = target.open().await?;
    Ok(table.version().map(|v| Source {
        name: name.to_string(),
        snapshot_id: i64::try_from(v).ok(),
        table: SourceTable::Delta(Arc::new(table)),
    }))
}

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
            let action: serde_json::Value = serde_json::from_slice(line)
                .map_err(|e| Error::Storage(format!("Delta log version {version}: {e}")))?;
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

/// The model's Delta table and what its last run recorded.
pub struct Head {
    /// Where the table is.
    pub target: Target,
    /// The `floe.*` entries of the newest commit a model run made.
    pub props: HashMap<String, String>,
}

/// The model's table and its last run's record; an error when the table
/// exists with other columns than the query's.
///
/// # Errors
/// When the table cannot be read or its columns differ.
pub async fn head(
    places: &Places,
    model: &Model,
    schema: &iceberg::spec::Schema,
    by_day: bool,
) -> Result<Head> {
    let target = places.target(&model.name)?;
    let table = target.open().await?;
    let mut props = HashMap::new();
    if let Ok(state) = table.snapshot() {
        let want = delta_out::delta_schema(arrow_schema(schema)?.as_ref(), by_day);
        let have: Vec<String> = state
            .schema()
            .fields()
            .map(|f| format!("{} {}", f.name(), f.data_type()))
            .collect();
        let want_kernel: Vec<String> = kernel_columns(&want)?;
        if have != want_kernel {
            let missing: Vec<&String> = want_kernel.iter().filter(|c| !have.contains(c)).collect();
            let extra: Vec<&String> = have.iter().filter(|c| !want_kernel.contains(c)).collect();
            return Err(Error::Model(format!(
                "{}: the query's columns no longer match the Delta table {} (new or changed: {missing:?}; in the table only: {extra:?}). \
                 floe does not rewrite a model table's schema; delete the table's folder and run the model again to rebuild it",
                model.file(),
                target.url
            )));
        }
        let history = table
            .history(Some(HEAD_LOOKBACK))
            .await
            .map_err(delta_err("reading the Delta log"))?;
        for commit in history {
            if commit.info.contains_key(super::MODEL_KEY) {
                for (k, v) in commit.info {
                    if let Some(text) = v.as_str() {
                        props.insert(k, text.to_string());
                    }
                }
                break;
            }
        }
    }
    Ok(Head { target, props })
}

fn kernel_columns(schema: &arrow_schema::Schema) -> Result<Vec<String>> {
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
    let kernel: deltalake::kernel::StructType = schema
        .try_into_kernel()
        .map_err(|e| Error::Model(format!("the Delta schema: {e}")))?;
    Ok(kernel
        .fields()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect())
}

/// A Delta model's write: what it needs besides the query.
pub struct ModelWrite<'a> {
    /// The model.
    pub model: &'a Model,
    /// Its table.
    pub target: &'a Target,
    /// The table schema (floe's).
    pub schema: &'a iceberg::spec::Schema,
    /// The event-time column (none: unpartitioned).
    pub event_time: Option<&'a str>,
    /// The days recomputed (none: everything).
    pub days: Option<&'a BTreeSet<i32>>,
    /// Names the files.
    pub run_id: &'a str,
    /// Recorded in the commit info.
    pub record: Vec<(String, serde_json::Value)>,
    /// The content hash the table's last full refresh recorded.
    pub previous_content: Option<&'a str>,
    /// Tables the relationship tests look keys up in.
    pub world: &'a HashMap<String, Source>,
}

/// Writes the query's result, tests it and commits it when the tests pass:
/// the model's table as read downstream, or none when nothing was committed
/// (a test failed, or a full result equal to the table's: the report's
/// status says which).
///
/// # Errors
/// When the query, a test query, storage or the commit fails.
pub async fn write(
    w: ModelWrite<'_>,
    df: DataFrame,
    report: &mut ModelReport,
) -> Result<Option<Source>> {
    let model = w.model;
    let table_schema = arrow_schema(w.schema)?;
    let properties: HashMap<String, String> = model.properties.clone().into_iter().collect();
    let size = crate::table::props::target_file_size(&properties);
    let mut out = delta_out::Write::start(
        w.target,
        delta_out::WriteSpec {
            schema: &table_schema,
            time_column: w.event_time,
            properties: &properties,
            run_id: w.run_id,
            replace: match w.days {
                Some(d) => Replace::Days(d.clone()),
                None => Replace::All,
            },
            target_file_size: size,
            sort: &model.sort,
        },
    )
    .await?;
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| sql_error(model, &e))?;
    let file = model.file();
    // A full result identical to the table's is not committed (so an
    // unchanged dimension does not ripple downstream), as for Iceberg.
    let mut hasher = w
        .days
        .is_none()
        .then(|| super::write::ContentHash::new(&table_schema))
        .transpose()?;
    let fed: Result<()> = async {
        while let Some(batch) = stream.try_next().await.map_err(|e| sql_error(model, &e))? {
            let batch = super::write::conform(&batch, &table_schema, &file)?;
            if let Some(h) = hasher.as_mut() {
                h.add(&batch)?;
            }
            if !out.send(batch).await? {
                break;
            }
        }
        Ok(())
    }
    .await;
    let rows: u64 = out.rows_per_day.values().sum();
    if let Err(e) = fed {
        out.finish(Some(e.to_string()), Vec::new()).await?;
        return Err(e);
    }
    let closed = out
        .close()
        .await
        .map_err(|e| Error::Model(format!("{file}: {e}")))?;
    let content = hasher.map(super::write::ContentHash::finish);
    if let (Some(c), Some(previous)) = (&content, w.previous_content)
        && c == previous
    {
        closed.discard().await;
        report.status = "unchanged".into();
        return Ok(None);
    }
    let mut record = w.record;
    if let Some(c) = content {
        record.push((super::CONTENT_KEY.to_string(), serde_json::json!(c)));
    }
    report.rows_written = rows;
    report.data_files = closed.adds.len() as u64;
    report.bytes_written = closed
        .adds
        .iter()
        .map(|a| u64::try_from(a.size).unwrap_or(0))
        .sum();

    // Audit: the model's tests over the files this run wrote, which are
    // exactly the refreshed part of the table.
    let ctx = session::context();
    let staged = staged_provider(
        &ctx,
        &closed,
        &delta_out::delta_schema(&table_schema, false),
        w.event_time,
    )
    .await?;
    let (ns, table) = model.name.split_once('.').unwrap_or(("", &model.name));
    session::ensure_schema(&ctx, ns);
    ctx.register_table(format!("{ns}.{table}"), staged)
        .map_err(|e| Error::Model(format!("cannot register {}: {e}", model.name)))?;
    for name in model.tests.relationship_tables(&model.name) {
        if let Some(s) = w.world.get(&name) {
            session::register(&ctx, s, None).await?;
        }
    }
    let checks = audit::checks(model, w.event_time)?;
    let outcomes = match audit::run(&ctx, model, &checks).await {
        Ok(o) => o,
        Err(e) => {
            closed.discard().await;
            return Err(e);
        }
    };
    if let Some(msg) = audit::failures(model, &outcomes) {
        closed.discard().await;
        report.tests = outcomes;
        report.status = "tests-failed".into();
        report.error = Some(msg);
        report.snapshot_id = None;
        report.rows_written = 0;
        report.data_files = 0;
        report.bytes_written = 0;
        return Ok(None);
    }
    report.tests = outcomes;
    let committed = closed.commit(record).await?;
    report.snapshot_id = i64::try_from(committed.version).ok();
    report.status = "published".into();
    let mut table = w.target.open().await?;
    table
        .load_version(committed.version)
        .await
        .map_err(delta_err("loading the committed version"))?;
    Ok(Some(Source {
        name: model.name.clone(),
        snapshot_id: report.snapshot_id,
        table: SourceTable::Delta(Arc::new(table)),
    }))
}

/// The written, uncommitted files as one table, read from the table's store
/// under a URL of their own, with the `day` partition column derived from
/// `time_column` as readers of the committed table see it.
async fn staged_provider(
    ctx: &SessionContext,
    closed: &delta_out::Closed,
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
        .map_err(|e| Error::Model(format!("cannot read the staged files: {e}")))?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The written files as a table of their own columns: their full URLs,
/// read through the store at the root of the table's bucket (or the local
/// file system).
async fn staged_files(
    ctx: &SessionContext,
    closed: &delta_out::Closed,
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
