//! A CSV file as blocks of whole records, so that one big file is decoded
//! on every core (as NDJSON is, [`super::records::LineBlocks`]).
//!
//! A line end is a record's end only outside a quoted field, and a quote
//! opens a field only at the field's start (elsewhere it is text), so the
//! cuts come from the same state machine the CSV parser runs, reduced to
//! the four states that decide it ([`Boundaries`]). A block of UTF-8 is
//! then read by [`Records`], which follows the CSV parser's rules a search
//! at a time (for the next quote, delimiter or line end) instead of a byte
//! at a time; any other block by the CSV parser itself. Either way every
//! line number and byte offset is the file's own: rows, rejects and errors
//! are those of reading the file in one piece with the parser (the
//! property test `decode_paths` checks it).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::convert::Record;
use super::flat::FlatRow;
use super::records::{BOM, RecordSink, Unreadable, bytes_at, io_error};
use crate::error::{Error, Result};
use crate::pipeline::SourceConfig;

/// Bytes of a file read per block (more when one record is longer).
const BLOCK_BYTES: usize = 4 << 20;

/// A block of a CSV file: whole records.
#[derive(Debug)]
pub struct CsvBlock {
    pub bytes: Vec<u8>,
    /// The file's line (1-based, counting every line end) and byte the
    /// block starts at; the first block starts the file, with its header.
    pub first_line: u64,
    pub offset: u64,
    /// The file's header row, trimmed.
    pub headers: Arc<Vec<String>>,
    /// The file's delimiter and quote.
    pub source: Arc<SourceConfig>,
}

/// Where the parser is, as far as record ends go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// At a field's (or a record's) start: a quote here opens a quoted field.
    FieldStart,
    /// In an unquoted field: a quote is text.
    Unquoted,
    /// In a quoted field: line ends are text.
    Quoted,
    /// Just after a quote in a quoted field: another quote is an escaped
    /// quote, anything else closes the field.
    AfterQuote,
}

/// Finds record ends: line ends outside quoted fields, following the CSV
/// parser's rules (`csv_core`: the quote is checked before the delimiter,
/// the delimiter before a line end, `\r` and `\n` both end a record).
#[derive(Debug)]
struct Boundaries {
    quote: u8,
    delimiter: u8,
    state: State,
}

impl Boundaries {
    fn new(source: &SourceConfig) -> Self {
        Self {
            quote: source.quote as u8,
            delimiter: source.delimiter as u8,
            state: State::FieldStart,
        }
    }

    /// Reads on through `bytes` (which follow the bytes read before) and
    /// returns just past the last `\n` that ends a record in them.
    fn last_end(&mut self, bytes: &[u8]) -> Option<usize> {
        let (quote, delimiter) = (self.quote, self.delimiter);
        let mut last = None;
        let mut i = 0;
        while i < bytes.len() {
            if self.state == State::Quoted {
                // Everything up to the next quote is the field's text.
                match memchr::memchr(quote, &bytes[i..]) {
                    Some(at) => {
                        i += at + 1;
                        self.state = State::AfterQuote;
                        continue;
                    }
                    None => break,
                }
            }
            if self.state == State::Unquoted {
                // A quote is text here: only a delimiter or a line end counts.
                match memchr::memchr3(delimiter, b'\n', b'\r', &bytes[i..]) {
                    Some(at) => i += at,
                    None => break,
                }
            }
            let c = bytes[i];
            self.state = match self.state {
                State::FieldStart | State::AfterQuote if c == quote => State::Quoted,
                _ if c == delimiter => State::FieldStart,
                _ if c == b'\n' || c == b'\r' => {
                    if c == b'\n' {
                        last = Some(i + 1);
                    }
                    State::FieldStart
                }
                _ => State::Unquoted,
            };
            i += 1;
        }
        last
    }
}

/// A CSV file as blocks of whole records, each numbered: what one thread
/// reads while others decode.
#[derive(Debug)]
pub struct CsvBlocks {
    path: PathBuf,
    file: File,
    source: Arc<SourceConfig>,
    ends: Boundaries,
    /// The start of a record the last block did not end.
    carry: Vec<u8>,
    next_line: u64,
    offset: u64,
    headers: Option<Arc<Vec<String>>>,
    done: bool,
    /// Bytes read per block.
    block: usize,
}

