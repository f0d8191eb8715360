//! The two decoders of NDJSON and CSV files, compared on generated input:
//! rows decoded straight into the job's fields ([`super::flat`]) must give
//! exactly what JSON records give (the same batches, rejects with the same
//! text, reason and line, the same counts and the same errors), quirks
//! included: a byte order mark, CRLF, quoted fields, blank lines, numbers
//! as strings, nulls, unknown fields, keys present twice, escapes, key
//! order changing from line to line, malformed lines and bad UTF-8.

use std::fmt::Write as _;
use std::path::Path;

use arrow_array::RecordBatch;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;

use super::convert::BatchBuilder;
use super::reading::FileSink;
use super::records;
use super::{EVERY_DAY, Msg, Unit};
use crate::pipeline::{Job, Source};

/// What one read gave.
#[derive(Debug, PartialEq)]
struct Outcome {
    result: Result<(), String>,
    rows: Vec<RecordBatch>,
    /// (raw, raw_bytes, reason, line) of each reject.
    rejects: Vec<(String, Option<Vec<u8>>, String, u64)>,
    read: u64,
    outside: u64,
}

fn job(format: &str, drift: &str) -> Job {
    job_at(format, drift, "")
}

/// [`job`], its records at `records` (JSON documents).
fn job_at(format: &str, drift: &str, records: &str) -> Job {
    let records = if records.is_empty() {
        String::new()
    } else {
        format!(", records = \"{records}\"")
    };
    let text = format!(
        r#"
[catalog]
uri = "http://127.0.0.1:1"
[[job]]
name = "j"
table = "t.j"
source = {{ path = "in/*.{format}", format = "{format}"{records} }}
event_time = {{ kind = "offset", column = "ts" }}
schema_drift = "{drift}"
columns = [
  {{ name = "s", type = "string" }},
  {{ name = "i", type = "int" }},
  {{ name = "l", type = "long", required = true }},
  {{ name = "d", type = "double" }},
  {{ name = "f", type = "float" }},
  {{ name = "b", type = "boolean" }},
  {{ name = "dt", type = "date" }},
  {{ name = "at", type = "timestamptz" }},
  {{ name = "dec", type = "decimal(10, 2)" }},
  {{ name = "lat", type = "double", from = "loc.lat" }},
  {{ name = "loc", type = "struct<lat: double, name: string>" }},
  {{ name = "tags", type = "list<string>" }},
  {{ name = "renamed", type = "string", from = "orig" }},
]
"#
    );
    let pipeline = crate::pipeline::parse(&text, Path::new("/tmp/p.toml")).expect("pipeline");
    pipeline.jobs.into_iter().next().expect("one job")
}

/// How a file is read.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Rows decoded as JSON values.
    Values,
    /// Rows decoded straight into fields, the file as one block.
    Rows,
    /// Rows decoded straight into fields, in blocks of whole lines
    /// (NDJSON) or records (CSV) read this many bytes at a time.
    Blocks(usize),
    /// A JSON document parsed whole, as one value.
    WholeDocument,
}

/// Reads `path` for `job` through the real file sink.
fn read(job: &Job, path: &Path, mode: Mode) -> Outcome {
    let mut builder = BatchBuilder::for_job(job, 1_700_000_000_000_000);
    let (tx, mut rx) = mpsc::channel::<Msg>(1 << 16);
    let progress = std::sync::Mutex::new(super::progress::Progress::new("j", 1, None));
    let Source::Files(cfg) = &job.source else {
        panic!("a file job")
    };
    let unit = Unit {
        file: super::files::SourceFile::Local(path.to_path_buf()),
        keep: EVERY_DAY,
        vars: None,
        origin: None,
    };
    let mut sink = FileSink::new(job, &unit, "file:///in", "in", &mut builder, &tx, &progress);
    sink.decode_rows = !matches!(mode, Mode::Values);
    let result = match mode {
        Mode::Values | Mode::Rows => records::read_file(path, cfg, &mut sink),
        Mode::WholeDocument => std::fs::read_to_string(path)
            .map_err(records::io_error(path))
            .and_then(|text| records::read_json_whole(path, cfg, &text, &mut sink)),
        Mode::Blocks(size) if cfg.format == crate::pipeline::Format::Csv => {
            super::csv_blocks::CsvBlocks::open(path, cfg, Some(size)).and_then(|blocks| {
                for block in blocks {
                    super::csv_blocks::read_csv_block(path, &block?, &mut sink)?;
                }
                Ok(())
            })
        }
        Mode::Blocks(size) => {
            let mut row = None;
            records::LineBlocks::with_block(path, size).and_then(|blocks| {
                for block in blocks {
                    if row.is_none() {
                        row = records::RecordSink::shape(&sink).map(super::flat::FlatRow::new);
                    }
                    records::read_ndjson_block(&block?, &mut sink, &mut row)?;
                }
                Ok(())
            })
        }
    }
    .map_err(|e| e.to_string());
    let mut rejects: Vec<_> = sink
        .take_rejects()
        .into_iter()
        .map(|r| (r.raw, r.raw_bytes, r.reason, r.line))
        .collect();
    let (read, outside) = (sink.read, sink.outside);
    drop(tx);
    let mut rows = Vec::new();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Batch(b) => rows.push(b),
            Msg::Rejects(r) => {
                rejects.splice(
                    0..0,
                    r.into_iter()
                        .map(|r| (r.raw, r.raw_bytes, r.reason, r.line)),
                );
            }
            Msg::Counts { .. } => {}
        }
    }
    if !builder.is_empty() {
        rows.push(builder.finish().expect("batch"));
    }
    Outcome {
        result,
        rows,
        rejects,
        read,
        outside,
    }
}

fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A JSON value for field `key` (or any other), often valid, often not.
fn json_value(rng: &mut StdRng, key: &str) -> String {
    let common = [
        "null",
        "\"\"",
        "\"  \"",
        "true",
        "false",
        "0",
        "-0",
        "5.0",
        "1e3",
        "1.5e-7",
        "12345678901234567890",
        "-9223372036854775809",
        "\"x\\\"y\\u00e9\\n\"",
        "\"caf\u{e9}\"",
        "[1, \"a\"]",
        "{\"k\": 1}",
    ];
    if rng.random_bool(0.02) {
        return pick(rng, &common).to_string();
    }
    // Mostly values that convert (some of them only after coercion), then
    // values that do not.
    let good = rng.random_bool(0.97);
    let (valid, invalid): (&[&str], &[&str]) = match key {
        "ts" | "at" => (
            &[
                "\"2024-03-01T10:00:00Z\"",
                "\"2024-03-02T23:30:00-05:00\"",
                "\" 2024-03-01T10:00:00+01:00 \"",
                "\"2024-03-01 10:00:00Z\"",
            ],
            &["\"2024-03-01\"", "\"yesterday\"", "1709287200"],
        ),
        "i" | "l" => (
            &["42", "-7", "\"12\"", "\" 12 \"", "\"+5\"", "0"],
            &["2147483648", "\"abc\"", "3.0", "1e3"],
        ),
        "d" | "f" | "lat" | "loc.lat" => (
            &[
                "1.25",
                "-0.1",
                "\"2.5\"",
                "3",
                "0.30000000000000004",
                "1e-7",
                "-0",
            ],
            &["\"NaN\"", "\"inf\"", "1e39", "\"1,5\""],
        ),
        "b" => (
            &["true", "false", "\"yes\"", "\"NO\"", "1"],
            &["\"2\"", "\"t\""],
        ),
        "dt" => (
            &["\"2024-03-01\"", "\"2024-03-01T10:00:00Z\""],
            &["\"2024-02-30\"", "\"01/03/2024\""],
        ),
        "dec" => (
            &["12.34", "\"-0.5\"", "1e2", "7"],
            &["19.999", "\"12345678901\""],
        ),
        "loc" => (
            &[
                "{\"lat\": 51.5, \"name\": \"x\"}",
                "{\"lat\": \"51.5\"}",
                "\"{\\\"lat\\\": 3.5}\"",
            ],
            &[
                "{\"lat\": 1, \"lat\": 2}",
                "{\"lat\": 1, \"extra\": true}",
                "[1]",
            ],
        ),
        "tags" => (
            &["[\"a\", \"b\"]", "[]", "[1, null]", "\"[\\\"x\\\"]\""],
            &["{\"a\": 1}"],
        ),
        _ => return format!("\"v{}\"", rng.random_range(0..1000)),
    };
    pick(rng, if good { valid } else { invalid }).to_string()
}

