//! The blocking side of a run's read: every unit (a source file, a landed
//! page, database rows or Kafka records) read and converted on one thread
//! per core, the batches sent to the writer.
//!
//! One thread opens the units in order (fetching remote files) and hands
//! out work: a whole unit, or for NDJSON a block of whole lines
//! ([`records::LineBlocks`]), so a single big file is decoded on every
//! core too. Each decoding thread has its own batch builder; memory stays
//! bounded by the work queue (a few blocks) and one batch per thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::convert::{BatchBuilder, Record};
use super::fields::RecordView;
use super::rejects::Reject;
use super::{
    BATCH_ROWS, EVERY_DAY, Msg, Unit, csv_blocks, database, drift, files, flat, http, kafka,
    nested, progress, records,
};
use crate::error::{Error, Result};
use crate::pipeline::{ColumnType, Format, HttpSource, Job, SchemaDrift, Source, SourceConfig};
use crate::table::days::day_of;

/// Threads that decode: one per core, at most [`MAX_DECODERS`].
fn decoders() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_DECODERS))
}

const MAX_DECODERS: usize = 8;

/// Rows counted locally before the shared progress line hears of them.
const PROGRESS_EVERY: u64 = 4096;

/// A unit whose file is local (fetched when remote), shared by its pieces
/// of work.
struct Opened<'u> {
    unit: &'u Unit,
    uri: String,
    /// How errors name the input: its path, or a database source.
    named: String,
    path: PathBuf,
    /// A fetched file, removed when the last piece is done.
    _temp: Option<tempfile::NamedTempFile>,
}

/// One piece of reading: a whole unit, or a block of a big file.
struct Work<'u> {
    opened: Arc<Opened<'u>>,
    block: Block,
}

/// What of a unit a piece of work reads.
enum Block {
    Whole,
    /// Whole lines of an NDJSON file.
    Lines(records::LineBlock),
    /// Whole records of a CSV file.
    Csv(csv_blocks::CsvBlock),
}

/// How a job's units are read.
enum UnitFormat<'j> {
    /// As files of this format: the job's own, or how database rows and
    /// Kafka records land.
    File(SourceConfig),
    /// As landed pages of this API.
    Page(&'j HttpSource),
}

fn unit_format(job: &Job) -> UnitFormat<'_> {
    match &job.source {
        Source::Files(cfg) => UnitFormat::File(cfg.clone()),
        Source::Database(_) => UnitFormat::File(database::landed_format()),
        Source::Kafka(k) => UnitFormat::File(kafka::landed_format(k)),
        Source::Http(h) => UnitFormat::Page(h),
    }
}

/// How a job's units are cut into blocks: NDJSON by lines, CSV by
/// records; none for other formats (read whole, one thread a unit).
fn cut(job: &Job) -> Option<SourceConfig> {
    match unit_format(job) {
        UnitFormat::File(c) if matches!(c.format, Format::Ndjson | Format::Csv) => Some(c),
        _ => None,
    }
}

/// Reads every unit, converting records, and sends batches, counts and
/// rejects on `tx`. Remote files are fetched to a temporary file first (on
/// the thread that hands out work, through the runtime's handle), so
/// reading stays streaming and local.
pub(super) fn read_all(
    job: &Job,
    units: Vec<Unit>,
    fetcher: &files::Fetcher,
    builder: BatchBuilder,
    tx: &mpsc::Sender<Msg>,
) -> Result<()> {
    // The total size is known when every file is local (landed sources
    // among them); remote files are sized only once fetched.
    let sizes: Option<u64> = units
        .iter()
        .map(|u| match &u.file {
            files::SourceFile::Local(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            files::SourceFile::Remote(_) => None,
        })
        .sum();
    let progress = Mutex::new(progress::Progress::new(&job.name, units.len(), sizes));
    // NDJSON and CSV are cut into blocks: even one file keeps every thread
    // busy.
    let threads = if cut(job).is_some() {
        decoders()
    } else {
        decoders().min(units.len().max(1))
    };
    let mut builders = vec![builder];
    for _ in 1..threads {
        let first = &builders[0];
        builders.push(BatchBuilder::new(
            job,
            std::sync::Arc::clone(first.schema()),
            first.ingest_time(),
        )?);
    }
    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = sync_channel::<Work<'_>>(threads);
    let work_rx = Mutex::new(work_rx);
    let outcome = std::thread::scope(|scope| {
        let decoding: Vec<_> = builders
            .into_iter()
            .map(|builder| {
                let (work_rx, progress, stop) = (&work_rx, &progress, &stop);
                scope.spawn(move || decode(job, work_rx, builder, tx, progress, stop))
            })
            .collect();
        let handed = hand_out(job, &units, fetcher, &work_tx, &progress, &stop);
        if handed.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(work_tx);
        let decoded: Vec<Result<()>> = decoding
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Source("a decoding thread failed".into())))
            })
            .collect();
        // The first error: the hand-out's (a file that cannot be fetched),
        // else a decoder's.
        std::iter::once(handed)
            .chain(decoded)
            .collect::<Result<Vec<()>>>()
    });
    progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .finish();
    outcome.map(|_| ())
}

