//! PostgreSQL rows read with `COPY (SELECT ...) TO STDOUT` (text format) and
//! written as the JSON lines `row_to_json` would have sent, byte for byte.
//!
//! Why: `row_to_json` costs the server about three times a plain `COPY` of
//! the same rows (37 s of CPU against 10 s for 10M rows, BENCHMARKS.md),
//! and a single connection waits on it. Here the server only prints each value with its
//! type's output function, which `row_to_json` also does, and floe adds the
//! JSON around it the way PostgreSQL's `datum_to_json` does. The landed
//! lines are therefore the ones an earlier floe landed: the same `_hash`,
//! the same rejects, the same raw text.
//!
//! - **Numbers** (`int2`/`int4`/`int8`/`float4`/`float8`) are written as
//!   they are printed when that is a JSON number, else as a string (`NaN`,
//!   `Infinity`).
//! - **Booleans** `t`/`f` become `true`/`false`.
//! - **Dates and timestamps** are printed in ISO style (when the session's
//!   `DateStyle` is ISO, the default) and get the JSON form's `T` between
//!   date and time and the offset's minutes (`+00` → `+00:00`). With
//!   another `DateStyle` the server makes their JSON (`to_json`).
//! - **json and jsonb** pass as printed; so does every column of a type
//!   this module does not know (arrays, composites, ranges, domains, types
//!   with a cast to json), whose JSON the server makes with `to_json`, as
//!   `row_to_json` does for a nested value. A line break inside a `json`
//!   value (whitespace of the document: JSON strings cannot hold one)
//!   becomes a space, so one row stays one line.
//! - **Everything else** known (text, uuid, bytea, time, interval, numeric
//!   sent as text, ...) is its printed text as a JSON string, escaped as
//!   `escape_json` does.

use std::fmt;

/// How one column's printed text becomes its JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A JSON number when the text is one, else a string.
    Number,
    /// `t` / `f`.
    Bool,
    /// `YYYY-MM-DD HH:MM:SS[.f]`: the space becomes `T`.
    Timestamp,
    /// As [`Form::Timestamp`], and the offset gets its minutes.
    TimestampTz,
    /// JSON already (json, jsonb, or made by the server's `to_json`).
    Json,
    /// A JSON string of the text.
    Text,
}

impl Form {
    /// The form of a column of type `ty` (the driver's name in lower case),
    /// or `None` when the server must make the column's JSON. `iso_dates`:
    /// the session prints dates in ISO style.
    fn of(ty: &str, iso_dates: bool) -> Option<Form> {
        Some(match ty {
            "int2" | "int4" | "int8" | "float4" | "float8" => Form::Number,
            "bool" => Form::Bool,
            "json" | "jsonb" => Form::Json,
            "date" if iso_dates => Form::Text,
            "timestamp" if iso_dates => Form::Timestamp,
            "timestamptz" if iso_dates => Form::TimestampTz,
            "text" | "varchar" | "bpchar" | "char" | "name" | "uuid" | "bytea" | "time"
            | "timetz" | "interval" | "inet" | "cidr" | "macaddr" | "macaddr8" | "money"
            | "oid" | "xml" | "bit" | "varbit" => Form::Text,
            _ => return None,
        })
    }
}

/// The `COPY` statement that reads `columns` of `from` (a `FROM` clause
/// whose rows are named `s`, with its filter) and the writer of its rows.
/// `numeric` goes as text (every digit kept, as a string), as before.
pub(super) fn plan(columns: &[(String, String)], from: &str, iso_dates: bool) -> (String, Rows) {
    let mut select = Vec::with_capacity(columns.len());
    let mut forms = Vec::with_capacity(columns.len());
    let mut keys = Vec::with_capacity(columns.len());
    for (i, (name, ty)) in columns.iter().enumerate() {
        let c = format!("s.{}", super::scd2::ident(name));
        let (expr, form) = match ty.as_str() {
            "numeric" => (format!("{c}::text"), Form::Text),
            "numeric[]" => (format!("to_json({c}::text[])"), Form::Json),
            t => match Form::of(t, iso_dates) {
                Some(form) => (c, form),
                None => (format!("to_json({c})"), Form::Json),
            },
        };
        select.push(expr);
        forms.push(form);
        let mut key = Vec::with_capacity(name.len() + 4);
        if i > 0 {
            key.push(b',');
        }
        escape_json(name.as_bytes(), &mut key);
        key.push(b':');
        keys.push(key);
    }
    let sql = format!("COPY (SELECT {} FROM {from}) TO STDOUT", select.join(", "));
    (sql, Rows { forms, keys })
}

