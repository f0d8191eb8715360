//! Database sources (PostgreSQL, MySQL/MariaDB): a table or a query read in one
//! consistent snapshot and landed as NDJSON in a temporary folder, so the
//! rows then take the same path as a file's: the contract, rejects with
//! line numbers and the row as read, `_hash`, expectations and reports.
//!
//! - **One snapshot.** The read is one `REPEATABLE READ READ ONLY`
//!   transaction (MySQL: `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ
//!   ONLY`), which takes no lock writers wait on.
//! - **Parallel, still one snapshot.** With `parallel = N`, N connections
//!   each read a range of an integer column (`split_by`, or the one-column
//!   `unique_key`), from its smallest to its largest value in equal widths,
//!   NULL keys in the first. PostgreSQL's readers import the first one's
//!   exported snapshot; MySQL's start theirs under `FLUSH TABLES WITH READ
//!   LOCK`, held only while they do (mydumper's way; it needs `RELOAD`).
//! - **Bounded memory.** Rows stream from the server to the file, one line
//!   each; nothing holds the result.
//! - **Exact values.** Each row is the JSON form the server gives it:
//!   PostgreSQL's `row_to_json`, rebuilt byte for byte from a `COPY` of the
//!   values (`pg_copy`, a third of the server's time), and MySQL's
//!   `JSON_OBJECT`. Timestamps keep their offsets (the session is in UTC),
//!   `jsonb` and arrays stay nested (struct, list and map columns), and
//!   `numeric` is sent as text, so a `decimal(p, s)` column gets every
//!   digit.
//! - **Only the window's days.** With an event-time column of a date or
//!   timestamp type (or an integer one for epoch times), the window, one day
//!   wider on each side for local times, is filtered by the server. The
//!   exact days are then kept as for any source. A job without
//!   `event_time` reads every row, and its table is replaced whole.
//! - **Or what changed.** With `cursor` (a column every change raises:
//!   `updated_at`, a serial id), a run reads only rows past the largest
//!   value the table's last commit recorded (`floe.state.database.cursor` in
//!   the snapshot summary, committed with the rows), of any day, and merges them by
//!   `unique_key` (`mode = "merge"`). A crash before the commit reads
//!   them again, and a retried commit is found by its run id.
//! - **Credentials.** The password comes from the environment
//!   (`password_env`), and the URL carries none (checked when the pipeline
//!   is read). The password is registered for redaction, so no log line
//!   can show it.

use std::io::Write as _;

use chrono::NaiveDate;
use futures::TryStreamExt;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Column, Connection, Executor, TypeInfo};

use super::Unit;
use super::files::SourceFile;
use super::pg_copy;
use super::scd2::ident;
use crate::error::{Error, Result};
use crate::pipeline::{DatabaseSource, EventTimeConfig, Job, Relation};

/// Rows between progress log lines.
const PROGRESS_ROWS: u64 = 1_000_000;

/// The snapshot summary property holding a database cursor's last value (a
/// state key: floe's own later commits, compactions among them, carry it).
pub const CURSOR_KEY: &str = crate::table::props::DATABASE_CURSOR_KEY;

/// Every day: a cursor read keeps rows of any day (a late change lands in
/// its own day).
const EVERY_DAY: std::ops::RangeInclusive<i32> = i32::MIN..=i32::MAX;

/// The source as reports name it: the URL (no password) and what is read.
pub fn describe(src: &DatabaseSource) -> String {
    match &src.relation {
        Relation::Table(t) => format!("{} table {t}", src.url),
        Relation::Query(_) => format!("{} query", src.url),
    }
}

/// How the landed rows are read: one JSON object per line.
pub fn landed_format() -> crate::pipeline::SourceConfig {
    crate::pipeline::SourceConfig {
        path: String::new(),
        format: crate::pipeline::Format::Ndjson,
        delimiter: ',',
        quote: '"',
        records: None,
    }
}

