//! Reading source files into [`Record`]s, one file at a time and in
//! bounded chunks: NDJSON and CSV stream line by line, Parquet row group by
//! row group; a JSON document is read whole (API responses, not bulk data).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

use super::convert::Record;
use super::csv_blocks::{CsvBlocks, read_csv_block};
use super::fields::RecordView;
use super::flat::{FlatRow, NotARow, RowShape};
use super::json;
use crate::error::{Error, Result};
use crate::pipeline::{Format, SourceConfig};

/// A record that could not even be read as a record (malformed line).
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The text as read (lossy when the bytes are not UTF-8).
    pub raw: String,
    /// The exact bytes, when they are not UTF-8 (`raw` cannot hold them).
    pub raw_bytes: Option<Vec<u8>>,
    /// Why.
    pub reason: String,
    /// Where.
    pub line: u64,
}

impl Unreadable {
    /// Text that is not a record.
    pub fn text(raw: String, reason: String, line: u64) -> Self {
        Self {
            raw,
            raw_bytes: None,
            reason,
            line,
        }
    }

    /// Bytes that are not a record: their text, and the bytes themselves
    /// when they are not UTF-8, so nothing is lost.
    pub fn bytes(bytes: Vec<u8>, reason: String, line: u64) -> Self {
        match String::from_utf8(bytes) {
            Ok(raw) => Self::text(raw, reason, line),
            Err(e) => Self {
                raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                raw_bytes: Some(e.into_bytes()),
                reason,
                line,
            },
        }
    }
}

/// Receives what a file holds.
pub trait RecordSink {
    /// A record of a row-oriented source (NDJSON, JSON, CSV).
    fn record(&mut self, record: Record) -> Result<()>;
    /// The fields the sink reads, when it takes NDJSON and CSV rows decoded
    /// straight into them ([`Self::row`]) rather than as JSON records.
    fn shape(&self) -> Option<Arc<RowShape>> {
        None
    }
    /// A row decoded for [`Self::shape`].
    fn row(&mut self, row: &FlatRow) -> Result<()> {
        self.record(row.to_record())
    }
    /// A batch of a columnar source (Parquet) and the record number of its
    /// first row.
    fn batch(&mut self, batch: RecordBatch, first: u64) -> Result<()>;
    /// Text that is not a record at all.
    fn unreadable(&mut self, bad: Unreadable);
}

/// Feeds every record (or batch) of `path` to `sink`, stopping at the first
/// error it returns.
pub fn read_file(path: &Path, source: &SourceConfig, sink: &mut dyn RecordSink) -> Result<()> {
    match source.format {
        Format::Ndjson => read_ndjson(path, sink),
        Format::Json => read_json(path, source, sink),
        Format::Csv => read_csv(path, source, sink),
        Format::Parquet => read_parquet(path, sink),
        // Refused when the pipeline is read; Kafka's Avro lands as NDJSON.
        Format::Avro => Err(Error::Config(format!(
            "{}: format \"avro\" is for Kafka records",
            path.display()
        ))),
    }
}

/// An I/O error reading `path`.
pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Source(format!("{}: {e}", path.display())).caused_by(e)
}

/// A UTF-8 byte order mark, which some tools write at the start of a file.
pub(super) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One record per line; a line that is not a JSON object (or not UTF-8)
/// is a reject of its own. Read in blocks of whole lines
/// ([`LineBlocks`]), as the threads that decode big files read them.
fn read_ndjson(path: &Path, sink: &mut dyn RecordSink) -> Result<()> {
    let mut row = sink.shape().map(FlatRow::new);
    for block in LineBlocks::open(path)? {
        let block = block?;
        read_ndjson_block(&block, sink, &mut row)?;
    }
    Ok(())
}

/// Bytes of a file read per block (more when one line is longer).
const BLOCK_BYTES: usize = 4 << 20;

/// A block of an NDJSON file: whole lines, the first one numbered
/// `first_line` (1-based).
#[derive(Debug)]
pub struct LineBlock {
    pub bytes: Vec<u8>,
    pub first_line: u64,
}