/// Turns `COPY` text rows into `row_to_json` lines.
#[derive(Debug)]
pub(super) struct Rows {
    forms: Vec<Form>,
    /// Each column's `"name":`, after a comma but for the first.
    keys: Vec<Vec<u8>>,
}

/// A `COPY` row that does not have the planned shape.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadRow(String);

impl fmt::Display for BadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Rows {
    /// Appends the JSON object of `line` (one `COPY` text row, without its
    /// line end) to `out`; `scratch` is reused between calls.
    pub(super) fn write(
        &self,
        line: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), BadRow> {
        out.push(b'{');
        if self.forms.is_empty() {
            if !line.is_empty() {
                return Err(BadRow(
                    "a row of a query without columns has a value".into(),
                ));
            }
            out.push(b'}');
            return Ok(());
        }
        let mut fields = line.split(|&b| b == b'\t');
        for (i, (form, key)) in self.forms.iter().zip(&self.keys).enumerate() {
            let Some(raw) = fields.next() else {
                return Err(BadRow(format!(
                    "a row has {i} values, not {}",
                    self.forms.len()
                )));
            };
            out.extend_from_slice(key);
            if raw == b"\\N" {
                out.extend_from_slice(b"null");
                continue;
            }
            let text = if raw.contains(&b'\\') {
                unescape(raw, scratch);
                scratch.as_slice()
            } else {
                raw
            };
            write_value(*form, text, out)?;
        }
        if fields.next().is_some() {
            return Err(BadRow(format!(
                "a row has more than {} values",
                self.forms.len()
            )));
        }
        out.push(b'}');
        Ok(())
    }
}

fn write_value(form: Form, text: &[u8], out: &mut Vec<u8>) -> Result<(), BadRow> {
    match form {
        Form::Number if is_json_number(text) => out.extend_from_slice(text),
        Form::Number | Form::Text => escape_json(text, out),
        Form::Bool => match text {
            b"t" => out.extend_from_slice(b"true"),
            b"f" => out.extend_from_slice(b"false"),
            other => {
                return Err(BadRow(format!(
                    "a boolean printed as {:?}",
                    String::from_utf8_lossy(other)
                )));
            }
        },
        Form::Json => out.extend(text.iter().map(|&b| match b {
            b'\n' | b'\r' => b' ',
            b => b,
        })),
        Form::Timestamp | Form::TimestampTz => {
            out.push(b'"');
            write_xsd(text, form == Form::TimestampTz, out);
            out.push(b'"');
        }
    }
    Ok(())
}

/// An ISO timestamp (`2024-05-01 10:00:00.5+00`, maybe ending ` BC`) in
/// the JSON form (`2024-05-01T10:00:00.5+00:00`); `infinity` as printed.
/// The text is digits, signs and separators: nothing to escape.
fn write_xsd(text: &[u8], with_offset: bool, out: &mut Vec<u8>) {
    let Some(space) = text.iter().position(|&b| b == b' ') else {
        out.extend_from_slice(text);
        return;
    };
    let (body, era) = match text.strip_suffix(b" BC") {
        Some(body) if body.len() > space => (body, &b" BC"[..]),
        _ => (text, &b""[..]),
    };
    out.extend_from_slice(&body[..space]);
    out.push(b'T');
    let time = &body[space + 1..];
    out.extend_from_slice(time);
    if with_offset
        && let Some(sign) = time.iter().rposition(|&b| b == b'+' || b == b'-')
        && time.len() - sign == 3
    {
        out.extend_from_slice(b":00");
    }
    out.extend_from_slice(era);
}

/// A `COPY` text field's escapes undone (`\\`, `\t`, `\n`, octal, hex...).
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            other => out.push(other),
        }
    }
}