/// What an extract left: the units to read, and the folder that holds
/// them (removed when dropped).
pub struct Extract {
    /// One NDJSON unit with every row read.
    pub units: Vec<Unit>,
    /// The temporary folder of the unit's file, removed with the extract.
    folder: tempfile::TempDir,
    /// Rows the server sent.
    pub rows: u64,
    /// With a `cursor`: the largest value read, or the one the run started
    /// from when nothing was past it.
    pub cursor: Option<String>,
}

impl std::fmt::Debug for Extract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extract")
            .field("rows", &self.rows)
            .field("folder", &self.folder.path())
            .finish_non_exhaustive()
    }
}

fn source_error(src: &DatabaseSource, what: &str, e: sqlx::Error) -> Error {
    Error::Source(format!("{}: {what}: {e}", describe(src))).caused_by(e)
}

/// The server's SQL: PostgreSQL, or MySQL/MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Postgres,
    MySql,
}

impl Dialect {
    fn of(src: &DatabaseSource) -> Self {
        if src.url.starts_with("mysql:") || src.url.starts_with("mariadb:") {
            Dialect::MySql
        } else {
            Dialect::Postgres
        }
    }

    /// `name` as a quoted identifier.
    fn ident(self, name: &str) -> String {
        match self {
            Dialect::Postgres => ident(name),
            Dialect::MySql => format!("`{}`", name.replace('`', "``")),
        }
    }

    /// `expr` as text.
    fn text(self, expr: &str) -> String {
        match self {
            Dialect::Postgres => format!("({expr})::text"),
            Dialect::MySql => format!("CAST({expr} AS CHAR)"),
        }
    }
}

/// An open connection of either server.
enum Db {
    Pg(PgConnection),
    My(MySqlConnection),
}

impl Db {
    async fn execute(&mut self, sql: &str) -> std::result::Result<(), sqlx::Error> {
        match self {
            Db::Pg(c) => c.execute(sql).await.map(|_| ()),
            Db::My(c) => c.execute(sql).await.map(|_| ()),
        }
    }

    /// One consistent, read-only snapshot in a UTC session.
    async fn begin(&mut self) -> std::result::Result<(), sqlx::Error> {
        match self {
            Db::Pg(_) => {
                self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                self.execute("SET LOCAL TIME ZONE 'UTC'").await
            }
            Db::My(_) => {
                self.execute("SET time_zone = '+00:00'").await?;
                self.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    .await?;
                self.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                    .await
            }
        }
    }

    /// The columns of `sql`'s result: (name, type name in lower case).
    async fn columns(
        &mut self,
        sql: &str,
    ) -> std::result::Result<Vec<(String, String)>, sqlx::Error> {
        fn named<C: Column>(columns: &[C]) -> Vec<(String, String)> {
            columns
                .iter()
                .map(|c| {
                    (
                        c.name().to_string(),
                        c.type_info().name().to_ascii_lowercase(),
                    )
                })
                .collect()
        }
        Ok(match self {
            Db::Pg(c) => named((&mut *c).describe(sql).await?.columns()),
            Db::My(c) => named((&mut *c).describe(sql).await?.columns()),
        })
    }

    /// The one text value `sql` returns (null: none).
    async fn text(&mut self, sql: &str) -> std::result::Result<Option<String>, sqlx::Error> {
        match self {
            Db::Pg(c) => sqlx::query_scalar(sql).fetch_one(&mut *c).await,
            Db::My(c) => sqlx::query_scalar(sql).fetch_one(&mut *c).await,
        }
    }

    /// Joins the snapshot another transaction exported (PostgreSQL), in a
    /// UTC session.
    async fn begin_in(&mut self, snapshot: &str) -> std::result::Result<(), sqlx::Error> {
        self.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        self.execute(&format!(
            "SET TRANSACTION SNAPSHOT '{}'",
            snapshot.replace('\'', "''")
        ))
        .await?;
        self.execute("SET LOCAL TIME ZONE 'UTC'").await
    }

    /// Runs `sql` (ending a read or a lock), then closes; a failure of
    /// either changes nothing read, and closing ends both anyway.
    async fn execute_then_close(mut self, sql: &str) {
        if let Err(e) = self.execute(sql).await {
            tracing::debug!(error = %e, %sql, "ending a database session");
        }
        self.close().await;
    }