/// An NDJSON file as blocks of whole lines, each numbered: what one
/// thread reads while others decode.
#[derive(Debug)]
pub struct LineBlocks {
    path: std::path::PathBuf,
    file: File,
    /// The start of a line the last block did not end.
    carry: Vec<u8>,
    next_line: u64,
    done: bool,
    /// Bytes read per block.
    block: usize,
    /// The file's size when opened, and the bytes read so far: no buffer
    /// is bigger than what is left.
    size: u64,
    offset: u64,
}

impl LineBlocks {
    /// The blocks of `path`.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path) -> Result<Self> {
        Self::with_block(path, BLOCK_BYTES)
    }

    /// The blocks of `path`, reading `block` bytes at a time.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn with_block(path: &Path, block: usize) -> Result<Self> {
        let file = File::open(path).map_err(io_error(path))?;
        let size = file.metadata().map_or(0, |m| m.len());
        Ok(Self {
            size,
            offset: 0,
            path: path.to_path_buf(),
            file,
            carry: Vec::new(),
            next_line: 1,
            done: false,
            block: block.max(1),
        })
    }

    fn read_block(&mut self) -> Result<Option<LineBlock>> {
        let mut bytes = std::mem::take(&mut self.carry);
        let io = io_error(&self.path);
        // Read until the block holds a line end past BLOCK_BYTES, or the
        // file ends.
        let end = loop {
            let start = bytes.len();
            let left = usize::try_from(self.size.saturating_sub(self.offset)).unwrap_or(usize::MAX);
            // What is left (and a little more, should the file have grown).
            let want = self
                .block
                .max(start / 2)
                .min(left.saturating_add(1).max(4096));
            bytes.reserve(want);
            let n = (&mut self.file)
                .take(want as u64)
                .read_to_end(&mut bytes)
                .map_err(&io)?;
            self.offset += n as u64;
            if n == 0 {
                break None;
            }
            if let Some(last) = memchr::memrchr(b'\n', &bytes[start..]) {
                break Some(start + last + 1);
            }
        };
        match end {
            Some(end) => self.carry = bytes.split_off(end),
            // The file ended: what is left is the last block, if anything.
            None if bytes.is_empty() => {
                self.done = true;
                return Ok(None);
            }
            None => self.done = true,
        }
        let first_line = self.next_line;
        let ends = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        // A last line without its line end is a line too.
        self.next_line += ends + u64::from(bytes.last().is_some_and(|b| *b != b'\n'));
        Ok(Some(LineBlock { bytes, first_line }))
    }
}

impl Iterator for LineBlocks {
    type Item = Result<LineBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.read_block().transpose()
    }
}