/// `text` as a JSON string, escaped as PostgreSQL's `escape_json` does:
/// quote, backslash, `\b \f \n \r \t`, other control bytes as `\u00XX`
/// (lower-case hex); every other byte as is.
fn escape_json(text: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&text[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&text[start..]);
    out.push(b'"');
}

/// Whether `text` is a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn is_json_number(text: &[u8]) -> bool {
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut s = text.strip_prefix(b"-").unwrap_or(text);
    match s.first() {
        Some(b'0') => s = &s[1..],
        Some(b'1'..=b'9') => s = &s[digits(s)..],
        _ => return false,
    }
    if let Some(rest) = s.strip_prefix(b".") {
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        s = &rest[n..];
    }
    if let Some(rest) = s.strip_prefix(b"e").or_else(|| s.strip_prefix(b"E")) {
        let rest = rest
            .strip_prefix(b"+")
            .or_else(|| rest.strip_prefix(b"-"))
            .unwrap_or(rest);
        let n = digits(rest);
        if n == 0 {
            return false;
        }
        s = &rest[n..];
    }
    s.is_empty()
}

/// Cuts a stream of `COPY` chunks into whole rows: `push` a chunk, then
/// take the rows it completed with `next_row`.
#[derive(Debug, Default)]
pub(super) struct RowCutter {
    buf: Vec<u8>,
    start: usize,
}