    async fn close(self) {
        match self {
            Db::Pg(c) => {
                let _ = c.close().await;
            }
            Db::My(c) => {
                let _ = c.close().await;
            }
        }
    }
}

/// Reads the rows of `src` for the window `from..=to` into local NDJSON
/// files, one per reader (see the module docs).
///
/// # Errors
/// A connection, a password variable or a query that fails, naming the
/// source; or the local file cannot be written.
pub async fn extract(
    src: &DatabaseSource,
    job: &Job,
    (from, to): (NaiveDate, NaiveDate),
    window: &std::ops::RangeInclusive<i32>,
    since: Option<String>,
) -> Result<Extract> {
    let dialect = Dialect::of(src);
    let mut readers = open_readers(src, dialect).await?;
    let inner = match &src.relation {
        Relation::Table(t) => format!("SELECT * FROM {t}"),
        Relation::Query(q) => q.clone(),
    };
    let parallel = readers.len();
    let first = &mut readers[0];
    let columns = first
        .columns(&inner)
        .await
        .map_err(|e| source_error(src, "cannot read the columns", e))?;
    // A cursor reads what changed since the last run, of any day; else the
    // window's days.
    let predicate = match &src.cursor {
        Some(c) => {
            if !columns.iter().any(|(n, _)| n == c) {
                return Err(Error::Config(format!(
                    "{}: key `source.cursor`: the source has no column {c:?}",
                    describe(src)
                )));
            }
            since
                .as_ref()
                .map(|v| format!("s.{} > '{}'", dialect.ident(c), v.replace('\'', "''")))
        }
        None => window_predicate(dialect, job, &columns, from, to),
    };
    let filter = predicate
        .as_ref()
        .map(|p| format!(" WHERE {p}"))
        .unwrap_or_default();
    let cursor = match &src.cursor {
        Some(c) => {
            let max = format!(
                "SELECT {} FROM ({inner}) AS s{filter}",
                dialect.text(&format!("max(s.{})", dialect.ident(c)))
            );
            let found = first
                .text(&max)
                .await
                .map_err(|e| source_error(src, "cannot read the cursor's largest value", e))?;
            found.or(since)
        }
        None => None,
    };
    let parts = match &src.split_by {
        Some(key) if parallel > 1 => {
            let bounds =
                key_bounds(src, dialect, first, (&inner, &filter), (key, &columns)).await?;
            split_ranges(&dialect.ident(key), bounds, parallel)
        }
        _ => vec![None],
    };
    // PostgreSQL prints dates for the COPY in the session's style; only ISO
    // is turned into JSON here, any other style is the server's to_json.
    let iso_dates = match dialect {
        Dialect::Postgres => first
            .text("SHOW DateStyle")
            .await
            .map_err(|e| source_error(src, "cannot read the session's DateStyle", e))?
            .is_some_and(|style| style.trim_start().starts_with("ISO")),
        Dialect::MySql => false,
    };
    let folder = tempfile::Builder::new()
        .prefix("floe-db-")
        .tempdir()
        .map_err(|e| Error::Source(format!("cannot make a temporary folder: {e}")).caused_by(e))?;
    let reads = readers
        .iter_mut()
        .zip(&parts)
        .enumerate()
        .map(|(i, (db, part))| {
            let both = match (&predicate, part) {
                (Some(p), Some(r)) => Some(format!("({p}) AND {r}")),
                (p, r) => p.clone().or_else(|| r.clone()),
            };
            let read = read_plan(dialect, &inner, &columns, &both, iso_dates);
            tracing::debug!(source = %describe(src), part = i, sql = %read.sql(), "reading");
            let path = folder.path().join(format!("rows-{i}.ndjson"));
            async move {
                let rows = land(src, db, &read, &path).await?;
                Ok::<_, Error>((path, rows))
            }
        });
    let landed = futures::future::try_join_all(reads).await?;
    for db in readers {
        // Read-only: nothing to keep.
        db.execute_then_close("ROLLBACK").await;
    }
    let rows = landed.iter().map(|(_, n)| n).sum();
    tracing::info!(source = %describe(src), rows, parts = landed.len(), "read");
    let origin = std::sync::Arc::new(super::kafka::Origin::named(describe(src)));
    let units = landed
        .into_iter()
        .map(|(path, _)| Unit {
            file: SourceFile::Local(path),
            keep: if src.cursor.is_some() {
                EVERY_DAY
            } else {
                window.clone()
            },
            vars: None,
            origin: Some(origin.clone()),
        })
        .collect();
    Ok(Extract {
        units,
        folder,
        rows,
        cursor,
    })
}