/// The records of `block` (whole NDJSON lines) to `sink`; `row` is the
/// sink's decoded row when it takes them ([`RecordSink::shape`]). A byte
/// order mark before a file's first line is not part of it.
pub fn read_ndjson_block(
    block: &LineBlock,
    sink: &mut dyn RecordSink,
    row: &mut Option<FlatRow>,
) -> Result<()> {
    let all: &[u8] = &block.bytes;
    // A block is checked as UTF-8 at once (with SIMD); only a block that
    // is not has its lines checked one by one.
    let whole = simdutf8::basic::from_utf8(all).ok();
    let mut at = 0;
    let mut number = block.first_line - 1;
    while at < all.len() {
        let (mut start, mut end) = (
            at,
            memchr::memchr(b'\n', &all[at..]).map_or(all.len(), |i| at + i),
        );
        at = end + 1;
        number += 1;
        if number == 1 && all[start..end].starts_with(BOM) {
            start += BOM.len();
        }
        while end > start && all[end - 1] == b'\r' {
            end -= 1;
        }
        let bytes = &all[start..end];
        // A line that is not UTF-8 is a reject of its own (its bytes
        // kept exactly); the others still land.
        let checked = match whole {
            Some(text) => Ok(&text[start..end]),
            None => std::str::from_utf8(bytes),
        };
        let text = match checked {
            Ok(text) => text,
            Err(e) => {
                let at = e.valid_up_to();
                sink.unreadable(Unreadable::bytes(
                    bytes.to_vec(),
                    format!("invalid UTF-8 at byte {at} of the line"),
                    number,
                ));
                continue;
            }
        };
        // Blank: JSON's own white space only. Any other text (Unicode
        // white space included) is not JSON, and a reject.
        if text.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        match row {
            // Decoded straight into the sink's fields.
            Some(row) => match row.decode_json(text, number) {
                Ok(()) => sink.row(row)?,
                Err(why) => {
                    let reason = match why {
                        NotARow::NotObject => NOT_AN_OBJECT.into(),
                        NotARow::Json(e) => json_reason(&e),
                    };
                    sink.unreadable(Unreadable::text(row.raw().to_string(), reason, number));
                }
            },
            // A key present twice is a reject, not the last value silently.
            None => {
                let line = text.to_string();
                match json::from_str(&line) {
                    Ok(Value::Object(fields)) => sink.record(Record {
                        fields,
                        raw: line,
                        line: number,
                    })?,
                    Ok(_) => sink.unreadable(Unreadable::text(line, NOT_AN_OBJECT.into(), number)),
                    Err(e) => sink.unreadable(Unreadable::text(line, json_reason(&e), number)),
                }
            }
        }
    }
    Ok(())
}

const NOT_AN_OBJECT: &str = "line is JSON but not an object";

/// Why JSON text is not a record: a key present twice, or malformed.
fn json_reason(e: &serde_json::Error) -> String {
    if json::is_duplicate(e) {
        e.to_string()
    } else {
        format!("malformed JSON: {e}")
    }
}

/// One JSON document: the records are the array at `records` (an object
/// there is one record).
///
/// The document is checked first without building its values
/// ([`json::check`]: the errors of parsing it whole), then its structure
/// is read as text ([`json::record_items`]) and each record parsed on its
/// own, so memory holds the file's text and one record's value, not the
/// whole document's (several times the file's size). A record with a key
/// present twice is a reject of its own: the document is then read record
/// by record as the source has it. The result is that of parsing the
/// document whole ([`read_json_whole`]).
fn read_json(path: &Path, source: &SourceConfig, sink: &mut dyn RecordSink) -> Result<()> {
    let io = io_error(path);
    let text = std::fs::read_to_string(path).map_err(&io)?;
    match json::check(&text) {
        Ok(()) => {}
        Err(e) if json::is_duplicate(&e) => {
            return read_json_records(path, source, &text, sink);
        }
        Err(e) => return Err(malformed_document(path, e)),
    }
    match json::record_items(&text, source.records.as_deref().unwrap_or("")) {
        Some(items) => read_json_items(&items, sink),
        // The records path leads nowhere: the whole reading says why.
        None => read_json_whole(path, source, &text, sink),
    }
}

fn malformed_document(path: &Path, e: serde_json::Error) -> Error {
    Error::Source(format!("{}: malformed JSON document: {e}", path.display())).caused_by(e)
}

/// One JSON document parsed whole, as a value: what [`read_json`] gives.
/// A record with a key present twice is a reject of its own: the document
/// is then read again record by record.
pub(super) fn read_json_whole(
    path: &Path,
    source: &SourceConfig,
    text: &str,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let doc = match json::from_str(text) {
        Ok(doc) => doc,
        Err(e) if json::is_duplicate(&e) => {
            return read_json_records(path, source, text, sink);
        }
        Err(e) => return Err(malformed_document(path, e)),
    };
    let mut node = &doc;
    for key in source
        .records
        .iter()
        .flat_map(|p| p.split('.'))
        .filter(|k| !k.is_empty())
    {
        node = node.get(key).ok_or_else(|| {
            Error::Source(format!(
                "{}: no key {key:?} on the records path {:?}",
                path.display(),
                source.records
            ))
        })?;
    }
    // An object is one record (an answer that is a single record).
    let items = match node {
        Value::Array(items) => items.as_slice(),
        Value::Object(_) => std::slice::from_ref(node),
        _ => {
            return Err(Error::Source(format!(
                "{}: the records path leads to neither an array nor an object",
                path.display()
            )));
        }
    };
    for (i, item) in items.iter().enumerate() {
        json_record(item.clone(), i as u64 + 1, sink)?;
    }
    Ok(())
}