impl CsvBlocks {
    /// The blocks of `path`, cut about every `block` bytes (by default
    /// [`BLOCK_BYTES`]).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(path: &Path, source: &SourceConfig, block: Option<usize>) -> Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            file: File::open(path).map_err(io_error(path))?,
            source: Arc::new(source.clone()),
            ends: Boundaries::new(source),
            carry: Vec::new(),
            next_line: 1,
            offset: 0,
            headers: None,
            done: false,
            block: block.unwrap_or(BLOCK_BYTES).max(1),
        })
    }

    fn read_block(&mut self) -> Result<Option<CsvBlock>> {
        let mut bytes = std::mem::take(&mut self.carry);
        let first = self.headers.is_none();
        // The bytes the cutter has read (the carry it read with the last
        // block).
        let mut fed = bytes.len();
        let end = loop {
            let n = (&mut self.file)
                .take(self.block.max(bytes.len() / 2) as u64)
                .read_to_end(&mut bytes)
                .map_err(io_error(&self.path))?;
            if n == 0 {
                break None;
            }
            if self.offset == 0 && fed == 0 {
                // The parser skips a byte order mark before the first
                // cell, so the cutter does too (for it, the mark would be
                // the cell's text, and a quote after it text as well).
                if bytes.len() < BOM.len() && BOM.starts_with(&bytes) {
                    continue;
                }
                if bytes.starts_with(BOM) {
                    fed = BOM.len();
                }
            }
            let end = self.ends.last_end(&bytes[fed..]).map(|e| fed + e);
            fed = bytes.len();
            // The first block holds the header: a record with something in
            // it, not only the blank lines the parser skips before it.
            if let Some(end) = end
                && (!first || has_text(&bytes[..end]))
            {
                break Some(end);
            }
        };
        match end {
            Some(end) => self.carry = bytes.split_off(end),
            None if bytes.is_empty() && !first => {
                self.done = true;
                return Ok(None);
            }
            None => self.done = true,
        }
        self.emit(bytes).map(Some)
    }

    /// `bytes` as the next block.
    fn emit(&mut self, bytes: Vec<u8>) -> Result<CsvBlock> {
        let headers = match &self.headers {
            Some(h) => Arc::clone(h),
            None => {
                let h = Arc::new(headers(&bytes, &self.source, &self.path)?);
                self.headers = Some(Arc::clone(&h));
                h
            }
        };
        let block = CsvBlock {
            first_line: self.next_line,
            offset: self.offset,
            headers,
            source: Arc::clone(&self.source),
            bytes,
        };
        self.next_line += memchr::memchr_iter(b'\n', &block.bytes).count() as u64;
        self.offset += block.bytes.len() as u64;
        Ok(block)
    }
}

impl Iterator for CsvBlocks {
    type Item = Result<CsvBlock>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.read_block().transpose()
    }
}

/// Whether `bytes` hold more than line ends (and a byte order mark).
fn has_text(bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    bytes.iter().any(|b| *b != b'\n' && *b != b'\r')
}

fn reader_for(source: &SourceConfig, header: bool) -> csv::ReaderBuilder {
    let mut builder = csv::ReaderBuilder::new();
    builder
        .delimiter(source.delimiter as u8)
        .quote(source.quote as u8)
        .has_headers(header)
        .flexible(true);
    builder
}

/// The header row of a file whose first bytes are `bytes`, each name
/// trimmed.
fn headers(bytes: &[u8], source: &SourceConfig, path: &Path) -> Result<Vec<String>> {
    let mut reader = reader_for(source, true).from_reader(bytes);
    let headers = reader.headers().map_err(|e| {
        Error::Source(format!(
            "{}: cannot read the header row: {e}",
            path.display()
        ))
        .caused_by(e)
    })?;
    Ok(headers.iter().map(|h| h.trim().to_string()).collect())
}

