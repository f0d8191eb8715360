//! A DataFusion table over one snapshot of an Iceberg table.
//!
//! Projection and filters are pushed into Iceberg's scan planning
//! (iceberg-datafusion's predicate conversion; partition, file and
//! row-group pruning on column statistics), and the planned files are
//! read by Iceberg's Arrow reader, which applies delete files and maps
//! older schemas by field id. Unlike iceberg-datafusion's own scan, which
//! reads every file in one stream, the files are spread over DataFusion's
//! target partitions, so decoding uses every core.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result as DFResult};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use iceberg::arrow::{ArrowReaderBuilder, schema_to_arrow_schema};
use iceberg::scan::FileScanTask;
use iceberg::table::Table;

fn df_error(e: impl fmt::Display) -> DataFusionError {
    DataFusionError::External(e.to_string().into())
}

/// One snapshot of a table (none: the table has no data yet).
#[derive(Debug, Clone)]
pub struct SnapshotTable {
    table: Table,
    snapshot_id: Option<i64>,
    schema: SchemaRef,
    /// Only the files of these `day(...)` partitions (see [`Self::only_days`]).
    days: Option<BTreeSet<i32>>,
    /// Files written and not committed, read instead of a snapshot's (see
    /// [`Self::of_files`]).
    files: Option<Vec<iceberg::spec::DataFile>>,
}

impl SnapshotTable {
    /// The table at `snapshot_id` (its schema as of that snapshot).
    ///
    /// # Errors
    /// When the snapshot is unknown or its schema has no Arrow form.
    pub fn new(table: Table, snapshot_id: Option<i64>) -> crate::Result<Self> {
        let metadata = table.metadata();
        let schema = match snapshot_id.and_then(|id| metadata.snapshot_by_id(id)) {
            Some(s) => s
                .schema(metadata)
                .map_err(|e| crate::Error::Storage(e.to_string()).caused_by(e))?,
            None if snapshot_id.is_some() => {
                return Err(crate::Error::Storage(format!(
                    "snapshot {snapshot_id:?} of {} is gone",
                    table.identifier()
                )));
            }
            None => metadata.current_schema().clone(),
        };
        let schema = Arc::new(
            schema_to_arrow_schema(&schema)
                .map_err(|e| crate::Error::Storage(e.to_string()).caused_by(e))?,
        );
        Ok(Self {
            table,
            snapshot_id,
            schema,
            days: None,
            files: None,
        })
    }

    /// Data files of `table` written and not committed yet (a run's
    /// delivered rows, before its `[job.expect]` tests let them in), in
    /// the table's current schema.
    ///
    /// # Errors
    /// When the schema has no Arrow form.
    pub fn of_files(table: Table, files: Vec<iceberg::spec::DataFile>) -> crate::Result<Self> {
        let mut this = Self::new(table, None)?;
        this.files = Some(files);
        Ok(this)
    }

    /// Whole-file tasks for the uncommitted `files`, projecting `schema`'s
    /// columns (by field id). Partition values are not used as constants:
    /// every column is read from the file.
    fn file_tasks(
        &self,
        files: &[iceberg::spec::DataFile],
        schema: &SchemaRef,
    ) -> Vec<FileScanTask> {
        let table_schema = self.table.metadata().current_schema().clone();
        let ids: Vec<i32> = schema
            .fields()
            .iter()
            .filter_map(|f| table_schema.field_by_name(f.name()).map(|t| t.id))
            .collect();
        files
            .iter()
            .map(|f| FileScanTask {
                file_size_in_bytes: f.file_size_in_bytes(),
                start: 0,
                length: f.file_size_in_bytes(),
                record_count: Some(f.record_count()),
                data_file_path: f.file_path().to_string(),
                data_file_format: f.file_format(),
                schema: table_schema.clone(),
                project_field_ids: ids.clone(),
                predicate: None,
                deletes: Vec::new(),
                partition: None,
                partition_spec: None,
                name_mapping: None,
                case_sensitive: true,
            })
            .collect()
    }

    /// Reads only the files of these days, chosen by partition value, which
    /// is exact (every row of a `day(col)` partition lies on that day), so no
    /// row filter is needed. Only valid when every data file of the snapshot
    /// was written with a spec whose first field is `day(col)` on the
    /// table's day column ([`Self::days_are_exact`]).
    pub fn only_days(mut self, days: BTreeSet<i32>) -> Self {
        self.days = Some(days);
        self
    }