/// A key as written: usually plain, sometimes with an escape that reads as
/// the same name.
fn json_key(rng: &mut StdRng, key: &str) -> String {
    if rng.random_bool(0.05) && !key.is_empty() {
        let mut chars = key.chars();
        let first = chars.next().unwrap_or('x');
        format!("\"\\u{:04x}{}\"", first as u32, chars.as_str())
    } else {
        format!("\"{key}\"")
    }
}

fn ndjson_file(rng: &mut StdRng, unknown: bool) -> Vec<u8> {
    let keys = [
        "ts", "s", "i", "l", "d", "f", "b", "dt", "at", "dec", "loc", "tags", "orig", "loc.lat",
    ];
    let mut out = Vec::new();
    if rng.random_bool(0.2) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let lines = rng.random_range(1..40);
    let mut order: Vec<&str> = keys.to_vec();
    for _ in 0..lines {
        let end: &[u8] = if rng.random_bool(0.2) { b"\r\n" } else { b"\n" };
        match rng.random_range(0..100) {
            0..=2 => out.extend_from_slice(b"   "),
            3..=4 => out.extend_from_slice(b"[1, 2]"),
            5 => out.extend_from_slice(b"\"just text\""),
            6..=7 => out.extend_from_slice(b"{\"ts\": \"2024-03-01T10:00:00Z\", \"l\": 1"),
            8 => out.extend_from_slice(b"{\"l\": 1, \"s\": \"\xFF\xFE\"}"),
            9 => out.extend_from_slice(b"{\"l\": 1} trailing"),
            _ => out.extend_from_slice(json_object(rng, &mut order, unknown).as_bytes()),
        }
        out.extend_from_slice(end);
    }
    if rng.random_bool(0.3) {
        // No line end after the last line.
        while out.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            out.pop();
        }
    }
    out
}

/// A JSON object of the job's keys (in `order`, which may change), most of
/// them present, values good and bad, now and then a key twice or an
/// unknown one.
fn json_object(rng: &mut StdRng, order: &mut [&str], unknown: bool) -> String {
    if rng.random_bool(0.1) {
        // Keys in another order from here on.
        let i = rng.random_range(0..order.len());
        let j = rng.random_range(0..order.len());
        order.swap(i, j);
    }
    let mut line = String::from("{");
    let mut first = true;
    for key in order.iter() {
        if rng.random_bool(if *key == "loc.lat" { 0.9 } else { 0.04 }) {
            continue;
        }
        if !first {
            line.push_str(if rng.random_bool(0.5) { ", " } else { "," });
        }
        first = false;
        let _ = write!(line, "{}: {}", json_key(rng, key), json_value(rng, key));
        if rng.random_bool(0.003) {
            let _ = write!(line, ", {}: {}", json_key(rng, key), json_value(rng, key));
        }
    }
    if unknown && rng.random_bool(0.3) {
        let _ = write!(
            line,
            "{}\"zz{}\": {}",
            if first { "" } else { ", " },
            rng.random_range(0..3),
            json_value(rng, "zz")
        );
    }
    line.push('}');
    line
}