/// A JSON document with a key present twice, record by record: each record
/// parsed on its own, the ones with such a key rejected with their text as
/// the source has it.
fn read_json_records(
    path: &Path,
    source: &SourceConfig,
    text: &str,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let items = json::raw_records(text, source.records.as_deref().unwrap_or(""))
        .map_err(|e| Error::Source(format!("{}: {e}", path.display())).caused_by(e))?;
    read_json_items(&items, sink)
}

/// `items` (numbered from 1), each parsed on its own: a record, or a
/// reject with its text as the source has it.
fn read_json_items(
    items: &[&serde_json::value::RawValue],
    sink: &mut dyn RecordSink,
) -> Result<()> {
    for (number, item) in (1..).zip(items) {
        match json::from_str(item.get()) {
            Ok(value) => json_record(value, number, sink)?,
            Err(e) => sink.unreadable(Unreadable::text(
                item.get().to_string(),
                json_reason(&e),
                number,
            )),
        }
    }
    Ok(())
}

/// Item `number` of a JSON document: a record when it is an object.
fn json_record(item: Value, number: u64, sink: &mut dyn RecordSink) -> Result<()> {
    let raw = item.to_string();
    match item {
        Value::Object(fields) => sink.record(Record {
            fields,
            raw,
            line: number,
        }),
        _ => {
            sink.unreadable(Unreadable::text(
                raw,
                "record is not an object".into(),
                number,
            ));
            Ok(())
        }
    }
}

/// A CSV file's records, read in blocks of whole records
/// ([`CsvBlocks`]), as the threads that decode big files read them.
fn read_csv(path: &Path, source: &SourceConfig, sink: &mut dyn RecordSink) -> Result<()> {
    for block in CsvBlocks::open(path, source, None)? {
        read_csv_block(path, &block?, sink)?;
    }
    Ok(())
}

/// The bytes of `path` from `start` to `end` (a CSV record), without the
/// line ends around them; `file` is the handle kept for these reads.
pub(super) fn bytes_at(
    path: &Path,
    file: &mut Option<File>,
    start: u64,
    end: u64,
) -> Result<Vec<u8>> {
    let io = io_error(path);
    let f = match file {
        Some(f) => f,
        None => file.insert(File::open(path).map_err(&io)?),
    };
    f.seek(SeekFrom::Start(start)).map_err(&io)?;
    let mut bytes = Vec::new();
    f.by_ref()
        .take(end.saturating_sub(start))
        .read_to_end(&mut bytes)
        .map_err(&io)?;
    let is_end = |b: &u8| *b == b'\n' || *b == b'\r';
    let from = bytes.iter().position(|b| !is_end(b)).unwrap_or(bytes.len());
    let to = bytes
        .iter()
        .rposition(|b| !is_end(b))
        .map_or(from, |i| i + 1);
    bytes.truncate(to);
    bytes.drain(..from);
    Ok(bytes)
}

