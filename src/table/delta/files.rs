//! A lane's Delta data files: one Parquet writer per day, streaming to the
//! table's store (multipart on S3) under `day=<YYYY-MM-DD>/`, rolled at the
//! target size, and closed early when the open writers together hold too
//! many rows, as the Iceberg lanes do. Each closed file becomes an `add`
//! action with its partition value and statistics; nothing is committed
//! here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use deltalake::kernel::Add;
use deltalake::{ObjectStore, Path};
use futures::future::BoxFuture;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::{AsyncFileWriter, ParquetObjectWriter};
use parquet::file::properties::WriterProperties;

use super::{DAY_COLUMN, stats};
use crate::error::{Error, Result};
use crate::table::days::day_name;
use crate::table::lanes::LaneWriter;
use crate::table::writer::{OPEN_ROWS_BUDGET, SortBuffer, split_by_day};

/// The key of an unpartitioned table's one open file.
const UNPARTITIONED: i32 = 0;

fn storage(what: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| Error::Storage(format!("{what}: {e}")).caused_by(e)
}

/// Counts the bytes a file's writer sends to the store (its size once
/// closed, without asking the store).
struct Counted {
    inner: ParquetObjectWriter,
    bytes: Arc<AtomicU64>,
}

impl AsyncFileWriter for Counted {
    fn write(&mut self, bs: bytes::Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.bytes.fetch_add(bs.len() as u64, Ordering::Relaxed);
        self.inner.write(bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.inner.complete()
    }
}

/// An open data file of one day.
struct Open {
    writer: AsyncArrowWriter<Counted>,
    bytes: Arc<AtomicU64>,
    /// The path relative to the table root.
    path: String,
    rows: usize,
}

/// Where and how a lane writes.
pub struct Layout {
    /// The table's store, rooted at the table.
    pub store: Arc<dyn ObjectStore>,
    /// The files' columns: the table's, without `day`.
    pub schema: SchemaRef,
    /// Parquet settings.
    pub props: WriterProperties,
    /// File names start with this (the run and the lane).
    pub prefix: String,
    /// Files roll at this size.
    pub target_size: usize,
    /// How many lanes share the memory budget.
    pub share: usize,
    /// The timestamp column whose day partitions the table (none:
    /// unpartitioned, one file at a time at the table root).
    pub time_column: Option<String>,
    /// When set, a row of any other day is an error.
    pub only_days: Option<BTreeSet<i32>>,
    /// Columns (of `schema`) each file is sorted by: a day's rows are
    /// buffered (bounded in total) and written sorted, a file per flush.
    pub sort: Vec<usize>,
}

/// A lane's per-day Delta data files.
pub struct DayFiles {
    layout: Layout,
    open: BTreeMap<i32, Open>,
    done: Vec<Add>,
    /// Files started, numbering their names.
    started: usize,
    /// Rows waiting to be sorted, per day.
    buffered: SortBuffer<i32>,
}

impl DayFiles {
    /// Files laid out as `layout` says, named
    /// `[day=<day>/]<prefix>-<n>-<uuid>.parquet`.
    pub fn new(mut layout: Layout) -> Self {
        layout.share = layout.share.max(1);
        let share = layout.share;
        Self {
            layout,
            open: BTreeMap::new(),
            done: Vec::new(),
            started: 0,
            buffered: SortBuffer::new(share),
        }
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let parts = match &self.layout.time_column {
            Some(column) => split_by_day(&batch, column)?,
            None => vec![(UNPARTITIONED, batch)],
        };
        if let Some(allowed) = &self.layout.only_days
            && let Some((day, _)) = parts.iter().find(|(d, _)| !allowed.contains(d))
        {
            return Err(Error::Storage(format!(
                "a row falls on {}, outside the days being written",
                day_name(*day)
            )));
        }
        for (day, part) in parts {
            if let Some(own) = part.column_by_name(DAY_COLUMN) {
                let own = own.as_primitive_opt::<Date32Type>().ok_or_else(|| {
                    Error::Storage(format!("the column {DAY_COLUMN} is not a DATE"))
                })?;
                if own.null_count() > 0 || own.values().iter().any(|d| *d != day) {
                    return Err(Error::Storage(format!(
                        "a row of {} has another {DAY_COLUMN}; the {DAY_COLUMN} column of a Delta table must be the UTC day of its event time",
                        day_name(day)
                    )));
                }
            }
            let part = self.to_file_schema(&part)?;
            if self.layout.sort.is_empty() {
                self.append(day, part).await?;
                continue;
            }
            if let Some(largest) = self.buffered.push(day, part) {
                self.flush_sorted(largest).await?;
            }
        }
        Ok(())
    }

    /// Sorts a day's buffered rows and writes them as a file of their own.
    async fn flush_sorted(&mut self, day: i32) -> Result<()> {
        if let Some(rows) = self.buffered.take_sorted(&day, &self.layout.sort)? {
            self.append(day, rows).await?;
            self.close_day(day).await?;
        }
        Ok(())
    }