/// The records of `block` of the CSV file `path` to `sink`.
pub fn read_csv_block(path: &Path, block: &CsvBlock, sink: &mut dyn RecordSink) -> Result<()> {
    let source = &*block.source;
    // A later block is read after a line end of its own, which the parser
    // skips as a blank line: so it never takes the block's first bytes for
    // a byte order mark. The reader's positions count from that lead.
    let first = block.offset == 0;
    let lead: &[u8] = if first { b"" } else { b"\n" };
    let mut reader = reader_for(source, first).from_reader(lead.chain(&block.bytes[..]));
    let at = Starts {
        lead: lead.len() as u64,
        bytes: &block.bytes,
        first_line: block.first_line,
        offset: block.offset,
    };
    let headers = &block.headers;
    // Rows decoded straight into the sink's fields: each header's slot.
    let mut flat = sink.shape().map(|shape| {
        let slots: Vec<(String, Option<usize>)> =
            headers.iter().map(|h| (h.clone(), shape.slot(h))).collect();
        (FlatRow::new(shape), slots)
    });
    if let Some((flat, slots)) = &mut flat
        && let Some(text) = utf8_text(block)
    {
        return read_utf8(block, text, sink, flat, slots);
    }
    // Rows are read as bytes: a row that is not UTF-8 is a reject of its
    // own with its exact bytes, read again from the file (rare, so a second
    // handle opened on the first one).
    let mut bytes_row = csv::ByteRecord::new();
    let mut again: Option<File> = None;
    loop {
        // Where the next record starts (the reader is past the header, or
        // past the previous record).
        let next = reader.position().clone();
        match reader.read_byte_record(&mut bytes_row) {
            Ok(false) => break,
            Ok(true) => {
                let (line, start) = at.record(bytes_row.position().unwrap_or(&next));
                let row = match csv::StringRecord::from_byte_record(std::mem::take(&mut bytes_row))
                {
                    Ok(row) => row,
                    Err(e) => {
                        let (field, bad) = (e.utf8_error().field(), e.utf8_error().valid_up_to());
                        bytes_row = e.into_byte_record();
                        let end = at.byte(reader.position().byte());
                        let exact = bytes_at(path, &mut again, start, end)?;
                        let name = headers
                            .get(field)
                            .map_or(String::new(), |h| format!(" ({h})"));
                        sink.unreadable(Unreadable::bytes(
                            exact,
                            format!("invalid UTF-8 in field {}{name} at byte {bad}", field + 1),
                            line,
                        ));
                        continue;
                    }
                };
                let raw = || {
                    row.iter()
                        .collect::<Vec<_>>()
                        .join(&source.delimiter.to_string())
                };
                if row.len() != headers.len() {
                    sink.unreadable(Unreadable::text(
                        raw(),
                        width_reason(row.len(), headers.len()),
                        line,
                    ));
                } else if let Some((flat, slots)) = &mut flat {
                    flat.fill_csv(row.iter(), slots, source.delimiter, line);
                    sink.row(flat)?;
                } else {
                    let fields: Map<String, Value> = headers
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.clone(), Value::String(v.to_string())))
                        .collect();
                    sink.record(Record {
                        fields,
                        raw: raw(),
                        line,
                    })?;
                }
                bytes_row = row.into_byte_record();
            }
            Err(e) => sink.unreadable(Unreadable::text(
                String::new(),
                format!("malformed CSV: {e}"),
                at.record(e.position().unwrap_or(&next)).0,
            )),
        }
    }
    Ok(())
}

/// Why a row of `fields` fields is not read under `headers` headers.
fn width_reason(fields: usize, headers: usize) -> String {
    format!("row has {fields} fields, the header has {headers}")
}

/// The text of `block` when it can be read without the CSV parser: all
/// of it UTF-8, with an ASCII delimiter and quote that are not line ends.
/// Any other block is the parser's (None).
fn utf8_text(block: &CsvBlock) -> Option<&str> {
    let (quote, delimiter) = (block.source.quote, block.source.delimiter);
    if !quote.is_ascii()
        || !delimiter.is_ascii()
        || quote == delimiter
        || [quote, delimiter].iter().any(|c| matches!(c, '\r' | '\n'))
    {
        return None;
    }
    simdutf8::basic::from_utf8(&block.bytes).ok()
}