/// A JSON document and the path of its records: mostly an array of the
/// job's objects, some of them not objects, with a key twice, or with what
/// only a whole parse refuses (a lone surrogate, a number out of range);
/// around it, now and then, what a path can meet (a missing key, an object,
/// a scalar, a key twice on the path or beside it) or a document cut short.
fn json_document(rng: &mut StdRng, unknown: bool) -> (Vec<u8>, &'static str) {
    let keys = [
        "ts", "s", "i", "l", "d", "f", "b", "dt", "at", "dec", "loc", "tags", "orig", "loc.lat",
    ];
    let mut order: Vec<&str> = keys.to_vec();
    let items: Vec<String> = (0..rng.random_range(0..30))
        .map(|_| match rng.random_range(0..100) {
            0 => "1".into(),
            1 => "\"x\"".into(),
            2 => "null".into(),
            3 => "[{\"l\": 1}]".into(),
            4 => r#"{"l": 1, "s": "\ud800"}"#.into(),
            5 => r#"{"l": 1, "d": 1e400}"#.into(),
            6..=7 => r#"{"l": 1, "l": 2}"#.into(),
            _ => json_object(rng, &mut order, unknown),
        })
        .collect();
    let sep = if rng.random_bool(0.5) { ",\n  " } else { "," };
    let array = format!("[{}]", items.join(sep));
    let meta = pick(
        rng,
        &[
            r#"{"n": 1}"#,
            r#"{"n": 1, "n": 2}"#,
            r#""\udc00""#,
            r#"1e999"#,
            r#"[1, {"a": [2]}]"#,
        ],
    );
    let (text, path) = match rng.random_range(0..100) {
        0..=29 => (array, ""),
        30..=69 => (format!(r#"{{"meta": {meta}, "data": {array}}}"#), "data"),
        70..=79 => (format!(r#"{{"data": {array}, "meta": {meta}}}"#), "data"),
        80..=84 => (
            format!(r#"{{"a": {{"data": {array}}}, "meta": {meta}}}"#),
            "a.data",
        ),
        85..=86 => (
            format!(
                r#"{{"data": {}}}"#,
                items.first().map_or("{}", String::as_str)
            ),
            "data",
        ),
        87 => (format!(r#"{{"data": 3, "meta": {array}}}"#), "data"),
        88 => (format!(r#"{{"meta": {array}}}"#), "data"),
        89 => (format!(r#"{{"data": [], "data": {array}}}"#), "data"),
        90 => (format!(r#"[{array}]"#), "0"),
        91..=93 => {
            let cut = rng.random_range(0..=array.len());
            let cut = (0..=cut)
                .rev()
                .find(|c| array.is_char_boundary(*c))
                .unwrap_or(0);
            (array[..cut].to_string(), "")
        }
        _ => (format!("  {array}\n"), ""),
    };
    (text.into_bytes(), path)
}

/// A JSON document read record by record gives what parsing it whole
/// gives: the same rows, rejects (text, reason, number), counts and
/// errors, whatever the document holds or lacks.
#[test]
fn json_documents_read_by_record_as_read_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = StdRng::seed_from_u64(20_261_204);
    let (mut rows, mut rejects, mut failed) = (0, 0, 0);
    for case in 0..600 {
        let unknown = case % 4 == 0;
        let (text, records) = json_document(&mut rng, unknown);
        let job = job_at("json", "ignore", records);
        let path = dir.path().join(format!("{case}.json"));
        std::fs::write(&path, &text).expect("write");
        let by_record = read(&job, &path, Mode::Rows);
        let whole = read(&job, &path, Mode::WholeDocument);
        assert_eq!(
            by_record,
            whole,
            "case {case} (records at {records:?}):\n{}",
            String::from_utf8_lossy(&text)
        );
        rows += whole.rows.iter().map(RecordBatch::num_rows).sum::<usize>();
        rejects += whole.rejects.len();
        failed += usize::from(whole.result.is_err());
    }
    // The documents reach every outcome: rows, rejects and failed reads.
    assert!(
        rows > 2_000 && rejects > 200 && failed > 50,
        "{rows} rows, {rejects} rejects, {failed} failures"
    );
}

/// A cell of a file with quotes (or, when `plain`, of a file without any,
/// which is read without the CSV parser).
fn csv_cell(rng: &mut StdRng, key: &str, plain: bool) -> String {
    let v = json_value(rng, key);
    // CSV cells are text: a JSON string's content, or the literal.
    let text = match serde_json::from_str::<serde_json::Value>(&v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => v,
    };
    let text = if rng.random_bool(0.1) {
        String::new()
    } else {
        text
    };
    if plain {
        text.replace([',', '"', '\n', '\r'], "")
    } else if text.contains([',', '"', '\n', '\r']) || rng.random_bool(0.1) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else if rng.random_bool(0.03) {
        // A quote inside an unquoted cell is text, and opens nothing.
        format!("{text}\"x")
    } else {
        text
    }
}

fn csv_file(rng: &mut StdRng, unknown: bool) -> Vec<u8> {
    let mut headers: Vec<&str> = vec![
        "ts", "s", "i", "l", "d", "f", "b", "dt", "at", "dec", "orig",
    ];
    if unknown {
        headers.push("zz");
    }
    if rng.random_bool(0.1) {
        headers.push("s");
    }
    for i in (1..headers.len()).rev() {
        headers.swap(i, rng.random_range(0..=i));
    }
    headers.retain(|_| rng.random_bool(0.9));
    if unknown && rng.random_bool(0.3) {
        // An unknown first header cell that ends with the delimiter (so
        // it is quoted): after a byte order mark, its quote still opens it.
        headers.insert(0, "zz,");
    }
    let mut out = Vec::new();
    if rng.random_bool(0.2) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    let end: &[u8] = if rng.random_bool(0.3) { b"\r\n" } else { b"\n" };
    let plain = rng.random_bool(0.4);
    if rng.random_bool(0.1) {
        // Blank lines before the header.
        out.extend_from_slice(end);
        out.extend_from_slice(b"\n");
    }
    let names: Vec<String> = headers
        .iter()
        .map(|h| {
            if h.contains(',') || rng.random_bool(0.1) {
                format!("\"{h}\"")
            } else {
                (*h).to_string()
            }
        })
        .collect();
    out.extend_from_slice(names.join(",").as_bytes());
    out.extend_from_slice(end);
    for _ in 0..rng.random_range(0..40) {
        match rng.random_range(0..100) {
            0..=2 => {}
            3..=4 => out.extend_from_slice(b"only,two"),
            5 if !plain || rng.random_bool(0.2) => out.extend_from_slice(b"\xFF,\xFE"),
            // A lone `\r` ends a record too.
            6 if plain => out.extend_from_slice(b"a\rb"),
            _ => {
                let cells: Vec<String> = headers.iter().map(|h| csv_cell(rng, h, plain)).collect();
                out.extend_from_slice(cells.join(",").as_bytes());
            }
        }
        out.extend_from_slice(end);
    }
    out
}

fn compare(format: &str, file: impl Fn(&mut StdRng, bool) -> Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = StdRng::seed_from_u64(20_261_203);
    let mut rows = 0;
    let mut rejects = 0;
    let mut failed = 0;
    for case in 0..400 {
        let unknown = case % 4 == 0;
        let drift = if unknown && case % 8 == 0 {
            "error"
        } else {
            "ignore"
        };
        let job = job(format, drift);
        let path = dir.path().join(format!("{case}.{format}"));
        std::fs::write(&path, file(&mut rng, unknown)).expect("write");
        let rows_path = read(&job, &path, Mode::Rows);
        let values_path = read(&job, &path, Mode::Values);
        let shown = || String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
        assert_eq!(
            rows_path,
            values_path,
            "{format} case {case} decodes differently:\n{}",
            shown()
        );
        // Split into blocks of whole lines or records (as the decoding
        // threads read big files), the rows and line numbers stay the
        // same.
        let size = rng.random_range(1..300);
        let blocks = read(&job, &path, Mode::Blocks(size));
        assert_eq!(
            blocks,
            rows_path,
            "case {case} in blocks of {size} bytes:\n{}",
            shown()
        );
        rows += rows_path
            .rows
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>();
        rejects += rows_path.rejects.len();

        failed += usize::from(rows_path.result.is_err());
    }
    // The inputs reach every outcome: rows, rejects and failed runs.
    assert!(
        rows > 500 && rejects > 500 && failed > 5,
        "{rows} rows, {rejects} rejects, {failed} failures"
    );
}

#[test]
fn ndjson_rows_decode_as_json_records_do() {
    compare("ndjson", ndjson_file);
}

#[test]
fn csv_rows_decode_as_json_records_do() {
    compare("csv", csv_file);
}

/// A double written in full (Python's `repr`, a database's JSON, 17
/// significant digits) is read as the double it names, in every path and
/// format: 1 in 11 such numbers came out one unit in the last place off
/// with serde_json's default (not correctly rounded) float parsing.
#[test]
fn doubles_are_read_exactly_in_every_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = StdRng::seed_from_u64(7);
    let texts: Vec<String> = (0..2_000)
        .map(|i| {
            let x: f64 = rng.random_range(-1e3..1e3);
            if i % 2 == 0 {
                format!("{x}")
            } else {
                format!("{x:.16e}")
            }
        })
        .collect();
    let mut ndjson = String::new();
    let mut csv = String::from("ts,l,d\n");
    for (i, t) in texts.iter().enumerate() {
        let _ = writeln!(ndjson, r#"{{"ts":"2024-05-01T00:00:00Z","l":{i},"d":{t}}}"#);
        let _ = writeln!(csv, "2024-05-01T00:00:00Z,{i},{t}");
    }
    for (format, text) in [("ndjson", ndjson), ("csv", csv)] {
        let path = dir.path().join(format!("doubles.{format}"));
        std::fs::write(&path, text).expect("write");
        let job = job(format, "ignore");
        let modes: &[Mode] = if format == "ndjson" {
            &[Mode::Values, Mode::Rows, Mode::Blocks(4096)]
        } else {
            &[Mode::Values, Mode::Rows]
        };
        for &mode in modes {
            let out = read(&job, &path, mode);
            assert_eq!(out.result, Ok(()), "{format} {mode:?}");
            let mut got = Vec::new();
            for batch in &out.rows {
                let d = batch
                    .column_by_name("d")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::Float64Array>())
                    .expect("a double column d");
                got.extend(d.values().iter().copied());
            }
            assert_eq!(got.len(), texts.len(), "{format} {mode:?}");
            let wrong: Vec<_> = texts
                .iter()
                .zip(&got)
                .filter(|(t, g)| t.parse::<f64>().map(f64::to_bits) != Ok(g.to_bits()))
                .collect();
            assert!(
                wrong.is_empty(),
                "{format} {mode:?}: {} of {} doubles changed, e.g. {:?}",
                wrong.len(),
                texts.len(),
                wrong.first()
            );
        }
    }
}

/// A byte order mark before a quoted first header cell that ends with the
/// delimiter: the parser skips the mark, so the quote opens the cell. A
/// cutter that took the mark for the cell's text saw the quote as text,
/// the delimiter as the cell's end and the closing quote as an opening
/// one, and cut a later quoted line end as a record's end. Every block
/// size gives the rows of one whole read.
#[test]
fn a_byte_order_mark_does_not_move_the_cuts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bom.csv");
    let text = "\u{feff}\"s,\",l,ts\nq,1,2024-01-01T00:00:00Z\n\"x\ny\",2,2024-01-01T00:00:00Z\n\
                z,3,2024-01-01T00:00:00Z\n";
    std::fs::write(&path, text).expect("write");
    let job = job("csv", "ignore");
    let whole = read(&job, &path, Mode::Rows);
    assert_eq!(whole.result, Ok(()));
    assert!(whole.rejects.is_empty(), "{:?}", whole.rejects);
    assert_eq!(
        whole.rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
        3
    );
    for size in 1..=text.len() {
        assert_eq!(
            read(&job, &path, Mode::Blocks(size)),
            whole,
            "blocks of {size} bytes"
        );
    }
}

/// A value nested as deep as serde_json allows (128 levels, the line's own
/// object one of them) decodes the same in both paths: the quick reader
/// hands a nested value to a parser of its own, which must not allow it the
/// level the line's object takes.
#[test]
fn values_nested_to_the_parser_s_limit_decode_the_same() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("deep.ndjson");
    let deep = |n: usize, inner: &str| format!("{}{inner}{}", "[".repeat(n), "]".repeat(n));
    let mut text = String::new();
    for n in 124..=129 {
        let _ = writeln!(
            text,
            r#"{{"ts":"2024-03-01T10:00:00Z","l":{n},"zz":{}}}"#,
            deep(n, "1")
        );
        let _ = writeln!(
            text,
            r#"{{"ts":"2024-03-01T10:00:00Z","l":{n},"tags":{}}}"#,
            deep(n, "\"x\"")
        );
    }
    std::fs::write(&path, text).expect("write");
    let job = job("ndjson", "ignore");
    let values = read(&job, &path, Mode::Values);
    // The parser's own limit: the lines nested 127 deep or more are rejects.
    let rejected: Vec<u64> = values.rejects.iter().map(|r| r.3).collect();
    assert_eq!(rejected, [7, 8, 9, 10, 11, 12], "{:?}", values.rejects);
    assert_eq!(read(&job, &path, Mode::Rows), values);
    assert_eq!(read(&job, &path, Mode::Blocks(100)), values);
}

/// A line is blank only when it holds JSON's own white space (space, tab,
/// carriage return); any other text, Unicode white space included, is a
/// line that is not JSON: a reject, never a line skipped unseen.
#[test]
fn a_line_of_other_white_space_is_a_reject() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spaces.ndjson");
    let row = r#"{"ts":"2024-03-01T10:00:00Z","l":1}"#;
    let text = format!("{row}\n \t \r\n\u{a0}\n\u{c}\n\u{2028}\n\u{85}\n{row}\n");
    std::fs::write(&path, text).expect("write");
    let job = job("ndjson", "ignore");
    let values = read(&job, &path, Mode::Values);
    let rejected: Vec<u64> = values.rejects.iter().map(|r| r.3).collect();
    assert_eq!(rejected, [3, 4, 5, 6], "{:?}", values.rejects);
    assert_eq!(
        values.rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
        2
    );
    assert_eq!(read(&job, &path, Mode::Rows), values);
}