    /// Writes rows of one day (in the files' schema) to its open file,
    /// rolling it at the target size and closing the fullest open file
    /// when the open ones hold too many rows.
    async fn append(&mut self, day: i32, part: RecordBatch) -> Result<()> {
        let rows = part.num_rows();
        let file = match self.open.entry(day) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                self.started += 1;
                let name = format!(
                    "{}-{:05}-{}.parquet",
                    self.layout.prefix,
                    self.started,
                    uuid::Uuid::now_v7()
                );
                let path = match self.layout.time_column {
                    Some(_) => format!("{DAY_COLUMN}={}/{name}", day_name(day)),
                    None => name,
                };
                let bytes = Arc::new(AtomicU64::new(0));
                let sink = Counted {
                    inner: ParquetObjectWriter::new(
                        self.layout.store.clone(),
                        Path::from(path.as_str()),
                    ),
                    bytes: bytes.clone(),
                };
                let writer = AsyncArrowWriter::try_new(
                    sink,
                    self.layout.schema.clone(),
                    Some(self.layout.props.clone()),
                )
                .map_err(storage(&format!("starting {path}")))?;
                e.insert(Open {
                    writer,
                    bytes,
                    path,
                    rows: 0,
                })
            }
        };
        file.writer
            .write(&part)
            .await
            .map_err(storage(&format!("writing {}", file.path)))?;
        file.rows += rows;
        if file.writer.bytes_written() + file.writer.in_progress_size() >= self.layout.target_size {
            self.close_day(day).await?;
        }
        if self.open.values().map(|f| f.rows).sum::<usize>() > OPEN_ROWS_BUDGET / self.layout.share
        {
            let fullest = self
                .open
                .iter()
                .max_by_key(|(_, f)| f.rows)
                .map(|(d, _)| *d);
            if let Some(d) = fullest {
                self.close_day(d).await?;
            }
        }
        Ok(())
    }

    /// A batch of the table's schema in the files' types: `_hash` as
    /// binary, timestamps labelled UTC.
    fn to_file_schema(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .layout
            .schema
            .fields()
            .iter()
            .map(|f| {
                let c = batch.column_by_name(f.name()).ok_or_else(|| {
                    arrow_schema::ArrowError::SchemaError(format!("no column {}", f.name()))
                })?;
                Ok((c, f))
            })
            .collect::<std::result::Result<Vec<_>, arrow_schema::ArrowError>>()
            .and_then(|pairs| {
                pairs
                    .into_iter()
                    .map(|(c, f)| match (c.data_type(), f.data_type()) {
                        (a, b) if a == b => Ok(c.clone()),
                        (DataType::Timestamp(u, _), DataType::Timestamp(v, Some(tz)))
                            if u == v && *u == arrow_schema::TimeUnit::Microsecond =>
                        {
                            Ok(Arc::new(
                                c.as_primitive::<TimestampMicrosecondType>()
                                    .clone()
                                    .with_timezone(tz.clone()),
                            ) as ArrayRef)
                        }
                        _ => arrow_cast::cast(c, f.data_type()),
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .map_err(|e| Error::Storage(format!("Delta batch: {e}")).caused_by(e))?;
        RecordBatch::try_new(self.layout.schema.clone(), columns)
            .map_err(|e| Error::Storage(format!("Delta batch: {e}")).caused_by(e))
    }

    /// Finishes a day's open file (its next rows start a new one).
    async fn close_day(&mut self, day: i32) -> Result<()> {
        let Some(file) = self.open.remove(&day) else {
            return Ok(());
        };
        let what = format!("finishing {}", file.path);
        let meta = file.writer.close().await.map_err(storage(&what))?;
        self.done.push(Add {
            path: file.path,
            partition_values: match self.layout.time_column {
                Some(_) => HashMap::from([(DAY_COLUMN.to_string(), Some(day_name(day)))]),
                None => HashMap::new(),
            },
            size: i64::try_from(file.bytes.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats::json(&self.layout.schema, &meta)),
            tags: None,
            deletion_vector: None,
            base_row_id: None,
            default_row_commit_version: None,
            clustering_provider: None,
        });
        Ok(())
    }

    async fn close_all(mut self) -> Result<Vec<Add>> {
        for day in self.buffered.parts() {
            self.flush_sorted(day).await?;
        }
        let days: Vec<i32> = self.open.keys().copied().collect();
        for day in days {
            self.close_day(day).await?;
        }
        Ok(self.done)
    }
}

impl LaneWriter for DayFiles {
    type File = Add;

    fn write(&mut self, batch: RecordBatch) -> impl Future<Output = Result<()>> + Send {
        self.write_batch(batch)
    }

    fn close(self) -> impl Future<Output = Result<Vec<Add>>> + Send {
        self.close_all()
    }
}