impl RowCutter {
    pub(super) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole row (without its `\n`), if the chunks so far hold one.
    pub(super) fn next_row(&mut self) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        let end = memchr::memchr(b'\n', rest)?;
        let row = self.start..self.start + end;
        self.start += end + 1;
        Some(&self.buf[row])
    }

    /// Bytes after the last whole row (none when the stream ended cleanly).
    pub(super) fn leftover(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(columns: &[(&str, &str)], iso: bool) -> (String, Rows) {
        let columns: Vec<(String, String)> = columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        plan(&columns, "t AS s", iso)
    }

    fn line(r: &Rows, copy: &str) -> Result<String, BadRow> {
        let mut out = Vec::new();
        r.write(copy.as_bytes(), &mut Vec::new(), &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn each_form_is_written_as_row_to_json_writes_it() {
        let (sql, r) = rows(
            &[
                ("id", "int8"),
                ("x", "float8"),
                ("ok", "bool"),
                ("at", "timestamptz"),
                ("local", "timestamp"),
                ("day", "date"),
                ("doc", "json"),
                ("amount", "numeric"),
                ("tags", "int4[]"),
                ("say \"hi\"", "text"),
            ],
            true,
        );
        assert_eq!(
            sql,
            "COPY (SELECT s.\"id\", s.\"x\", s.\"ok\", s.\"at\", s.\"local\", s.\"day\", s.\"doc\", \
             s.\"amount\"::text, to_json(s.\"tags\"), s.\"say \"\"hi\"\"\" FROM t AS s) TO STDOUT"
        );
        assert_eq!(
            line(
                &r,
                "1\t1e+20\tt\t2024-05-01 10:00:00.5+00\t2024-05-01 10:00:00\t2024-05-01\t{\"a\":\\n1}\t12.50\t[1,2]\ta\\tb\\\\c\"\u{1}é"
            )
            .as_deref(),
            Ok(
                "{\"id\":1,\"x\":1e+20,\"ok\":true,\"at\":\"2024-05-01T10:00:00.5+00:00\",\
                 \"local\":\"2024-05-01T10:00:00\",\"day\":\"2024-05-01\",\"doc\":{\"a\": 1},\
                 \"amount\":\"12.50\",\"tags\":[1,2],\"say \\\"hi\\\"\":\"a\\tb\\\\c\\\"\\u0001é\"}"
            )
        );
        assert_eq!(
            line(
                &r,
                "\\N\tNaN\tf\t0044-03-15 12:00:00+05:30 BC\tinfinity\t0044-03-15 BC\t\\N\t\\N\t\\N\t"
            )
            .as_deref(),
            Ok(
                "{\"id\":null,\"x\":\"NaN\",\"ok\":false,\"at\":\"0044-03-15T12:00:00+05:30 BC\",\
                 \"local\":\"infinity\",\"day\":\"0044-03-15 BC\",\"doc\":null,\"amount\":null,\
                 \"tags\":null,\"say \\\"hi\\\"\":\"\"}"
            )
        );
    }

    #[test]
    fn rows_of_another_shape_are_errors_not_guesses() {
        let (_, r) = rows(&[("a", "int8"), ("b", "bool")], true);
        assert!(line(&r, "1").is_err());
        assert!(line(&r, "1\tt\t3").is_err());
        assert!(line(&r, "1\tyes").is_err());
        let (sql, none) = rows(&[], true);
        assert_eq!(sql, "COPY (SELECT  FROM t AS s) TO STDOUT");
        assert_eq!(line(&none, "").as_deref(), Ok("{}"));
    }

    #[test]
    fn without_iso_dates_the_server_makes_their_json() {
        let (sql, _) = rows(&[("d", "date"), ("t", "timestamptz")], false);
        assert_eq!(
            sql,
            "COPY (SELECT to_json(s.\"d\"), to_json(s.\"t\") FROM t AS s) TO STDOUT"
        );
    }

    #[test]
    fn copy_escapes_are_undone() {
        let mut out = Vec::new();
        unescape(br"a\\b\tc\nd\101\x41\v\q\", &mut out);
        assert_eq!(out, b"a\\b\tc\nd\x41\x41\x0bq\\");
    }

    #[test]
    fn json_numbers_are_recognised_exactly() {
        for ok in ["0", "-0", "12", "1.5", "-1.5e-07", "1e+20", "3E2"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "1e",
            "NaN",
            "Infinity",
            "-Infinity",
            "+1",
            "1x",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn rows_are_cut_across_chunks() {
        let mut cut = RowCutter::default();
        let mut got = Vec::new();
        for chunk in ["a\tb", "\nc\n", "", "d", "e\nf"] {
            cut.push(chunk.as_bytes());
            while let Some(row) = cut.next_row() {
                got.push(String::from_utf8(row.to_vec()).expect("utf-8"));
            }
        }
        assert_eq!(got, ["a\tb", "c", "de"]);
        assert_eq!(cut.leftover(), 1);
    }

    /// Every type and awkward value against the real server: the lines
    /// built from `COPY` equal `row_to_json`'s, but for line breaks inside
    /// `json` values (a space here, so a row stays one line). Runs where
    /// `FLOE_TEST_POSTGRES_URL` names a server (`infra/test.sh` sets it).
    #[tokio::test]
    async fn lines_equal_row_to_json_on_a_real_server() {
        use futures::TryStreamExt;
        use sqlx::{Column, Connection, Executor, TypeInfo};

        let Ok(url) = std::env::var("FLOE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: FLOE_TEST_POSTGRES_URL is not set");
            return;
        };
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        c.execute(TABLE).await.expect("the test table");
        for style in ["ISO, MDY", "ISO, DMY", "SQL, DMY", "German", "Postgres"] {
            c.execute(format!("SET LOCAL DateStyle = '{style}'").as_str())
                .await
                .expect("DateStyle");
            let inner = "(SELECT * FROM awkward ORDER BY id) AS s";
            let described = (&mut c)
                .describe(format!("SELECT * FROM {inner}").as_str())
                .await
                .expect("describe");
            let columns: Vec<(String, String)> = described
                .columns()
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        c.type_info().name().to_ascii_lowercase(),
                    )
                })
                .collect();
            let (sql, rows) = plan(&columns, inner, style.starts_with("ISO"));
            let mut got = Vec::new();
            {
                let mut stream = c.copy_out_raw(&sql).await.expect("copy");
                let mut cut = RowCutter::default();
                let (mut scratch, mut line) = (Vec::new(), Vec::new());
                while let Some(chunk) = stream.try_next().await.expect("chunk") {
                    cut.push(&chunk);
                    while let Some(row) = cut.next_row() {
                        line.clear();
                        rows.write(row, &mut scratch, &mut line).expect("row");
                        got.push(String::from_utf8(line.clone()).expect("utf-8"));
                    }
                }
                assert_eq!(cut.leftover(), 0);
            }
            let list: Vec<String> = columns
                .iter()
                .map(|(name, ty)| {
                    let q = super::super::scd2::ident(name);
                    match ty.as_str() {
                        "numeric" => format!("s.{q}::text AS {q}"),
                        "numeric[]" => format!("s.{q}::text[] AS {q}"),
                        _ => format!("s.{q}"),
                    }
                })
                .collect();
            let expected: Vec<String> = sqlx::query_scalar::<_, String>(&format!(
                "SELECT row_to_json(whole_row)::text FROM (SELECT {} FROM {inner}) AS whole_row",
                list.join(", ")
            ))
            .fetch_all(&mut c)
            .await
            .expect("row_to_json");
            assert!(
                expected.iter().any(|l| l.contains('\n')),
                "a json value with a line break is among the rows"
            );
            let expected: Vec<String> = expected
                .iter()
                .map(|l| l.replace(['\n', '\r'], " "))
                .collect();
            assert_eq!(got.len(), expected.len(), "{style}");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "DateStyle {style}");
            }
        }
        c.execute("ROLLBACK").await.expect("rollback");
    }

    /// Awkward values of every type, in a transaction rolled back.
    const TABLE: &str = r#"
        BEGIN;
        SET LOCAL TIME ZONE 'UTC';
        CREATE TYPE mood AS ENUM ('ok', 'sad "really"');
        CREATE TYPE pair AS (a int, b text);
        CREATE DOMAIN posint AS int CHECK (VALUE > 0);
        CREATE TEMP TABLE awkward (
            id int8, i2 int2, i4 int4, f4 float4, f8 float8, ok bool,
            amount numeric(30, 6), amounts numeric[], plain numeric,
            t text, vc varchar(20), bc char(5), nm name, one "char", u uuid, raw bytea,
            tm time, ttz timetz, iv interval, ip inet, net cidr, mac macaddr, bits bit(3),
            vbits varbit, o oid, doc xml, cash money,
            d date, ts timestamp(6), tz timestamptz(6),
            j json, jb jsonb, ia int[], ta text[], grid int[][], tsa timestamptz[],
            p pair, m mood, pi posint, r int4range, pt point,
            "odd ""name"" é" text
        );
        INSERT INTO awkward VALUES
          (1, -32768, 2147483647, 1.1, 0.1, true,
           12345678901234567890.123456, '{1.50,NULL,-0.000001}', 'NaN',
           E'tab\there\nnew "q" back\\slash \x01\x1f\x7f é 😀', 'v', 'ab', 'nm', 'x',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00ff5c0a',
           '23:59:59.999999', '10:00:00+05:30', '1 year 2 mons -3 days 04:05:06.5',
           '::1', '10.0.0.0/8', '08:00:2b:01:02:03', B'101', B'1', 4294967295,
           '<a>b &amp; c</a>', 1.5,
           '2024-05-01', '2024-05-01 10:00:00.5', '2024-05-01 23:59:59.999999+02',
           E'{ "a" :\n 1,\r\n "s": "x\\ty" }', '{"b": [1, {"c": null}], "a": "é\u0001"}',
           '{1,NULL,3}', E'{"with \\"q\\"",NULL,"a,b","",\\\\}', '{{1,2},{3,4}}',
           '{2024-05-01 10:00:00+00,infinity}',
           ROW(1, E'x\ty'), 'sad "really"', 7, '[1,5)', '(1.5,-2)',
           'odd'),
          (2, 0, 0, 'NaN', 'Infinity', false,
           -0.000001, '{}', 0, '', '', '', '', ' ', NULL, '',
           '00:00', '00:00:00-00', '0', '192.168.0.1/24', '::/0', '00:00:00:00:00:00', B'000',
           B'', 0, '', -2,
           '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC',
           '[]', '{}', '{}', '{}', '{}', '{}', ROW(NULL, NULL), 'ok', 1, 'empty', '(0,0)', ''),
          (3, 1, -1, '-Infinity', 1e300, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           'infinity', '-infinity', 'infinity', 'null', 'null', NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL),
          (4, 2, 3, 3.4028235e38, -1.5e-300, true, 1, NULL, 1e-20, 'x', NULL, NULL, NULL, NULL,
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           '10000-01-01', '1999-12-31 23:59:59', '1970-01-01 00:00:00.000001+00', '1', '1.50',
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    "#;
}