/// `src.parallel` connections, each in a read-only transaction of the same
/// snapshot: on PostgreSQL the first exports its snapshot and the others
/// import it; on MySQL/MariaDB all start theirs while a global read lock
/// holds commits back for the few milliseconds that takes.
async fn open_readers(src: &DatabaseSource, dialect: Dialect) -> Result<Vec<Db>> {
    let n = usize::from(src.parallel.max(1));
    let begun = |e| source_error(src, "cannot start a read-only snapshot", e);
    let mut readers = Vec::with_capacity(n);
    match dialect {
        Dialect::Postgres => {
            let mut first = connect(src, dialect).await?;
            first.begin().await.map_err(begun)?;
            let snapshot = if n > 1 {
                first
                    .text("SELECT pg_export_snapshot()")
                    .await
                    .map_err(|e| source_error(src, "cannot export the read's snapshot", e))?
            } else {
                None
            };
            readers.push(first);
            if let Some(id) = snapshot {
                for _ in 1..n {
                    let mut db = connect(src, dialect).await?;
                    db.begin_in(&id).await.map_err(|e| {
                        source_error(
                            src,
                            "cannot share the read's snapshot (SET TRANSACTION SNAPSHOT)",
                            e,
                        )
                    })?;
                    readers.push(db);
                }
            }
        }
        Dialect::MySql if n > 1 => {
            let mut lock = connect(src, dialect).await?;
            lock.execute("FLUSH TABLES WITH READ LOCK").await.map_err(|e| {
                source_error(
                    src,
                    "parallel reads hold FLUSH TABLES WITH READ LOCK for the milliseconds their snapshots take to start, \
                     which needs the RELOAD privilege (or use parallel = 1)",
                    e,
                )
            })?;
            for _ in 0..n {
                let mut db = connect(src, dialect).await?;
                db.begin().await.map_err(begun)?;
                readers.push(db);
            }
            lock.execute_then_close("UNLOCK TABLES").await;
        }
        Dialect::MySql => {
            let mut db = connect(src, dialect).await?;
            db.begin().await.map_err(begun)?;
            readers.push(db);
        }
    }
    Ok(readers)
}

/// The smallest and largest value of `key` among the rows read, or `None`
/// when there are none.
///
/// # Errors
/// A key that is not a column, or not of an integer type.
async fn key_bounds(
    src: &DatabaseSource,
    dialect: Dialect,
    db: &mut Db,
    (inner, filter): (&str, &str),
    (key, columns): (&str, &[(String, String)]),
) -> Result<Option<(i128, i128)>> {
    let Some((_, ty)) = columns.iter().find(|(n, _)| n == key) else {
        return Err(Error::Config(format!(
            "{}: key `source.split_by`: the source has no column {key:?}",
            describe(src)
        )));
    };
    if !is_integer_type(ty) {
        return Err(Error::Config(format!(
            "{}: key `source.split_by`: {key:?} is of type {ty}; parallel reads split the ranges of an integer column (a serial id)",
            describe(src)
        )));
    }
    let bound = |f: &str| {
        format!(
            "SELECT {} FROM ({inner}) AS s{filter}",
            dialect.text(&format!("{f}(s.{})", dialect.ident(key)))
        )
    };
    let lo = db
        .text(&bound("min"))
        .await
        .map_err(|e| source_error(src, "cannot read the split column's smallest value", e))?;
    let hi = db
        .text(&bound("max"))
        .await
        .map_err(|e| source_error(src, "cannot read the split column's largest value", e))?;
    let parse = |v: String| {
        v.trim().parse::<i128>().map_err(|_| {
            Error::Source(format!(
                "{}: the split column {key:?} has the value {v:?}, not an integer",
                describe(src)
            ))
        })
    };
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) => Some((parse(lo)?, parse(hi)?)),
        _ => None,
    })
}

