//! Day fan-out: rows go to one Parquet writer per `day(ts_utc)` partition,
//! which rolls files at the target size. With a sort order, each day's rows
//! are buffered (bounded in total), sorted and written as whole files, so
//! every file is sorted and says so.

use std::collections::BTreeMap;

use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow_ord::sort::{SortColumn, SortOptions, lexsort_to_indices};
use arrow_select::take::take_record_batch;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::spec::{
    DataFile, DataFileBuilder, DataFileFormat, Literal, PartitionKey, Struct, TableMetadata,
};
use iceberg::writer::base_writer::data_file_writer::{DataFileWriter, DataFileWriterBuilder};
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
pub use crate::table::days::day_of;

/// Builds data file writers (one per partition) for a table.
pub type Builder =
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;
/// A data file writer of one partition, rolling files at the target size.
pub type Writer =
    DataFileWriter<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>;

/// Buffered Arrow memory across all days before the largest day is flushed
/// (sorted tables only).
const SORT_BUFFER_BYTES: usize = 96 * 1024 * 1024;
/// Rows held by open (unsorted) writers before the fullest is closed: an
/// open Parquet writer keeps its current row group in memory, so without a
/// bound a 60-day window would hold 60 days at once.
pub(crate) const OPEN_ROWS_BUDGET: usize = 512 * 1024;
/// Dictionary page limit per column chunk.
const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// The Parquet codec from the table's `write.parquet.compression-codec`
/// (and `-level`), as Iceberg's writers read them; zstd level 1 by default.
fn compression(props: &std::collections::HashMap<String, String>) -> Result<Compression> {
    let level = props.get("write.parquet.compression-level").map(|l| {
        l.parse::<i32>().map_err(|_| {
            Error::Config(format!(
                "table property write.parquet.compression-level={l:?} is not a number"
            ))
        })
    });
    let codec = props
        .get("write.parquet.compression-codec")
        .map_or("zstd", String::as_str)
        .to_ascii_lowercase();
    Ok(match codec.as_str() {
        "zstd" => {
            Compression::ZSTD(ZstdLevel::try_new(level.transpose()?.unwrap_or(1)).map_err(storage)?)
        }
        "snappy" => Compression::SNAPPY,
        "gzip" => Compression::GZIP(
            parquet::basic::GzipLevel::try_new(level.transpose()?.unwrap_or(6) as u32)
                .map_err(storage)?,
        ),
        "lz4" => Compression::LZ4_RAW,
        "uncompressed" | "none" => Compression::UNCOMPRESSED,
        other => {
            return Err(Error::Config(format!(
                "table property write.parquet.compression-codec={other:?}: use zstd, snappy, gzip, lz4 or uncompressed"
            )));
        }
    })
}

/// floe's Parquet settings for data files of either table format: the
/// table's codec, row groups of [`ROW_GROUP_ROWS`], `_hash` stored plain
/// and without statistics, and small dictionary pages.
pub fn parquet_properties(
    table_props: &std::collections::HashMap<String, String>,
) -> Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(compression(table_props)?)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Hashes are unique, random bytes: a dictionary or compression
        // only costs time.
        .set_column_dictionary_enabled(ColumnPath::from(super::schema::HASH), false)
        .set_column_compression(
            ColumnPath::from(super::schema::HASH),
            Compression::UNCOMPRESSED,
        )
        // Bounds of random hashes prune nothing; computing them compares
        // 16 bytes per row twice.
        .set_column_statistics_enabled(
            ColumnPath::from(super::schema::HASH),
            parquet::file::properties::EnabledStatistics::None,
        )
        // Columns with few distinct values (ids, regions, flags, the
        // timestamps of a day) fit a small dictionary; high-cardinality
        // ones (measurements) give up on it early instead of interning
        // a megabyte of values per row group first.
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
        .build())
}

/// Data file writers for `metadata`'s table: Parquet with the table's
/// codec, floe's page and row-group settings, files named
/// `<file_prefix>-...parquet` under the table's data location, rolled at
/// `target_file_size` bytes.
pub fn file_writers(
    metadata: &TableMetadata,
    io: iceberg::io::FileIO,
    file_prefix: &str,
    target_file_size: usize,
) -> Result<Builder> {
    let schema = metadata.current_schema().clone();
    let props = parquet_properties(metadata.properties())?;
    let parquet = ParquetWriterBuilder::new(props, schema);
    let locations = DefaultLocationGenerator::new(metadata).map_err(storage)?;
    let names =
        DefaultFileNameGenerator::new(file_prefix.to_string(), None, DataFileFormat::Parquet);
    let rolling = RollingFileWriterBuilder::new(parquet, target_file_size, io, locations, names);
    Ok(DataFileWriterBuilder::new(rolling))
}

