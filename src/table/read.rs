//! Tables as queries read them, whatever their format: a table at one
//! snapshot (an Iceberg snapshot or a Delta version), registered in a
//! DataFusion session under its `namespace.table` name, optionally
//! restricted to some UTC days; the days that changed between two
//! snapshots; where a table is ([`Location`]), resolved by the command
//! layer.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use iceberg::table::Table;

use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};
use crate::table::delta::{self, Target};
use crate::table::iceberg::changes::{self, day_column};
use crate::table::iceberg::provider::SnapshotTable;
use crate::table::snapshot::TableHandle;

/// Schema holding the unrestricted tables behind day-restricted views.
const HIDDEN_SCHEMA: &str = "floe_internal";

/// What changed in a table between two of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Nothing (same snapshot, or only compactions).
    Nothing,
    /// These days (since 1970-01-01, UTC).
    Days(BTreeSet<i32>),
    /// Unknown or not by day: treat everything as changed.
    Everything,
}

impl Changed {
    /// Adds `other`'s changes to these.
    pub fn merge(self, other: Changed) -> Changed {
        match (self, other) {
            (Changed::Everything, _) | (_, Changed::Everything) => Changed::Everything,
            (Changed::Nothing, x) | (x, Changed::Nothing) => x,
            (Changed::Days(mut a), Changed::Days(b)) => {
                a.extend(b);
                Changed::Days(a)
            }
        }
    }
}

/// Where a table is: in the REST catalog, or a Delta table at a URL.
#[derive(Debug, Clone)]
pub enum Location {
    /// An Iceberg table of the catalog.
    Catalog {
        /// Namespace levels.
        namespace: Vec<String>,
        /// Table name.
        name: String,
    },
    /// A Delta table.
    Delta(Target),
}

impl Location {
    /// A catalog table `namespace.table`.
    ///
    /// # Errors
    /// When `ident` has no namespace.
    pub fn catalog(ident: &str) -> Result<Self> {
        let (ns, table) = ident
            .split_once('.')
            .ok_or_else(|| Error::Model(format!("table {ident} needs a namespace")))?;
        Ok(Location::Catalog {
            namespace: vec![ns.to_string()],
            name: table.to_string(),
        })
    }

    /// The table at its newest snapshot, read as `name`; none when it does
    /// not exist or holds no data yet (Delta).
    ///
    /// # Errors
    /// When the catalog or the table cannot be read.
    pub async fn load(&self, client: &RestClient, name: &str) -> Result<Option<Source>> {
        match self {
            Location::Catalog {
                namespace,
                name: table,
            } => match client.load_table(namespace, table).await? {
                Some(loaded) => Ok(Some(Source::iceberg(client, name, &loaded, None)?)),
                None => Ok(None),
            },
            Location::Delta(target) => Source::delta(target, name).await,
        }
    }
}

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

/// A table of either format.
#[derive(Debug, Clone)]
pub enum SourceTable {
    /// An Iceberg table from the catalog.
    Iceberg(Table),
    /// A Delta table, loaded at the version read.
    Delta(Arc<deltalake::DeltaTable>),
}

impl Source {
    /// The Iceberg table `loaded`, read as `name` at `snapshot_id` (none:
    /// its current snapshot).
    ///
    /// # Errors
    /// When the table's metadata cannot be used.
    pub fn iceberg(
        client: &RestClient,
        name: &str,
        loaded: &LoadedTable,
        snapshot_id: Option<i64>,
    ) -> Result<Source> {
        let (ns, table) = name.split_once('.').unwrap_or(("", name));
        let handle = TableHandle {
            namespace: vec![ns.to_string()],
            name: table.to_string(),
            io: crate::store::table_io(client, loaded),
        };
        Ok(Source {
            name: name.to_string(),
            table: SourceTable::Iceberg(handle.table(loaded)?),
            snapshot_id: snapshot_id.or(loaded.metadata.current_snapshot_id()),
        })
    }

    /// The Delta table at `target`, read as `name` at its newest version;
    /// none when it has none.
    ///
    /// # Errors
    /// When the table cannot be opened.
    pub async fn delta(target: &Target, name: &str) -> Result<Option<Source>> {
        let table = target.open().await?;
        Ok(table.version().map(|v| Source {
            name: name.to_string(),
            snapshot_id: i64::try_from(v).ok(),
            table: SourceTable::Delta(Arc::new(table)),
        }))
    }

    /// The table's location (URL).
    pub fn location(&self) -> String {
        match &self.table {
            SourceTable::Iceberg(t) => t.metadata().location().to_string(),
            SourceTable::Delta(t) => t.table_url().to_string(),
        }
    }

    /// The columns whose values lie on the UTC day of the table's day
    /// partition (its day-partitioned timestamp, and Delta's `day`); none
    /// when the table is not partitioned by day.
    pub fn day_columns(&self) -> BTreeSet<String> {
        match &self.table {
            SourceTable::Iceberg(t) => day_column(t.metadata()).into_iter().collect(),
            SourceTable::Delta(t) => delta::read::day_columns(t),
        }
    }