/// Whether a server's type name (lower case) is an integer type.
fn is_integer_type(ty: &str) -> bool {
    let base = ty.trim_end_matches(" unsigned");
    matches!(
        base,
        "int2"
            | "int4"
            | "int8"
            | "smallint"
            | "integer"
            | "bigint"
            | "tinyint"
            | "mediumint"
            | "int"
    )
}

/// `parts` predicates on `key` (a quoted column) that cover `lo..=hi` in
/// ranges of equal width, the first also taking the rows whose key is
/// NULL; fewer when the range has fewer values, one (none) without rows.
fn split_ranges(key: &str, bounds: Option<(i128, i128)>, parts: usize) -> Vec<Option<String>> {
    let Some((lo, hi)) = bounds else {
        return vec![None];
    };
    let span = hi - lo + 1;
    let n = i128::try_from(parts.max(1)).unwrap_or(1).min(span.max(1));
    (0..n)
        .map(|i| {
            let a = lo + span * i / n;
            let b = lo + span * (i + 1) / n;
            let range = if i + 1 == n {
                format!("s.{key} >= {a}")
            } else {
                format!("s.{key} >= {a} AND s.{key} < {b}")
            };
            Some(if i == 0 {
                format!("(s.{key} IS NULL OR ({range}))")
            } else {
                format!("({range})")
            })
        })
        .collect()
}

async fn connect(src: &DatabaseSource, dialect: Dialect) -> Result<Db> {
    let password = match &src.password_env {
        Some(var) => {
            let password = std::env::var(var).map_err(|_| {
                Error::Config(format!(
                    "the environment variable {var} (source.password_env) is not set"
                ))
            })?;
            crate::secret::remember_secret(&password);
            Some(password)
        }
        None => None,
    };
    let bad_url =
        |e: sqlx::Error| Error::Config(format!("key `source.database`: {e}")).caused_by(e);
    let connected = match dialect {
        Dialect::Postgres => {
            let mut options: PgConnectOptions = src.url.parse().map_err(bad_url)?;
            if let Some(p) = &password {
                options = options.password(p);
            }
            PgConnection::connect_with(&options.application_name("floe"))
                .await
                .map(Db::Pg)
        }
        Dialect::MySql => {
            let url = src.url.replacen("mariadb:", "mysql:", 1);
            let mut options: MySqlConnectOptions = url.parse().map_err(bad_url)?;
            if let Some(p) = &password {
                options = options.password(p);
            }
            MySqlConnection::connect_with(&options).await.map(Db::My)
        }
    };
    connected.map_err(|e| source_error(src, "cannot connect", e))
}

/// How one reader's rows are read.
enum Read {
    /// MySQL/MariaDB: one column, each row's JSON text.
    Json(String),
    /// PostgreSQL: a `COPY` of the values, written as `row_to_json` lines.
    Copy(String, pg_copy::Rows),
}

impl Read {
    fn sql(&self) -> &str {
        match self {
            Read::Json(sql) | Read::Copy(sql, _) => sql,
        }
    }
}