/// A partition: its day, and the other fields' values in a sortable form
/// (empty when the spec is `day(...)` alone).
type Part = (i32, String);

/// Writes batches into per-partition data files (the spec's first field is
/// the day; more fields may follow).
pub struct DayWriters {
    builder: Builder,
    metadata: TableMetadata,
    open: BTreeMap<Part, Writer>,
    /// Rows written to each open writer.
    open_rows: BTreeMap<Part, usize>,
    /// Splits rows by every field of a spec with more than the day.
    splitter: Option<RecordBatchPartitionSplitter>,
    /// The partition values of the parts the splitter found.
    values: std::collections::HashMap<Part, Struct>,
    /// Sort columns (indices into the batch) when the table is sorted.
    sort: Vec<usize>,
    /// The timestamp column the day partitions derive from (none: the
    /// table is unpartitioned and every row goes to one writer).
    time_column: Option<String>,
    /// When set, a row of any other day is an error.
    only_days: Option<std::collections::BTreeSet<i32>>,
    buffered: SortBuffer<Part>,
    done: Vec<DataFile>,
    /// How many writer sets share the memory budgets (each gets its part).
    share: usize,
}

impl std::fmt::Debug for DayWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayWriters")
            .field("open_days", &self.open.len())
            .field("files", &self.done.len())
            .finish_non_exhaustive()
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Storage(e.to_string()).caused_by(e)
}

impl DayWriters {
    /// Writers for the table described by `metadata` (partitioned by the
    /// day of `time_column`), files named after the run, sorted by `sort`
    /// (batch column indices; empty for none).
    pub fn new(
        metadata: &TableMetadata,
        time_column: &str,
        io: iceberg::io::FileIO,
        run_id: &str,
        target_file_size: usize,
        sort: Vec<usize>,
    ) -> Result<Self> {
        let builder = file_writers(metadata, io, run_id, target_file_size)?;
        let spec = metadata.default_partition_spec();
        let splitter = if spec.fields().len() > 1 {
            Some(
                RecordBatchPartitionSplitter::try_new_with_computed_values(
                    metadata.current_schema().clone(),
                    spec.clone(),
                )
                .map_err(storage)?,
            )
        } else {
            None
        };
        Ok(Self {
            builder,
            metadata: metadata.clone(),
            open: BTreeMap::new(),
            open_rows: BTreeMap::new(),
            splitter,
            values: std::collections::HashMap::new(),
            sort,
            time_column: Some(time_column.to_string()),
            only_days: None,
            buffered: SortBuffer::new(1),
            done: Vec::new(),
            share: 1,
        })
    }

    /// Makes this one of `share` writer sets working at once: each keeps
    /// to its part of the memory budgets, so together they hold no more
    /// than one would.
    pub fn sharing(mut self, share: usize) -> Self {
        self.share = share.max(1);
        self.buffered = SortBuffer::new(self.share);
        self
    }

    /// Writes every row to one unpartitioned writer instead (the table's
    /// spec has no fields).
    pub fn unpartitioned(mut self) -> Self {
        self.time_column = None;
        self
    }

    /// Refuses rows of days outside `days` (an error naming the day).
    pub fn only_days(mut self, days: std::collections::BTreeSet<i32>) -> Self {
        self.only_days = Some(days);
        self
    }