fn read_parquet(path: &Path, sink: &mut dyn RecordSink) -> Result<()> {
    let file = File::open(path)
        .map_err(|e| Error::Source(format!("{}: {e}", path.display())).caused_by(e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| {
            Error::Source(format!(
                "{}: not a readable Parquet file: {e}",
                path.display()
            ))
            .caused_by(e)
        })?;
    let mut first = 1u64;
    for batch in reader {
        let batch =
            batch.map_err(|e| Error::Source(format!("{}: {e}", path.display())).caused_by(e))?;
        let rows = batch.num_rows() as u64;
        sink.batch(batch, first)?;
        first += rows;
    }
    Ok(())
}

/// One row of a batch as JSON text (for rejects).
pub fn row_text(batch: &RecordBatch, row: usize) -> String {
    rows_of(&batch.slice(row, 1))
        .ok()
        .and_then(|mut r| r.pop())
        .map(|m| Value::Object(m).to_string())
        .unwrap_or_default()
}

/// A batch's rows as field maps; numbers and booleans stay typed, other
/// values (timestamps, dates, decimals) become their display text, which the
/// converter parses like any text source.
fn rows_of(
    batch: &RecordBatch,
) -> std::result::Result<Vec<Map<String, Value>>, arrow_schema::ArrowError> {
    let options =
        FormatOptions::default().with_timestamp_tz_format(Some("%Y-%m-%dT%H:%M:%S%.f%:z"));
    let schema = batch.schema();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut fields = Map::new();
        for (c, f) in formatters.iter().enumerate() {
            let column = batch.column(c);
            let value = if column.is_null(r) {
                Value::Null
            } else {
                let text = f.value(r).to_string();
                match column.data_type() {
                    dt if dt.is_integer() => text
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    dt if dt.is_floating() => text
                        .parse::<f64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(text)),
                    arrow_schema::DataType::Boolean => Value::Bool(text == "true"),
                    _ => Value::String(text),
                }
            };
            fields.insert(schema.field(c).name().clone(), value);
        }
        rows.push(fields);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        records: Vec<(u64, String)>,
        unreadable: Vec<(u64, String)>,
    }

    impl RecordSink for Collect {
        fn record(&mut self, record: Record) -> Result<()> {
            self.records.push((record.line, record.raw));
            Ok(())
        }
        fn batch(&mut self, _batch: RecordBatch, _first: u64) -> Result<()> {
            Ok(())
        }
        fn unreadable(&mut self, bad: Unreadable) {
            self.unreadable.push((bad.line, bad.reason));
        }
    }

    fn source(format: Format) -> SourceConfig {
        SourceConfig {
            path: String::new(),
            format,
            delimiter: ',',
            quote: '"',
            records: None,
        }
    }

    #[test]
    fn a_line_of_bad_utf8_is_one_reject_and_the_others_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.ndjson");
        let mut bytes = b"{\"a\":1}\r\n".to_vec();
        bytes.extend_from_slice(b"{\"a\":\"\xff\"}\n\n{\"a\":3}");
        std::fs::write(&path, bytes).expect("write");
        let mut sink = Collect::default();
        read_file(&path, &source(Format::Ndjson), &mut sink).expect("read");
        assert_eq!(sink.records.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 4]);
        assert_eq!(sink.records[0].1, "{\"a\":1}");
        assert_eq!(sink.unreadable.len(), 1);
        assert_eq!(sink.unreadable[0].0, 2);
        assert!(
            sink.unreadable[0].1.contains("UTF-8"),
            "{:?}",
            sink.unreadable
        );
    }

    #[test]
    fn csv_line_numbers_are_the_file_s() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.csv");
        std::fs::write(&path, "a,b\n1,x\n2\n\"3\nstill 3\",y\n4,z\n").expect("write");
        let mut sink = Collect::default();
        read_file(&path, &source(Format::Csv), &mut sink).expect("read");
        assert_eq!(
            sink.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [2, 4, 6]
        );
        assert_eq!(sink.unreadable.iter().map(|r| r.0).collect::<Vec<_>>(), [3]);
        // After `\r\n` line ends and blank lines too (the reader's own
        // positions are where the previous record ended: before a `\r\n`'s
        // `\n` and before the blank lines, one line or more too early).
        std::fs::write(
            &path,
            "a,b\r\n1,x\r\n2\r\n\r\n\n3,y\n\n\n\"4\n\",z\r\n5\r\n",
        )
        .expect("write");
        let mut sink = Collect::default();
        read_file(&path, &source(Format::Csv), &mut sink).expect("read");
        assert_eq!(
            sink.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [2, 6, 9]
        );
        assert_eq!(
            sink.unreadable.iter().map(|r| r.0).collect::<Vec<_>>(),
            [3, 11]
        );
    }
}