/// Streams a reader's rows into `path`, one JSON line per row.
async fn land(
    src: &DatabaseSource,
    db: &mut Db,
    read: &Read,
    path: &std::path::Path,
) -> Result<u64> {
    let io = |e: std::io::Error| {
        Error::Source(format!("cannot write {}: {e}", path.display())).caused_by(e)
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rows: u64 = 0;
    let mut write = |line: &[u8]| -> Result<()> {
        out.write_all(line).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
        rows += 1;
        if rows.is_multiple_of(PROGRESS_ROWS) {
            tracing::info!(source = %describe(src), rows, "reading");
        }
        Ok(())
    };
    let failed = |e| source_error(src, "the read failed", e);
    match (db, read) {
        (Db::Pg(c), Read::Copy(sql, shape)) => {
            let mut stream = c.copy_out_raw(sql).await.map_err(failed)?;
            let mut cut = pg_copy::RowCutter::default();
            let (mut scratch, mut line) = (Vec::new(), Vec::new());
            while let Some(chunk) = stream.try_next().await.map_err(failed)? {
                cut.push(&chunk);
                while let Some(row) = cut.next_row() {
                    line.clear();
                    shape.write(row, &mut scratch, &mut line).map_err(|e| {
                        Error::Source(format!(
                            "{}: the server's COPY sent an unexpected row: {e}",
                            describe(src)
                        ))
                    })?;
                    write(&line)?;
                }
            }
            if cut.leftover() > 0 {
                return Err(Error::Source(format!(
                    "{}: the server's COPY ended inside a row",
                    describe(src)
                )));
            }
        }
        (Db::My(c), Read::Json(sql)) => {
            let mut stream = sqlx::query_scalar::<_, String>(sql).fetch(&mut *c);
            while let Some(line) = stream.try_next().await.map_err(failed)? {
                write(line.as_bytes())?;
            }
        }
        _ => {
            return Err(Error::Source(format!(
                "{}: a read planned for another server",
                describe(src)
            )));
        }
    }
    out.flush().map_err(io)?;
    Ok(rows)
}

/// How each row of `inner`, filtered by `predicate`, is read: on
/// PostgreSQL a `COPY` of its values turned into `row_to_json`'s lines
/// (`pg_copy`); on MySQL `JSON_OBJECT`, decimals as text (every digit
/// kept) and times in ISO form (`TIMESTAMP` as a UTC instant, `DATETIME`
/// as a local time).
fn read_plan(
    dialect: Dialect,
    inner: &str,
    columns: &[(String, String)],
    predicate: &Option<String>,
    iso_dates: bool,
) -> Read {
    let filter = predicate
        .as_ref()
        .map(|p| format!(" WHERE {p}"))
        .unwrap_or_default();
    if dialect == Dialect::Postgres {
        let (sql, rows) = pg_copy::plan(columns, &format!("({inner}) AS s{filter}"), iso_dates);
        return Read::Copy(sql, rows);
    }
    let pairs: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let c = format!("s.{}", dialect.ident(name));
            let value = match ty.as_str() {
                t if t.starts_with("decimal") || t.starts_with("numeric") => {
                    format!("CAST({c} AS CHAR)")
                }
                "timestamp" => format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%fZ')"),
                "datetime" => format!("DATE_FORMAT({c}, '%Y-%m-%dT%H:%i:%s.%f')"),
                "date" => format!("DATE_FORMAT({c}, '%Y-%m-%d')"),
                "json" => format!("JSON_EXTRACT({c}, '$')"),
                // BINARY/VARBINARY as hex; *BLOB is also how the protocol
                // names TEXT with a binary collation (MariaDB's JSON), so it
                // passes as text.
                "binary" | "varbinary" => format!("LOWER(HEX({c}))"),
                "bit" => format!("CAST({c} AS UNSIGNED)"),
                _ => c,
            };
            format!(
                "'{}', {value}",
                name.replace('\\', "\\\\").replace('\'', "''")
            )
        })
        .collect();
    Read::Json(format!(
        "SELECT CAST(JSON_OBJECT({}) AS CHAR) FROM ({inner}) AS s{filter}",
        pairs.join(", ")
    ))
}