    /// Routes a batch's rows to their days (all of which the caller has
    /// checked to lie in the window, or [`Self::only_days`] checks).
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let parts: Vec<(Part, RecordBatch)> = match (&self.time_column, &self.splitter) {
            (None, _) => vec![((0, String::new()), batch)],
            (Some(column), None) => split_by_day(&batch, column)?
                .into_iter()
                .map(|(day, b)| ((day, String::new()), b))
                .collect(),
            (Some(column), Some(splitter)) => {
                // The day is checked (nulls refused) before the splitter runs.
                split_by_day(&batch, column)?;
                let mut out = Vec::new();
                for (key, b) in splitter.split(&batch).map_err(storage)? {
                    let values = key.data().clone();
                    let day = match values.fields().first() {
                        Some(Some(Literal::Primitive(iceberg::spec::PrimitiveLiteral::Int(d)))) => {
                            *d
                        }
                        _ => return Err(Error::Storage(format!("null {column}"))),
                    };
                    let part = (day, format!("{values:?}"));
                    self.values.insert(part.clone(), values);
                    out.push((part, b));
                }
                out
            }
        };
        if let Some(allowed) = &self.only_days
            && let Some(((day, _), _)) = parts.iter().find(|((d, _), _)| !allowed.contains(d))
        {
            return Err(Error::Storage(format!(
                "a row falls on {}, outside the days being written",
                crate::table::days::day_name(*day)
            )));
        }
        for (day, part) in parts {
            if self.sort.is_empty() {
                let rows = part.num_rows();
                self.writer(&day)
                    .await?
                    .write(part)
                    .await
                    .map_err(storage)?;
                *self.open_rows.entry(day).or_default() += rows;
                if self.open_rows.values().sum::<usize>() > OPEN_ROWS_BUDGET / self.share {
                    self.close_fullest().await?;
                }
            } else {
                if let Some(largest) = self.buffered.push(day, part) {
                    self.flush_sorted(largest).await?;
                }
            }
        }
        Ok(())
    }

    async fn writer(&mut self, part: &Part) -> Result<&mut Writer> {
        if !self.open.contains_key(part) {
            let key = self.time_column.is_some().then(|| {
                let values = self
                    .values
                    .get(part)
                    .cloned()
                    .unwrap_or_else(|| Struct::from_iter([Some(Literal::date(part.0))]));
                PartitionKey::new(
                    self.metadata.default_partition_spec().as_ref().clone(),
                    self.metadata.current_schema().clone(),
                    values,
                )
            });
            let w = self.builder.build(key).await.map_err(storage)?;
            self.open.insert(part.clone(), w);
        }
        self.open
            .get_mut(part)
            .ok_or_else(|| Error::Storage("writer vanished".into()))
    }

    /// Closes the open writer holding the most rows (its day continues in a
    /// new file if more rows come).
    async fn close_fullest(&mut self) -> Result<()> {
        let fullest = self
            .open_rows
            .iter()
            .max_by_key(|(_, r)| **r)
            .map(|(d, _)| d.clone());
        if let Some(day) = fullest {
            self.open_rows.remove(&day);
            if let Some(mut w) = self.open.remove(&day) {
                self.done.extend(w.close().await.map_err(storage)?);
            }
        }
        Ok(())
    }

    /// Sorts a day's buffered rows and writes them as file(s) of their own.
    async fn flush_sorted(&mut self, day: Part) -> Result<()> {
        let Some(sorted) = self.buffered.take_sorted(&day, &self.sort)? else {
            return Ok(());
        };
        let writer = self.writer(&day).await?;
        writer.write(sorted).await.map_err(storage)?;
        // Closing makes the next rows of this day start a new file, so each
        // file holds one sorted run.
        if let Some(mut w) = self.open.remove(&day) {
            self.done.extend(w.close().await.map_err(storage)?);
        }
        Ok(())
    }

    /// Flushes everything and returns the data files written.
    pub async fn close(mut self) -> Result<Vec<DataFile>> {
        for day in self.buffered.parts() {
            self.flush_sorted(day).await?;
        }
        let order_id =
            (!self.sort.is_empty()).then(|| self.metadata.default_sort_order_id() as i32);
        for (_, mut w) in std::mem::take(&mut self.open) {
            self.done.extend(w.close().await.map_err(storage)?);
        }
        let spec_id = self.metadata.default_partition_spec_id();
        match order_id {
            Some(id) => self
                .done
                .into_iter()
                .map(|f| with_sort_order(f, id, spec_id))
                .collect(),
            None => Ok(self.done),
        }
    }
}

/// `batches` (of one schema) as one batch sorted by the columns `by`
/// (ascending, nulls first); none when there are no batches.
fn sorted(batches: &[RecordBatch], by: &[usize]) -> Result<Option<RecordBatch>> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let all = arrow_select::concat::concat_batches(&first.schema(), batches).map_err(storage)?;
    let columns: Vec<SortColumn> = by
        .iter()
        .map(|i| SortColumn {
            values: all.column(*i).clone(),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        })
        .collect();
    let order = lexsort_to_indices(&columns, None).map_err(storage)?;
    take_record_batch(&all, &order).map(Some).map_err(storage)
}