/// The records of `block`, whose [`utf8_text`] is `text`, to `sink`: what
/// the parser reads from it, with the file's line numbers. The first
/// block's first record is the header, after a byte order mark.
fn read_utf8(
    block: &CsvBlock,
    text: &str,
    sink: &mut dyn RecordSink,
    flat: &mut FlatRow,
    slots: &[(String, Option<usize>)],
) -> Result<()> {
    let first = block.offset == 0;
    let text = if first {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    let mut records = Records {
        text,
        at: 0,
        line: block.first_line,
        quote: block.source.quote as u8,
        delimiter: block.source.delimiter as u8,
    };
    let mut cells = Cells::default();
    if first {
        records.next(&mut cells);
    }
    while let Some(number) = records.next(&mut cells) {
        if cells.ends.len() == slots.len() {
            flat.fill_csv_cells(&cells.text, &cells.ends, slots, number);
            sink.row(flat)?;
        } else {
            sink.unreadable(Unreadable::text(
                cells.text.clone(),
                width_reason(cells.ends.len(), slots.len()),
                number,
            ));
        }
    }
    Ok(())
}

/// A record's cells: their text joined by the delimiter, and where each
/// cell ends in it.
#[derive(Debug, Default)]
struct Cells {
    text: String,
    ends: Vec<usize>,
}

/// The records of UTF-8 text, read by the CSV parser's rules (`csv_core`
/// with quoting, doubled quotes and any of `\r`, `\n`, `\r\n` ending a
/// record), a search for the next quote, delimiter or line end at a time
/// instead of its byte-by-byte state machine:
/// - line ends before a record are skipped (blank lines);
/// - a quote opens a quoted field only at a field's start; in it, two
///   quotes are one and line ends and delimiters are text; text after
///   its closing quote is the field's too, up to a delimiter or line end;
/// - elsewhere a quote is text;
/// - a delimiter is always followed by one more field, so `a,` is two.
#[derive(Debug)]
struct Records<'t> {
    text: &'t str,
    at: usize,
    /// The file's line of `at` (every `\n` counts, quoted ones too).
    line: u64,
    quote: u8,
    delimiter: u8,
}

impl Records<'_> {
    /// The next record's cells into `cells`, with the line it starts on;
    /// None past the last.
    fn next(&mut self, cells: &mut Cells) -> Option<u64> {
        let b = self.text.as_bytes();
        while let Some(&c @ (b'\r' | b'\n')) = b.get(self.at) {
            self.line += u64::from(c == b'\n');
            self.at += 1;
        }
        if self.at == b.len() {
            return None;
        }
        let line = self.line;
        cells.text.clear();
        cells.ends.clear();
        loop {
            let end = self.field(cells);
            cells.ends.push(cells.text.len());
            self.at = end + 1;
            match b.get(end) {
                Some(&c) if c == self.delimiter => cells.text.push(char::from(c)),
                Some(b'\n') => {
                    self.line += 1;
                    return Some(line);
                }
                // `\r`: a `\n` after it is skipped with the blank lines.
                Some(_) => return Some(line),
                None => {
                    self.at = end;
                    return Some(line);
                }
            }
        }
    }

    /// Reads the field at `at` into `cells`' text: where it ends (at a
    /// delimiter, a line end or the end of the text).
    fn field(&mut self, cells: &mut Cells) -> usize {
        let (b, quote) = (self.text.as_bytes(), self.quote);
        let mut i = self.at;
        if b.get(i) == Some(&quote) {
            i += 1;
            loop {
                // Line ends in quoted text are counted on the way.
                let Some(stop) = memchr::memchr2(quote, b'\n', &b[i..]).map(|k| i + k) else {
                    // Quoted to the end of the text: the field ends there.
                    cells.text.push_str(&self.text[i..]);
                    return b.len();
                };
                cells.text.push_str(&self.text[i..=stop]);
                i = stop + 1;
                if b[stop] == b'\n' {
                    self.line += 1;
                    continue;
                }
                // The quote closes the field, unless another follows it.
                cells.text.pop();
                if b.get(i) != Some(&quote) {
                    break;
                }
                cells.text.push(char::from(quote));
                i += 1;
            }
        }
        let end = memchr::memchr3(self.delimiter, b'\n', b'\r', &b[i..]).map_or(b.len(), |k| i + k);
        cells.text.push_str(&self.text[i..end]);
        end
    }
}

/// A block's reader positions as the file's lines and bytes.
struct Starts<'b> {
    /// Line ends read before the block (each one byte and one line).
    lead: u64,
    bytes: &'b [u8],
    first_line: u64,
    offset: u64,
}