/// Opens the units in order and hands out their work, until a decoder
/// stops the read.
fn hand_out<'u>(
    job: &Job,
    units: &'u [Unit],
    fetcher: &files::Fetcher,
    work: &std::sync::mpsc::SyncSender<Work<'u>>,
    progress: &Mutex<progress::Progress>,
    stop: &AtomicBool,
) -> Result<()> {
    let runtime = tokio::runtime::Handle::current();
    let split = cut(job);
    for unit in units {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let uri = unit
            .origin
            .as_ref()
            .map_or_else(|| unit.file.uri(), |o| o.uri.clone());
        tracing::debug!(source = %uri, job = %job.name, "reading");
        progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .next_file();
        let (path, temp) = fetcher.materialize(&unit.file, &runtime)?;
        let opened = Arc::new(Opened {
            unit,
            uri,
            named: unit
                .origin
                .as_ref()
                .map_or_else(|| path.display().to_string(), |o| o.uri.clone()),
            path,
            _temp: temp,
        });
        let blocks: Box<dyn Iterator<Item = Result<Block>>> = match &split {
            Some(c) if c.format == Format::Csv => Box::new(
                csv_blocks::CsvBlocks::open(&opened.path, c, None)?.map(|b| b.map(Block::Csv)),
            ),
            Some(_) => {
                Box::new(records::LineBlocks::open(&opened.path)?.map(|b| b.map(Block::Lines)))
            }
            None => Box::new(std::iter::once(Ok(Block::Whole))),
        };
        for block in blocks {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let piece = Work {
                opened: Arc::clone(&opened),
                block: block?,
            };
            // Every decoder gone means they all stopped.
            if work.send(piece).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One decoding thread: takes work until there is none, converting into
/// its own builder. After an error it stops the read and drains the queue.
fn decode(
    job: &Job,
    work: &Mutex<Receiver<Work<'_>>>,
    mut builder: BatchBuilder,
    tx: &mpsc::Sender<Msg>,
    progress: &Mutex<progress::Progress>,
    stop: &AtomicBool,
) -> Result<()> {
    let mut row = None;
    let mut failure = None;
    loop {
        let next = work.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(piece) = next else { break };
        if failure.is_some() || stop.load(Ordering::Relaxed) {
            continue;
        }
        if let Err(e) = read_piece(job, &piece, &mut builder, &mut row, tx, progress) {
            stop.store(true, Ordering::Relaxed);
            failure = Some(e);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if !builder.is_empty() {
        send_batch(tx, builder.finish()?)?;
    }
    Ok(())
}

/// Reads one piece of work into `builder`, then sends its counts and
/// rejects.
fn read_piece(
    job: &Job,
    piece: &Work<'_>,
    builder: &mut BatchBuilder,
    row: &mut Option<flat::FlatRow>,
    tx: &mpsc::Sender<Msg>,
    progress: &Mutex<progress::Progress>,
) -> Result<()> {
    let opened = &piece.opened;
    let mut sink = FileSink::new(
        job,
        opened.unit,
        &opened.uri,
        &opened.named,
        builder,
        tx,
        progress,
    );
    let bytes = match &piece.block {
        Block::Lines(block) => {
            if row.is_none() {
                *row = records::RecordSink::shape(&sink).map(flat::FlatRow::new);
            }
            records::read_ndjson_block(block, &mut sink, row)?;
            block.bytes.len() as u64
        }
        Block::Csv(block) => {
            csv_blocks::read_csv_block(&opened.path, block, &mut sink)?;
            block.bytes.len() as u64
        }
        Block::Whole => {
            read_unit(job, opened.unit, &opened.path, &mut sink)?;
            std::fs::metadata(&opened.path).map_or(0, |m| m.len())
        }
    };
    sink.report_rows();
    progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .file_done(bytes);
    let rejected = sink.take_rejects();
    let (read, outside) = (sink.read, sink.outside);
    tx.blocking_send(Msg::Counts { read, outside })
        .map_err(|_| closed())?;
    if !rejected.is_empty() {
        tx.blocking_send(Msg::Rejects(rejected))
            .map_err(|_| closed())?;
    }
    Ok(())
}

/// Feeds a unit's records to `sink`, `path` being its local copy.
pub(super) fn read_unit(
    job: &Job,
    unit: &Unit,
    path: &std::path::Path,
    sink: &mut dyn records::RecordSink,
) -> Result<()> {
    match unit_format(job) {
        UnitFormat::File(cfg) => records::read_file(path, &cfg, sink),
        UnitFormat::Page(h) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Source(format!("{}: {e}", path.display())).caused_by(e))?;
            let empty = std::collections::BTreeMap::new();
            let vars = unit.vars.as_ref().unwrap_or(&empty);
            http::read_page(&bytes, &unit.file.uri(), h, vars, sink)
        }
    }
}

/// Sends a batch on, unless every row of it was rejected.
fn send_batch(tx: &mpsc::Sender<Msg>, batch: arrow_array::RecordBatch) -> Result<()> {
    if batch.num_rows() == 0 {
        return Ok(());
    }
    tx.blocking_send(Msg::Batch(batch)).map_err(|_| closed())
}

fn closed() -> Error {
    Error::Storage("the writer stopped".into())
}

/// Converts one file's records and sends them on.
pub(super) struct FileSink<'a> {
    job: &'a Job,
    uri: String,
    /// How errors name the input: its path, or a database source.
    named: String,
    builder: &'a mut BatchBuilder,
    window: &'a std::ops::RangeInclusive<i32>,
    tx: &'a mpsc::Sender<Msg>,
    progress: &'a Mutex<progress::Progress>,
    /// Rows read that the progress line has not heard of yet.
    unreported: u64,
    rejected: Vec<Reject>,
    pub(super) read: u64,
    pub(super) outside: u64,
    drift_checked: bool,
    /// A CSV file: its header is checked for drift once, its cells are text.
    csv: bool,
    /// Kafka records: a reject's line is its offset.
    origin: Option<&'a kafka::Origin>,
    /// NDJSON and CSV rows decoded straight into the job's fields
    /// ([`flat`]), not as JSON values.
    pub(super) decode_rows: bool,
}

impl<'a> FileSink<'a> {
    /// A sink for (a piece of) `unit`, read from `uri` and named in errors
    /// as `named`.
    pub(super) fn new(
        job: &'a Job,
        unit: &'a Unit,
        uri: &str,
        named: &str,
        builder: &'a mut BatchBuilder,
        tx: &'a mpsc::Sender<Msg>,
        progress: &'a Mutex<progress::Progress>,
    ) -> Self {
        Self {
            job,
            uri: uri.to_string(),
            named: named.to_string(),
            builder,
            window: if job.has_event_time() {
                &unit.keep
            } else {
                &EVERY_DAY
            },
            tx,
            progress,
            unreported: 0,
            rejected: Vec::new(),
            read: 0,
            outside: 0,
            drift_checked: false,
            csv: job.source.files().map(|f| f.format) == Some(Format::Csv),
            origin: unit.origin.as_deref(),
            decode_rows: true,
        }
    }

    /// Tells the progress line of the rows read since it last heard.
    pub(super) fn report_rows(&mut self) {
        if self.unreported > 0 {
            self.progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .rows(self.unreported);
            self.unreported = 0;
        }
    }
}

impl FileSink<'_> {
    /// Whether a record (or batch) is checked for unknown source fields:
    /// only when they fail the run (the default), and a CSV header or
    /// Parquet schema (`once`) only the first time.
    fn drift_due(&mut self, once: bool) -> bool {
        if self.job.schema_drift != SchemaDrift::Error || (once && self.drift_checked) {
            return false;
        }
        self.drift_checked = true;
        true
    }

    /// Schema drift of a row-oriented record: JSON records are checked
    /// each time, with the type the value suggests; CSV once.
    fn check_record_drift(&mut self, record: &impl RecordView) -> Result<()> {
        if !self.drift_due(self.csv) {
            return Ok(());
        }
        match self.builder.unknown_field_of(record, !self.csv) {
            Some((field, kind)) => Err(self.unknown_field_error(&field, kind, record.line())),
            None => Ok(()),
        }
    }

    fn unknown_field_error(&self, field: &str, kind: Option<ColumnType>, line: u64) -> Error {
        Error::Source(format!(
            "{}:{line}: unknown source field {field:?}: add it to the job's columns, e.g.\n  {}\n\
             (type guessed from its value), or set schema_drift = \"ignore\" (drop such fields) \
             or \"evolve\" (add them as nullable columns)",
            self.named,
            drift::column_line(field, kind)
        ))
    }

    /// A key a nested column's type does not declare fails the run
    /// unless the job drops such keys (`schema_drift = "ignore"`): nested
    /// types are not evolved.
    fn check_nested_drift(&self, record: &impl RecordView) -> Result<()> {
        if self.job.schema_drift == SchemaDrift::Ignore {
            return Ok(());
        }
        let Some((column, path, value)) = self.builder.unknown_nested_key(record) else {
            return Ok(());
        };
        let (parent, key) = path.rsplit_once('.').unwrap_or((column, &path));
        let kind = nested::suggest(&value).unwrap_or(ColumnType::String);
        Err(Error::Source(format!(
            "{}:{}: unknown key {path} in nested field {column}: declare it in the column's \
             type (add `{key}: {kind}` to the struct at {parent}), or set schema_drift = \
             \"ignore\" to drop such keys (nested types are not evolved)",
            self.named,
            record.line()
        )))
    }

    /// Converts one record of a row-oriented source, whichever decoder
    /// read it.
    fn take(&mut self, record: &impl RecordView) -> Result<()> {
        self.read += 1;
        self.unreported += 1;
        if self.unreported >= PROGRESS_EVERY {
            self.report_rows();
        }
        self.check_record_drift(record)?;
        self.check_nested_drift(record)?;
        let ts = match self.builder.event_time(record) {
            Ok(ts) => ts,
            Err(reason) => {
                self.rejected.push(Reject::new(record, reason, &self.uri));
                return self.flush_rejects();
            }
        };
        if !self.window.contains(&day_of(ts)) {
            self.outside += 1;
            return Ok(());
        }
        if let Err(reason) = self.builder.push(record, ts, &self.uri) {
            self.rejected.push(Reject::new(record, reason, &self.uri));
        }
        if self.builder.len() >= BATCH_ROWS {
            send_batch(self.tx, self.builder.finish()?)?;
        }
        self.flush_rejects()
    }

    fn flush_rejects(&mut self) -> Result<()> {
        if self.rejected.len() >= BATCH_ROWS {
            let rejected = self.take_rejects();
            self.tx
                .blocking_send(Msg::Rejects(rejected))
                .map_err(|_| closed())?;
        }
        Ok(())
    }

    /// The rejects so far, a Kafka record's line made its offset.
    pub(super) fn take_rejects(&mut self) -> Vec<Reject> {
        let mut rejected = std::mem::take(&mut self.rejected);
        if let Some(origin) = self.origin {
            for r in &mut rejected {
                if let Some((bytes, why)) = origin.unreadable(r.line) {
                    r.raw = String::from_utf8_lossy(bytes).into_owned();
                    r.raw_bytes = Some(bytes.clone());
                    r.reason = format!("does not decode: {why}");
                }
                r.line = origin.offset(r.line);
            }
        }
        rejected
    }
}

impl records::RecordSink for FileSink<'_> {
    fn record(&mut self, record: Record) -> Result<()> {
        self.take(&record)
    }

    fn shape(&self) -> Option<Arc<flat::RowShape>> {
        self.decode_rows.then(|| self.builder.shape())
    }

    fn row(&mut self, row: &flat::FlatRow) -> Result<()> {
        self.take(row)
    }

    fn batch(&mut self, batch: arrow_array::RecordBatch, first: u64) -> Result<()> {
        if self.drift_due(true) {
            let schema = batch.schema();
            let names = schema.fields().iter().map(|f| f.name());
            if let Some(field) = self.builder.unknown_field(names) {
                let kind = schema
                    .field_with_name(field)
                    .ok()
                    .map(|f| drift::arrow_type(f.data_type()));
                return Err(self.unknown_field_error(field, kind, first));
            }
        }
        let converted = self.builder.convert_batch(&batch, &self.uri, self.window)?;
        self.read += batch.num_rows() as u64;
        self.unreported += batch.num_rows() as u64;
        self.report_rows();
        self.outside += converted.outside;
        for (row, reason) in converted.rejected {
            self.rejected.push(Reject {
                raw: records::row_text(&batch, row),
                raw_bytes: None,
                reason,
                source: self.uri.clone(),
                line: first + row as u64,
            });
        }
        if let Some(good) = converted.batch {
            self.tx
                .blocking_send(Msg::Batch(good))
                .map_err(|_| closed())?;
        }
        self.flush_rejects()
    }

    fn unreadable(&mut self, bad: records::Unreadable) {
        self.read += 1;
        self.rejected.push(Reject::unreadable(bad, &self.uri));
    }
}