    /// Whether this is a table of the catalog (Iceberg), which other
    /// engines on the same catalog read too.
    pub fn in_catalog(&self) -> bool {
        matches!(self.table, SourceTable::Iceberg(_))
    }

    /// A catalog table's day-partitioned timestamp column, and whether it
    /// has a time zone; none for an unpartitioned or Delta table.
    pub fn catalog_day_column(&self) -> Option<(String, bool)> {
        let SourceTable::Iceberg(t) = &self.table else {
            return None;
        };
        let column = day_column(t.metadata())?;
        let zoned = t
            .metadata()
            .current_schema()
            .field_by_name(&column)
            .is_some_and(|f| {
                matches!(
                    *f.field_type,
                    iceberg::spec::Type::Primitive(
                        iceberg::spec::PrimitiveType::Timestamptz
                            | iceberg::spec::PrimitiveType::TimestamptzNs
                    )
                )
            });
        Some((column, zoned))
    }

    /// The days whose rows changed after snapshot `from` up to `to`.
    ///
    /// # Errors
    /// When the table's history cannot be read.
    pub async fn changed(&self, from: Option<i64>, to: Option<i64>) -> Result<Changed> {
        match &self.table {
            SourceTable::Iceberg(t) => changes::between(t, from, to).await,
            SourceTable::Delta(t) => delta::read::changed(t, from, to).await,
        }
    }

    /// The rows `sql` selects from this table alone, registered under its
    /// name (restricted to `days` when given); `failed` words a query
    /// error.
    ///
    /// # Errors
    /// When the table cannot be read, or from `failed`.
    pub async fn query(
        &self,
        days: Option<&BTreeSet<i32>>,
        sql: &str,
        failed: impl Fn(datafusion::error::DataFusionError) -> Error,
    ) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
        let ctx = SessionContext::new();
        self.register(&ctx, days).await?;
        ctx.sql(sql)
            .await
            .map_err(&failed)?
            .collect()
            .await
            .map_err(failed)
    }

    /// Registers the table under its name in `ctx`, restricted to `days`
    /// when given and the table is day-partitioned.
    ///
    /// # Errors
    /// When the snapshot cannot be opened or the name is not
    /// `namespace.table`.
    pub async fn register(&self, ctx: &SessionContext, days: Option<&BTreeSet<i32>>) -> Result<()> {
        let provider = match &self.table {
            SourceTable::Iceberg(t) => self.iceberg_provider(ctx, t, days).await?,
            SourceTable::Delta(t) => delta::read::provider(ctx, &self.name, t, days).await?,
        };
        register_as(ctx, &self.name, provider)
    }

    /// An Iceberg snapshot, restricted to days: by partition when every
    /// file's partition says its day exactly, else by a row filter.
    async fn iceberg_provider(
        &self,
        ctx: &SessionContext,
        table: &Table,
        days: Option<&BTreeSet<i32>>,
    ) -> Result<Arc<dyn TableProvider>> {
        let snapshot = SnapshotTable::new(table.clone(), self.snapshot_id)?;
        let restricted = days.zip(day_column(table.metadata()));
        Ok(match restricted {
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
                let hidden = format!("{HIDDEN_SCHEMA}.{}", self.name.replace('.', "__"));
                register_as(ctx, &hidden, provider.clone())?;
                let plan = LogicalPlanBuilder::scan(hidden, provider_as_source(provider), None)
                    .and_then(|b| b.filter(day_predicate(&column, days, tz)))
                    .and_then(|b| b.build())
                    .map_err(|e| {
                        Error::Model(format!("cannot restrict {} to days: {e}", self.name))
                            .caused_by(e)
                    })?;
                Arc::new(ViewTable::new(plan, None))
            }
        })
    }
}

/// Registers `provider` as `namespace.table` in `ctx` (the schema is made
/// when missing).
///
/// # Errors
/// When `name` has no namespace, or DataFusion refuses it.
pub fn register_as(
    ctx: &SessionContext,
    name: &str,
    provider: Arc<dyn TableProvider>,
) -> Result<()> {
    let (namespace, table) = name
        .split_once('.')
        .ok_or_else(|| Error::Model(format!("table {name} needs a namespace")))?;
    if let Some(catalog) = ctx.catalog("datafusion")
        && catalog.schema(namespace).is_none()
    {
        // Registering over an existing schema is impossible here (checked).
        let _ = catalog.register_schema(namespace, Arc::new(MemorySchemaProvider::new()));
    }
    ctx.register_table(format!("{namespace}.{table}"), provider)
        .map_err(|e| Error::Model(format!("cannot register {name}: {e}")).caused_by(e))?;
    Ok(())
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