impl Starts<'_> {
    /// The file's byte at the reader's byte `b`.
    fn byte(&self, b: u64) -> u64 {
        self.offset + b.saturating_sub(self.lead)
    }

    /// The file's line and byte where the record the reader read from
    /// `at` starts. The reader gives the position where the previous
    /// record ended, before the line ends and blank lines it skips (the
    /// `\n` of a `\r\n` among them): those are stepped over here, so the
    /// line is the one the record's first byte is on.
    fn record(&self, at: &csv::Position) -> (u64, u64) {
        let mut byte = at.byte();
        let mut line = at.line();
        loop {
            let c = match byte.checked_sub(self.lead) {
                None => Some(b'\n'),
                Some(i) => self.bytes.get(i as usize).copied(),
            };
            match c {
                Some(b'\n') => line += 1,
                Some(b'\r') => {}
                _ => break,
            }
            byte += 1;
        }
        (
            (self.first_line + line).saturating_sub(1 + self.lead),
            self.byte(byte),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Format;

    fn source() -> SourceConfig {
        SourceConfig {
            path: String::new(),
            format: Format::Csv,
            delimiter: ',',
            quote: '"',
            records: None,
        }
    }

    /// Every record end `Boundaries` finds in `text`, fed a byte at a
    /// time (the state carries from one call to the next).
    fn ends(text: &str) -> Vec<usize> {
        let mut b = Boundaries::new(&source());
        (0..text.len())
            .filter_map(|i| b.last_end(&text.as_bytes()[i..=i]).map(|e| i + e))
            .collect()
    }

    #[test]
    fn a_line_end_ends_a_record_only_outside_a_quoted_field() {
        // A quoted line end, an escaped quote, a quote inside an unquoted
        // field (text: it opens nothing), CRLF and a blank line.
        let text = "a,b\n\"x\ny\",1\n\"q\"\"\n\",2\nab\"c,3\r\n\nd\"\n";
        assert_eq!(ends(text), [4, 12, 21, 29, 30, 33]);
        // The last end of the bytes, read in one call.
        let mut b = Boundaries::new(&source());
        assert_eq!(b.last_end(text.as_bytes()), Some(33));
        // Cut anywhere, the second part goes on from the first's state.
        for cut in 0..text.len() {
            let mut b = Boundaries::new(&source());
            let head = b.last_end(&text.as_bytes()[..cut]);
            let tail = b.last_end(&text.as_bytes()[cut..]).map(|e| cut + e);
            assert_eq!(tail.or(head), Some(33), "cut at {cut}");
        }
        // An open quote at the end: no end after it.
        let mut b = Boundaries::new(&source());
        assert_eq!(b.last_end(b"a\n\"open\nstill\n"), Some(2));
    }

    /// Records, each with its line, as `Records` reads `text`.
    fn records(text: &str, delimiter: u8) -> Vec<(u64, Vec<String>)> {
        let mut records = Records {
            text,
            at: 0,
            line: 1,
            quote: b'"',
            delimiter,
        };
        let mut cells = Cells::default();
        let mut out = Vec::new();
        while let Some(line) = records.next(&mut cells) {
            let mut start = 0;
            let fields = cells.ends.iter().map(|&end| {
                let field = cells.text[start..end].to_string();
                start = end + 1;
                field
            });
            out.push((line, fields.collect()));
        }
        out
    }

    /// Records, each with its line, as the CSV parser reads `text`.
    fn parsed(text: &str, delimiter: u8) -> Vec<(u64, Vec<String>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(text.as_bytes());
        let mut out = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            let next = reader.position().clone();
            if !reader.read_record(&mut record).expect("CSV") {
                return out;
            }
            let at = Starts {
                lead: 0,
                bytes: text.as_bytes(),
                first_line: 1,
                offset: 0,
            };
            let (line, _) = at.record(record.position().unwrap_or(&next));
            out.push((line, record.iter().map(str::to_string).collect()));
        }
    }

    #[test]
    fn records_are_the_parser_s() {
        for text in [
            "a,b\n\"x\ny\",1\n\"q\"\"\n\",2\nab\"c,3\r\n\nd\"\n",
            // Text after a closing quote, an empty quoted field, a doubled
            // quote at a field's end.
            "\"ab\"cd,\"\",\"e\"\"\"\n",
            // A lone `\r` ends a record; blank lines of `\r`s.
            "a,b\rc,d\r\r\n\r\ne",
            // A trailing delimiter is one more (empty) field, at the end too.
            "a,\n,\n,",
            // Quoted to the end of the text, over line ends.
            "x\n\"open\n\nstill",
            // A quote not at a field's start is text; `é` and a quoted `,`.
            " \"a\",b\"\"c,\"é,\"\n\n\n1",
            "",
            "\n\r\n",
        ] {
            assert_eq!(records(text, b','), parsed(text, b','), "{text:?}");
        }
        assert_eq!(
            records("a;b,c\n\"1;2\";3", b';'),
            parsed("a;b,c\n\"1;2\";3", b';')
        );
    }
}