/// Rows held per partition until they are sorted and written, bounded in
/// total: [`SortBuffer::push`] names the partition to flush when the bound
/// is passed.
#[derive(Debug)]
pub(crate) struct SortBuffer<K: Ord + Clone> {
    by_part: BTreeMap<K, Vec<RecordBatch>>,
    bytes: usize,
    limit: usize,
}

impl<K: Ord + Clone> SortBuffer<K> {
    /// A buffer holding up to [`SORT_BUFFER_BYTES`]` / share` Arrow bytes.
    pub(crate) fn new(share: usize) -> Self {
        Self {
            by_part: BTreeMap::new(),
            bytes: 0,
            limit: SORT_BUFFER_BYTES / share.max(1),
        }
    }

    /// Holds `batch` of `part`; past the bound, returns the partition
    /// holding the most, to flush.
    pub(crate) fn push(&mut self, part: K, batch: RecordBatch) -> Option<K> {
        self.bytes += batch.get_array_memory_size();
        self.by_part.entry(part).or_default().push(batch);
        if self.bytes <= self.limit {
            return None;
        }
        self.by_part
            .iter()
            .max_by_key(|(_, b)| {
                b.iter()
                    .map(RecordBatch::get_array_memory_size)
                    .sum::<usize>()
            })
            .map(|(p, _)| p.clone())
    }

    /// Takes a partition's rows, sorted by the columns `by` (none: nothing
    /// held).
    pub(crate) fn take_sorted(&mut self, part: &K, by: &[usize]) -> Result<Option<RecordBatch>> {
        let Some(batches) = self.by_part.remove(part) else {
            return Ok(None);
        };
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        self.bytes = self.bytes.saturating_sub(bytes);
        sorted(&batches, by)
    }

    /// The partitions holding rows.
    pub(crate) fn parts(&self) -> Vec<K> {
        self.by_part.keys().cloned().collect()
    }
}

/// A builder holding what identifies a data file (content, path, format,
/// partition, row count, size), without its column statistics.
pub fn builder_from(file: &DataFile) -> DataFileBuilder {
    let mut b = DataFileBuilder::default();
    b.content(file.content_type())
        .file_path(file.file_path().to_string())
        .file_format(file.file_format())
        .partition(file.partition().clone())
        .record_count(file.record_count())
        .file_size_in_bytes(file.file_size_in_bytes());
    b
}

/// Records in a data file that its rows follow sort order `id` (the
/// crate's writer leaves it unset and offers no setter, so the file is
/// rebuilt through the public builder with every statistic carried over).
pub fn with_sort_order(file: DataFile, id: i32, spec_id: i32) -> Result<DataFile> {
    let mut b = builder_from(&file);
    b.column_sizes(file.column_sizes().clone())
        .value_counts(file.value_counts().clone())
        .null_value_counts(file.null_value_counts().clone())
        .nan_value_counts(file.nan_value_counts().clone())
        .lower_bounds(file.lower_bounds().clone())
        .upper_bounds(file.upper_bounds().clone())
        .split_offsets(file.split_offsets().map(<[i64]>::to_vec))
        .sort_order_id(id)
        .partition_spec_id(spec_id);
    b.build().map_err(storage)
}

/// Splits a batch by the day of `column` (an error for a null).
pub fn split_by_day(batch: &RecordBatch, column: &str) -> Result<Vec<(i32, RecordBatch)>> {
    let ts = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| Error::Storage(format!("batch has no timestamp column {column}")))?;
    if ts.null_count() > 0 {
        return Err(Error::Storage(format!("null {column}")));
    }
    // Most batches hold one day (a source file, a day's partition): say so
    // without building index lists.
    let values = ts.values();
    if let Some(first) = values.first().map(|v| day_of(*v))
        && values.iter().all(|v| day_of(*v) == first)
    {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut groups: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (i, v) in ts.iter().enumerate() {
        let day = v
            .map(day_of)
            .ok_or_else(|| Error::Storage(format!("null {column}")))?;
        groups.entry(day).or_default().push(i as u32);
    }
    if groups.len() == 1 {
        let day = *groups.keys().next().unwrap_or(&0);
        return Ok(vec![(day, batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(day, rows)| {
            take_record_batch(batch, &UInt32Array::from(rows))
                .map(|b| (day, b))
                .map_err(storage)
        })
        .collect()
}