/// The server-side filter of the window, when the event time's column has
/// a type the server compares exactly: one day wider on each side (local
/// times and local dates reach into the neighbouring UTC days; floe keeps
/// the exact days after).
fn window_predicate(
    dialect: Dialect,
    job: &Job,
    columns: &[(String, String)],
    from: NaiveDate,
    to: NaiveDate,
) -> Option<String> {
    let type_of = |name: &str| {
        columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    };
    let lo = from.pred_opt()?;
    let hi = to.succ_opt()?.succ_opt()?;
    let temporal = |name: &str| {
        matches!(type_of(name), Some("timestamptz" | "timestamp" | "date")).then(|| {
            format!(
                "s.{c} >= '{lo}' AND s.{c} < '{hi}'",
                c = dialect.ident(name)
            )
        })
    };
    let integer = |name: &str, per_second: i64| {
        let seconds = |d: NaiveDate| d.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        let integer_type = matches!(
            type_of(name),
            Some(
                "int2"
                    | "int4"
                    | "int8"
                    | "numeric"
                    | "int"
                    | "bigint"
                    | "integer"
                    | "int unsigned"
                    | "bigint unsigned"
                    | "mediumint"
                    | "decimal"
            )
        );
        integer_type.then(|| {
            format!(
                "s.{c} >= {} AND s.{c} < {}",
                seconds(lo) * per_second,
                seconds(hi) * per_second,
                c = dialect.ident(name)
            )
        })
    };
    match &job.event_time {
        EventTimeConfig::Offset { column }
        | EventTimeConfig::Local { column, .. }
        | EventTimeConfig::Date { column } => temporal(column),
        EventTimeConfig::Period { date_column, .. } => temporal(date_column),
        EventTimeConfig::EpochSeconds { column } => integer(column, 1),
        EventTimeConfig::EpochMillis { column } => integer(column, 1000),
        EventTimeConfig::Absent => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_keeps_numeric_digits_and_quotes_names() {
        let columns = vec![
            ("id".to_string(), "int8".to_string()),
            ("Amount".to_string(), "numeric".to_string()),
            ("odd\"name".to_string(), "text".to_string()),
        ];
        let read = read_plan(
            Dialect::Postgres,
            "SELECT * FROM orders",
            &columns,
            &Some("s.\"id\" > 0".into()),
            true,
        );
        assert_eq!(
            read.sql(),
            "COPY (SELECT s.\"id\", s.\"Amount\"::text, s.\"odd\"\"name\" \
             FROM (SELECT * FROM orders) AS s WHERE s.\"id\" > 0) TO STDOUT"
        );
        let read = read_plan(
            Dialect::MySql,
            "SELECT * FROM orders",
            &columns,
            &None,
            false,
        );
        assert_eq!(
            read.sql(),
            "SELECT CAST(JSON_OBJECT('id', s.`id`, 'Amount', CAST(s.`Amount` AS CHAR), \
             'odd\"name', s.`odd\"name`) AS CHAR) FROM (SELECT * FROM orders) AS s"
        );
    }

    #[test]
    fn key_ranges_cover_every_value_once_and_nulls_in_the_first() {
        let parts = split_ranges("\"id\"", Some((1, 10)), 3);
        assert_eq!(
            parts,
            vec![
                Some("(s.\"id\" IS NULL OR (s.\"id\" >= 1 AND s.\"id\" < 4))".to_string()),
                Some("(s.\"id\" >= 4 AND s.\"id\" < 7)".to_string()),
                Some("(s.\"id\" >= 7)".to_string()),
            ]
        );
        // Fewer values than readers: one range per value.
        assert_eq!(split_ranges("k", Some((5, 6)), 4).len(), 2);
        // No rows: one read without a range.
        assert_eq!(split_ranges("k", None, 4), vec![None]);
        // Extreme bounds do not overflow.
        let wide = split_ranges("k", Some((i128::from(i64::MIN), i128::from(i64::MAX))), 4);
        assert_eq!(wide.len(), 4);
        assert!(
            wide[1]
                .as_deref()
                .is_some_and(|p| p.contains("-4611686018427387904"))
        );
    }

    #[test]
    fn only_integer_columns_split() {
        for t in ["int8", "int4", "bigint unsigned", "int", "smallint"] {
            assert!(is_integer_type(t), "{t}");
        }
        for t in ["numeric", "text", "timestamptz", "uuid", "double"] {
            assert!(!is_integer_type(t), "{t}");
        }
    }
}