    /// Whether every manifest of the snapshot uses a spec whose first field
    /// is `day(...)` of the default spec's day source column.
    ///
    /// # Errors
    /// When the manifest list cannot be read.
    pub async fn days_are_exact(&self) -> crate::Result<bool> {
        let metadata = self.table.metadata();
        let Some(snapshot) = self.snapshot_id.and_then(|id| metadata.snapshot_by_id(id)) else {
            return Ok(true);
        };
        let Some(source) = day_source(metadata.default_partition_spec().as_ref()) else {
            return Ok(false);
        };
        let list = self
            .table
            .manifest_list_reader(snapshot)
            .load()
            .await
            .map_err(|e| crate::Error::Storage(e.to_string()).caused_by(e))?;
        Ok(list.entries().iter().all(|m| {
            metadata
                .partition_spec_by_id(m.partition_spec_id)
                .and_then(|spec| day_source(spec.as_ref()))
                == Some(source)
        }))
    }
}

/// The source field id of a spec's first field when it is `day(...)`.
fn day_source(spec: &iceberg::spec::PartitionSpec) -> Option<i32> {
    spec.fields()
        .first()
        .filter(|f| f.transform == iceberg::spec::Transform::Day)
        .map(|f| f.source_id)
}

/// The day partition value of a planned file.
fn task_day(task: &FileScanTask) -> Option<i32> {
    match task.partition.as_ref()?.fields().first()? {
        Some(iceberg::spec::Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(d))) => {
            Some(*d)
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let mut tasks: Vec<FileScanTask> = Vec::new();
        if let Some(files) = &self.files {
            tasks = self.file_tasks(files, &schema);
        } else if let Some(id) = self.snapshot_id {
            let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            let mut scan = self.table.scan().snapshot_id(id);
            scan = if columns.is_empty() {
                scan.select_empty()
            } else {
                scan.select(columns)
            };
            if let Some(predicate) =
                iceberg_datafusion::physical_plan::convert_filters_to_predicate(filters)
            {
                scan = scan.with_filter(predicate);
            }
            tasks = scan
                .build()
                .map_err(df_error)?
                .plan_files()
                .await
                .map_err(df_error)?
                .try_collect()
                .await
                .map_err(df_error)?;
        }
        if let Some(days) = &self.days {
            tasks.retain(|t| task_day(t).is_some_and(|d| days.contains(&d)));
        }
        tracing::debug!(
            table = %self.table.identifier(),
            snapshot = ?self.snapshot_id,
            files = tasks.len(),
            filters = filters.len(),
            "planned scan"
        );
        let partitions = state.config().target_partitions().max(1);
        let groups = spread(tasks, partitions);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(SnapshotScan {
            table: self.table.clone(),
            schema,
            groups,
            batch_size: state.config().batch_size(),
            properties,
        }))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Pruning is by statistics, so DataFusion still filters the rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }
}

/// Spreads files over `n` groups, largest first onto the lightest group.
fn spread(mut tasks: Vec<FileScanTask>, n: usize) -> Vec<Vec<FileScanTask>> {
    tasks.sort_by_key(|t| std::cmp::Reverse(t.length));
    let n = n.min(tasks.len()).max(1);
    let mut groups: Vec<(u64, Vec<FileScanTask>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for task in tasks {
        if let Some(lightest) = groups.iter_mut().min_by_key(|(bytes, _)| *bytes) {
            lightest.0 += task.length;
            lightest.1.push(task);
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Reads planned files, one group per partition.
struct SnapshotScan {
    table: Table,
    schema: SchemaRef,
    groups: Vec<Vec<FileScanTask>>,
    batch_size: usize,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SnapshotScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotScan")
            .field("table", &self.table.identifier())
            .field("files", &self.groups.iter().map(Vec::len).sum::<usize>())
            .finish()
    }
}

impl DisplayAs for SnapshotScan {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IcebergSnapshotScan: {} files={} partitions={}",
            self.table.identifier(),
            self.groups.iter().map(Vec::len).sum::<usize>(),
            self.groups.len()
        )
    }
}

impl ExecutionPlan for SnapshotScan {
    fn name(&self) -> &str {
        "IcebergSnapshotScan"
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DFResult<SendableRecordBatchStream> {
        let tasks = self.groups.get(partition).cloned().unwrap_or_default();
        let reader =
            ArrowReaderBuilder::new(self.table.file_io().clone(), iceberg::Runtime::current())
                .with_batch_size(self.batch_size)
                .with_data_file_concurrency_limit(1)
                .with_row_group_filtering_enabled(true)
                .build();
        let schema = self.schema.clone();
        let stream = futures::stream::once(async move {
            let tasks = futures::stream::iter(tasks.into_iter().map(Ok)).boxed();
            reader
                .read(tasks)
                .map(|r| r.stream().map_err(df_error))
                .map_err(df_error)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
