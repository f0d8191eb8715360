//! A job's `source`: files (`path` + `format`) or an HTTP API (`api` +
//! `url`), and the `[job.expect]` contract checked on what it delivers.
//!
//! ```toml
//! source = { path = "data/{date}.ndjson", format = "ndjson" }
//!
//! [job.source]
//! api = "ckan"                     # ckan | open_meteo | openelectricity | alpha_vantage | json
//! url = "https://api.neso.energy/api/3/action/datastore_search_sql"
//! params = { sql = "SELECT * FROM \"{resource}\" WHERE ... LIMIT {limit} OFFSET {offset}" }
//! chunk = "day"                    # one request series per day, "7d", or "window"
//! pad_days = 1                     # widen each request by a day each side
//! auth = { kind = "query", name = "apikey", env = "ALPHAVANTAGE_API_KEY" }
//! rate_limit = "5/min"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The most connections one database source may read with.
pub const MAX_PARALLEL: u16 = 64;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// A JSON document: an array of records, or records at `records`.
    Json,
    /// Comma- (or other-) separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Avro datums (Kafka records only).
    Avro,
}

/// A file source: where and how to read.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// A path or glob, relative to the pipeline file; `{date}` is replaced by
    /// each day of the window (`YYYY-MM-DD`) for per-day files.
    pub path: String,
    /// The file format.
    pub format: Format,
    /// CSV field delimiter (one byte).
    pub delimiter: char,
    /// CSV quote character (one byte).
    pub quote: char,
    /// JSON: dotted path to the array of records (e.g. `result.records`).
    pub records: Option<String>,
}

/// Where a job's records come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Files: local, `s3://` or `http(s)://`.
    Files(SourceConfig),
    /// An HTTP API, paged and retried, landed raw before parsing.
    Http(Box<HttpSource>),
    /// A table or query of an operational database (PostgreSQL).
    Database(Box<DatabaseSource>),
    /// A Kafka topic, read from the offsets the table recorded.
    Kafka(Box<KafkaSource>),
}

impl Source {
    /// The file source, when it is one.
    pub fn files(&self) -> Option<&SourceConfig> {
        match self {
            Source::Files(f) => Some(f),
            Source::Http(_) | Source::Database(_) | Source::Kafka(_) => None,
        }
    }
}

/// A database source, validated: `database = "postgres://user@host:port/db"`
/// with the password in an environment variable (never in the file), and
/// a `table` or a `query`.
#[derive(Debug, Clone)]
pub struct DatabaseSource {
    /// The connection URL, without a password.
    pub url: String,
    /// The environment variable holding the password, if any.
    pub password_env: Option<String>,
    /// What is read: a table (`schema.table`) or a SELECT.
    pub relation: Relation,
    /// A column that grows with every change (`updated_at`, a serial id):
    /// a run reads only rows past the last committed run's largest value.
    pub cursor: Option<String>,
    /// Connections reading at once (1: one), each a range of `split_by`'s
    /// values, all in the same snapshot.
    pub parallel: u16,
    /// The integer column whose value ranges the parallel reads split
    /// (defaults to a one-column `unique_key`).
    pub split_by: Option<String>,
}

/// A Kafka source, validated: `kafka = "host:port[,host:port...]"` (the
/// bootstrap brokers) and a `topic` whose records are JSON objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSource {
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// The topic read (every partition).
    pub topic: String,
    /// A field added to each record holding the record's Kafka timestamp
    /// (RFC 3339, UTC, milliseconds): an event time when the payload has
    /// none.
    pub timestamp_field: Option<String>,
    /// How each record's value is read.
    pub records: KafkaRecords,
}

/// Where a Kafka job's Avro schemas come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvroSchemaSource {
    /// A schema file (`.avsc`), relative to the pipeline file.
    File(String),
    /// A schema registry's base URL (Confluent's REST API).
    Registry(String),
}

/// What a Kafka record's value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaRecords {
    /// One JSON object.
    Json,
    /// One Avro datum, written with the schema in a file (raw datums) or
    /// with one of the registry's (Confluent's framing: a zero byte and the
    /// schema id before the datum).
    Avro(AvroSchemaSource),
    /// One CSV row (no header) whose fields are named by `fields`.
    Csv {
        /// The names of the row's fields, in order.
        fields: Vec<String>,
        /// Field delimiter (one byte).
        delimiter: char,
        /// Quote character (one byte).
        quote: char,
    },
}

impl KafkaSource {
    /// `kafka://host:port/topic`: how reports, `_source` and rejects name it
    /// (followed by `/<partition>` for one partition).
    pub fn uri(&self) -> String {
        format!(
            "kafka://{}/{}",
            self.brokers.first().map_or("", String::as_str),
            self.topic
        )
    }
}

/// A database source's rows: a table, or a query's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    /// `schema.table` or `table`.
    Table(String),
    /// One SELECT.
    Query(String),
}

/// The response shapes floe knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// CKAN datastore (`datastore_search`, `datastore_search_sql`): records
    /// at `result.records`, `success: false` on errors.
    Ckan,
    /// Open-Meteo: parallel arrays under `hourly` (or `block`), keyed by
    /// `time`, in the zone of `utc_offset_seconds`.
    OpenMeteo,
    /// OpenElectricity v4: `data[].results[].data` as `[time, value]` pairs.
    #[serde(rename = "openelectricity")]
    OpenElectricity,
    /// Alpha Vantage time series: an object keyed by date; rate limits and
    /// errors arrive as HTTP 200 bodies (`Note`, `Information`,
    /// `Error Message`).
    AlphaVantage,
    /// Any JSON: an array, or the array at `records`.
    Json,
}

impl Api {
    /// The fields of an answer that describe all of its records, put into
    /// each record (Open-Meteo's location and zone beside its arrays).
    pub fn answer_fields(self) -> &'static [&'static str] {
        match self {
            Api::OpenMeteo => &[
                "latitude",
                "longitude",
                "elevation",
                "timezone",
                "timezone_abbreviation",
                "utc_offset_seconds",
            ],
            Api::Ckan | Api::OpenElectricity | Api::AlphaVantage | Api::Json => &[],
        }
    }

    /// The name used in the pipeline file.
    pub fn name(self) -> &'static str {
        match self {
            Api::Ckan => "ckan",
            Api::OpenMeteo => "open_meteo",
            Api::OpenElectricity => "openelectricity",
            Api::AlphaVantage => "alpha_vantage",
            Api::Json => "json",
        }
    }
}

/// How a request series pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One request.
    None,
    /// `offset`/`limit` parameters (or `{offset}`/`{limit}` in the URL or a
    /// parameter); stops at a page shorter than `limit`.
    Offset {
        /// Page size.
        limit: u64,
        /// Query parameter for the offset.
        offset_param: String,
        /// Query parameter for the page size.
        limit_param: String,
    },
    /// The next page's URL is at `path` in each body; stops when absent,
    /// null, or the page is empty.
    Next {
        /// Dotted path, e.g. `result._links.next` or `links.next`.
        path: String,
    },
    /// An opaque cursor at `path` in each body goes back as `param`.
    Cursor {
        /// Query parameter carrying the cursor.
        param: String,
        /// Dotted path of the next cursor.
        path: String,
    },
}

/// Where a credential goes; its value is read from an environment variable
/// at run time and never written to reports, logs or the landing zone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <value>`.
    Bearer {
        /// Environment variable holding the token.
        env: String,
    },
    /// A header of its own, e.g. `X-API-Key`.
    Header {
        /// Header name.
        name: String,
        /// Environment variable holding the value.
        env: String,
    },
    /// A query parameter, e.g. `apikey`.
    Query {
        /// Parameter name.
        name: String,
        /// Environment variable holding the value.
        env: String,
    },
}

impl Auth {
    /// The environment variable the credential is read from.
    pub fn env(&self) -> &str {
        match self {
            Auth::Bearer { env } | Auth::Header { env, .. } | Auth::Query { env, .. } => env,
        }
    }
}

/// An HTTP API source, validated.
#[derive(Debug, Clone)]
pub struct HttpSource {
    /// Response shape.
    pub api: Api,
    /// URL template: `{from}`, `{to}`, `{to_exclusive}` (the request's days,
    /// padded, `YYYY-MM-DD`), `{dates}` (each of those days, quoted and
    /// comma-separated), `{date}` (the day, with `chunk = "day"` only),
    /// `{offset}`, `{limit}` and `for_each` keys.
    pub url: String,
    /// Query parameters (templates like the URL).
    pub params: BTreeMap<String, String>,
    /// Extra request headers (templates like the URL).
    pub headers: BTreeMap<String, String>,
    /// Credential from the environment.
    pub auth: Option<Auth>,
    /// `json`: dotted path of the records array (the body itself when absent).
    pub records: Option<String>,
    /// `open_meteo`: the block of arrays (`hourly`, `daily`, `minutely_15`).
    pub block: String,
    /// Paging.
    pub pagination: Pagination,
    /// Days per request series (`None`: the whole window at once).
    pub chunk_days: Option<u32>,
    /// Days added before and after each request's range, for APIs keyed by a
    /// local date whose UTC day spills into its neighbours.
    pub pad_days: u32,
    /// Request series repeated per entry (e.g. per site); each entry's keys
    /// fill templates and are added to every record it returns.
    pub for_each: Vec<BTreeMap<String, String>>,
    /// Where the entries are read from at run time (a file, a table), when
    /// not written inline.
    pub for_each_from: Option<ForEachFrom>,
    /// Request series in flight at once.
    pub concurrency: usize,
    /// Smallest spacing between two requests (from `rate_limit`).
    pub min_interval: Option<Duration>,
    /// Per request, connection to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt, per request.
    pub retries: u32,
    /// First backoff; doubles per retry, with jitter.
    pub backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this gives up at once.
    pub max_retry_after: Duration,
    /// Pages per request series before the run fails.
    pub max_pages: u32,
    /// What a failing `for_each` entry does to the run.
    pub on_entry_error: EntryErrors,
}

/// What a run does with days of its window that get no rows from the
/// source. A run never removes a day's rows unless told to (`Allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyDays {
    /// Fail the run on any empty day (the default for API sources).
    Fail,
    /// Fail the run on an empty day that holds rows in the table (the
    /// overwrite would delete them); a day never written stays empty (the
    /// default for file sources).
    Protect,
    /// Replace them with nothing, deleting what they held (the report lists
    /// the days emptied).
    Allow,
}

/// `[job.expect]`: what the delivered rows must look like, checked before
/// anything is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Series key besides `ts_utc` (columns of the job).
    pub key: Vec<String>,
    /// Expected spacing of `ts_utc` within a series; missing slots in the
    /// window are gaps.
    pub cadence: Option<Duration>,
    /// Gaps tolerated.
    pub max_gaps: u64,
    /// Rows repeating a (key, `ts_utc`) tolerated; `None` when the job has
    /// no `[job.expect]` (duplicates are then not looked for).
    pub max_duplicates: Option<u64>,
    /// Days of the window without rows.
    pub empty_days: EmptyDays,
    /// How long after its time a slot's row is published: slots later
    /// than the run's time minus this are not gaps yet (an intraday run).
    pub publication_delay: Duration,
    /// Columns that must not be null (or only up to a fraction of rows).
    pub not_null: Vec<super::NotNull>,
    /// A pattern per column its non-null values must match.
    pub regex: BTreeMap<String, String>,
    /// SQL booleans every row must satisfy (null passes).
    pub expression: Vec<String>,
    /// Custom SQL tests: queries returning the failing rows, reading the
    /// run's delivered rows as `{this}`.
    pub sql: Vec<super::SqlTest>,
}

/// `source = {...}` as written: the union of both kinds' keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    path: Option<String>,
    format: Option<Format>,
    #[serde(default)]
    delimiter: Option<char>,
    #[serde(default)]
    quote: Option<char>,
    #[serde(default)]
    records: Option<String>,
    api: Option<Api>,
    url: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<Auth>,
    #[serde(default)]
    block: Option<String>,
    #[serde(default)]
    pagination: Option<RawPagination>,
    #[serde(default)]
    chunk: Option<String>,
    #[serde(default)]
    pad_days: Option<u32>,
    #[serde(default)]
    for_each: Option<RawForEach>,
    #[serde(default)]
    concurrency: Option<usize>,
    #[serde(default)]
    rate_limit: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    backoff: Option<String>,
    #[serde(default)]
    max_backoff: Option<String>,
    #[serde(default)]
    max_retry_after: Option<String>,
    #[serde(default)]
    max_pages: Option<u32>,
    #[serde(default)]
    on_entry_error: Option<EntryErrors>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    parallel: Option<u16>,
    #[serde(default)]
    split_by: Option<String>,
    #[serde(default)]
    kafka: Option<String>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    timestamp_field: Option<String>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    schema_registry: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawPagination {
    None,
    Offset {
        #[serde(default)]
        limit: Option<u64>,
        #[serde(default)]
        offset_param: Option<String>,
        #[serde(default)]
        limit_param: Option<String>,
    },
    Next {
        path: String,
    },
    Cursor {
        param: String,
        path: String,
    },
}

/// `[job.expect]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExpect {
    #[serde(default)]
    key: Vec<String>,
    #[serde(default)]
    cadence: Option<String>,
    #[serde(default)]
    max_gaps: u64,
    #[serde(default)]
    max_duplicates: Option<u64>,
    #[serde(default)]
    empty_days: Option<EmptyDays>,
    #[serde(default)]
    publication_delay: Option<String>,
    #[serde(default)]
    not_null: Vec<super::NotNull>,
    #[serde(default)]
    regex: BTreeMap<String, String>,
    #[serde(default)]
    expression: Vec<String>,
    #[serde(default)]
    sql: super::SqlTests,
}

fn duration(key: &str, text: &Option<String>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => {
            crate::duration::parse_duration(t).map_err(|e| format!("key `source.{key}`: {e}"))
        }
    }
}

/// `"5/s"`, `"75/min"`, `"500/h"` → the spacing between requests.
fn rate(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("key `source.rate_limit`: {text:?} is not a rate; write e.g. 5/s, 75/min or 500/h")
    };
    let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        "d" | "day" => 86_400.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(per / n))
}

impl RawSource {
    /// Checks the keys of one kind and fills the defaults of the API preset.
    pub(super) fn validate(mut self) -> Result<Source, String> {
        if let Some(url) = self.database.take() {
            return self.database(url);
        }
        if let Some(brokers) = self.kafka.take() {
            return self.kafka(brokers);
        }
        if self.topic.is_some() {
            return Err(
                "key `source.topic`: is for a Kafka source (`kafka = \"host:9092\"`)".into(),
            );
        }
        if self.timestamp_field.is_some()
            || self.fields.is_some()
            || self.schema.is_some()
            || self.schema_registry.is_some()
        {
            return Err(
                "keys `source.timestamp_field`, `fields`, `schema` and `schema_registry` are for a Kafka source (`kafka = \"host:9092\"`)"
                    .into(),
            );
        }
        if self.table.is_some()
            || self.query.is_some()
            || self.password_env.is_some()
            || self.cursor.is_some()
            || self.parallel.is_some()
            || self.split_by.is_some()
        {
            return Err(
                "keys `source.table`, `query`, `cursor`, `parallel`, `split_by` and `password_env` are for a database source (`database = \"postgres://...\"`)"
                    .into(),
            );
        }
        let http_keys = self.url.is_some() || self.api.is_some();
        match (self.path.take(), http_keys) {
            (Some(_), true) => Err(
                "key `source`: set either `path` and `format` (files) or `api` and `url` (HTTP), not both"
                    .into(),
            ),
            (None, false) => Err(
                "key `source`: set `path` and `format` (files) or `api` and `url` (an HTTP API)"
                    .into(),
            ),
            (Some(path), false) => self.files(path),
            (None, true) => self.http(),
        }
    }

    /// A database source at `url`: no password in the URL, no file or HTTP
    /// key, exactly one of `table` and `query`.
    fn database(self, url: String) -> Result<Source, String> {
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            format!("key `source.database`: not a URL ({e}); e.g. \"postgres://app@127.0.0.1:5432/shop\"")
        })?;
        if !matches!(
            parsed.scheme(),
            "postgres" | "postgresql" | "mysql" | "mariadb"
        ) {
            return Err(format!(
                "key `source.database`: {}:// is not supported; floe reads PostgreSQL (postgres://...) and MySQL/MariaDB (mysql://...)",
                parsed.scheme()
            ));
        }
        if parsed.password().is_some() {
            return Err(
                "key `source.database`: the URL holds a password; keep it out of the file and name the environment variable that holds it with `password_env`"
                    .into(),
            );
        }
        let others = self.path.is_some()
            || self.format.is_some()
            || self.api.is_some()
            || self.url.is_some()
            || self.pagination.is_some()
            || self.for_each.is_some()
            || self.auth.is_some()
            || self.timestamp_field.is_some()
            || self.fields.is_some()
            || self.schema.is_some()
            || self.schema_registry.is_some();
        if others {
            return Err(
                "key `source`: a database source takes `database`, `password_env`, `table` or `query`, `cursor`, `parallel` and `split_by`, not file, HTTP or Kafka keys"
                    .into(),
            );
        }
        let relation = match (self.table, self.query) {
            (Some(t), None) => {
                let valid = !t.is_empty()
                    && t.split('.').count() <= 2
                    && t.split('.').all(|part| {
                        !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_')
                    });
                if !valid {
                    return Err(format!(
                        "key `source.table`: {t:?} is not a table name (`table` or `schema.table`; quote-free letters, digits and _); use `query` for anything else"
                    ));
                }
                Relation::Table(t)
            }
            (None, Some(q)) => {
                use datafusion::sql::sqlparser::ast::Statement;
                use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
                use datafusion::sql::sqlparser::parser::Parser;
                let q = q.trim().trim_end_matches(';').trim_end().to_string();
                match Parser::parse_sql(&PostgreSqlDialect {}, &q) {
                    Ok(statements) if matches!(statements.as_slice(), [Statement::Query(_)]) => {}
                    Ok(_) => {
                        return Err("key `source.query`: must be one SELECT".into());
                    }
                    Err(e) => return Err(format!("key `source.query`: does not parse: {e}")),
                }
                Relation::Query(q)
            }
            (Some(_), Some(_)) => {
                return Err("key `source`: set `table` or `query`, not both".into());
            }
            (None, None) => {
                return Err("key `source`: a database source needs `table` or `query`".into());
            }
        };
        if let Some(c) = &self.cursor
            && (c.is_empty() || !c.chars().all(|ch| ch.is_alphanumeric() || ch == '_'))
        {
            return Err(format!(
                "key `source.cursor`: {c:?} is not a column name (letters, digits and _)"
            ));
        }
        let parallel = self.parallel.unwrap_or(1);
        if !(1..=MAX_PARALLEL).contains(&parallel) {
            return Err(format!(
                "key `source.parallel`: {parallel} connections; between 1 and {MAX_PARALLEL}"
            ));
        }
        if let Some(c) = &self.split_by
            && (c.is_empty() || !c.chars().all(|ch| ch.is_alphanumeric() || ch == '_'))
        {
            return Err(format!(
                "key `source.split_by`: {c:?} is not a column name (letters, digits and _)"
            ));
        }
        Ok(Source::Database(Box::new(DatabaseSource {
            url,
            password_env: self.password_env,
            relation,
            cursor: self.cursor,
            parallel,
            split_by: self.split_by,
        })))
    }

    /// A Kafka source: brokers as `host:port`, a topic, JSON records, no
    /// file, HTTP or database key.
    fn kafka(self, brokers: String) -> Result<Source, String> {
        let list: Vec<String> = brokers
            .split(',')
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty())
            .collect();
        let well_formed = |b: &String| {
            b.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        if list.is_empty() || !list.iter().all(well_formed) {
            return Err(format!(
                "key `source.kafka`: {brokers:?} is not a broker list; write \"host:port\" (comma-separated for several), e.g. \"127.0.0.1:9092\""
            ));
        }
        let others = self.path.is_some()
            || self.api.is_some()
            || self.url.is_some()
            || self.pagination.is_some()
            || self.for_each.is_some()
            || self.auth.is_some()
            || self.records.is_some()
            || self.table.is_some()
            || self.query.is_some()
            || self.password_env.is_some()
            || self.cursor.is_some()
            || self.parallel.is_some()
            || self.split_by.is_some();
        if others {
            return Err(
                "key `source`: a Kafka source takes `kafka`, `topic`, `format`, `timestamp_field`, for CSV records `fields`, `delimiter` and `quote`, for Avro `schema` or `schema_registry`; not file, HTTP or database keys"
                    .into(),
            );
        }
        if let Some(f) = &self.timestamp_field
            && f.trim().is_empty()
        {
            return Err("key `source.timestamp_field`: empty; name the field that receives each record's Kafka timestamp".into());
        }
        let csv_keys = self.fields.is_some() || self.delimiter.is_some() || self.quote.is_some();
        if csv_keys && self.format != Some(Format::Csv) {
            return Err("keys `source.fields`, `delimiter` and `quote` are for CSV records (format = \"csv\")".into());
        }
        let avro_keys = self.schema.is_some() || self.schema_registry.is_some();
        if avro_keys && self.format != Some(Format::Avro) {
            return Err("keys `source.schema` and `schema_registry` are for Avro records (format = \"avro\")".into());
        }
        let records = match self.format {
            None | Some(Format::Json | Format::Ndjson) => KafkaRecords::Json,
            Some(Format::Avro) => KafkaRecords::Avro(match (self.schema, self.schema_registry) {
                (Some(file), None) => AvroSchemaSource::File(file),
                (None, Some(url)) => {
                    let parsed = reqwest::Url::parse(&url).map_err(|e| {
                        format!("key `source.schema_registry`: not a URL ({e}); e.g. \"http://127.0.0.1:8081\"")
                    })?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(
                            "key `source.schema_registry`: an http:// or https:// URL".into()
                        );
                    }
                    if parsed.password().is_some() {
                        return Err("key `source.schema_registry`: the URL holds a password; floe reads registries without credentials for now".into());
                    }
                    AvroSchemaSource::Registry(url.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err("key `source`: Avro records need their schema: `schema = \"readings.avsc\"` (raw datums) or `schema_registry = \"http://host:8081\"` (Confluent framing), one of them".into());
                }
            }),
            Some(Format::Csv) => {
                let fields = self.fields.unwrap_or_default();
                let mut seen = std::collections::HashSet::new();
                if fields.is_empty()
                    || fields
                        .iter()
                        .any(|f| f.trim().is_empty() || !seen.insert(f.as_str()))
                {
                    return Err("key `source.fields`: CSV records have no header; name their fields in order, each once, e.g. fields = [\"ts\", \"meter\", \"kwh\"]".into());
                }
                let delimiter = self.delimiter.unwrap_or(',');
                let quote = self.quote.unwrap_or('"');
                if !delimiter.is_ascii() || !quote.is_ascii() {
                    return Err(
                        "keys `source.delimiter` and `source.quote` must be single ASCII characters"
                            .into(),
                    );
                }
                KafkaRecords::Csv {
                    fields,
                    delimiter,
                    quote,
                }
            }
            Some(Format::Parquet) => {
                return Err(
                    "key `source.format`: a Kafka source reads records that are JSON objects (format = \"json\"), CSV rows (format = \"csv\" with `fields`) or Avro (format = \"avro\")"
                        .into(),
                );
            }
        };
        let topic = self
            .topic
            .filter(|t| {
                !t.is_empty()
                    && t.len() <= 249
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            })
            .ok_or(
                "key `source.topic`: missing or not a topic name (letters, digits, `.`, `_`, `-`)",
            )?;
        Ok(Source::Kafka(Box::new(KafkaSource {
            brokers: list,
            topic,
            timestamp_field: self.timestamp_field,
            records,
        })))
    }

    /// A file source at `path`: a format, and CSV's one-byte delimiter and
    /// quote.
    fn files(self, path: String) -> Result<Source, String> {
        let format = self
            .format
            .ok_or("key `source.format`: missing; one of ndjson, json, csv, parquet".to_string())?;
        if format == Format::Avro {
            return Err("key `source.format`: \"avro\" is for Kafka records; files are ndjson, json, csv or parquet".into());
        }
        let delimiter = self.delimiter.unwrap_or(',');
        let quote = self.quote.unwrap_or('"');
        if delimiter.len_utf8() != 1 || quote.len_utf8() != 1 {
            return Err(
                "keys `source.delimiter` and `source.quote` must be single ASCII characters".into(),
            );
        }
        Ok(Source::Files(SourceConfig {
            path,
            format,
            delimiter,
            quote,
            records: self.records,
        }))
    }

    /// An HTTP API source: its keys checked in the order they are
    /// reported, the preset's defaults filled.
    fn http(mut self) -> Result<Source, String> {
        let api = self.api.ok_or(
            "key `source.api`: missing; one of ckan, open_meteo, openelectricity, alpha_vantage, json"
                .to_string(),
        )?;
        let url = self
            .url
            .take()
            .ok_or("key `source.url`: missing".to_string())?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "key `source.url`: {url:?} must start with http:// or https://"
            ));
        }
        if self.format.is_some() || self.delimiter.is_some() || self.quote.is_some() {
            return Err("keys `source.format`, `delimiter` and `quote` are for file sources; an API's shape is `api`".into());
        }
        let pagination = pagination(self.pagination.take(), api)?;
        let chunk_days = chunk_days(self.chunk.as_deref())?;
        let pad_days = self.pad_days.unwrap_or(0);
        self.check_date_template(&url, chunk_days, pad_days)?;
        let params = params(std::mem::take(&mut self.params), api, self.auth.as_ref())?;
        let on_entry_error = self.on_entry_error.unwrap_or_default();
        if on_entry_error == EntryErrors::Skip && self.for_each.is_none() {
            return Err(
                "key `source.on_entry_error`: \"skip\" is for a for_each source; without one a failure is the job's"
                    .into(),
            );
        }
        let (for_each, for_each_from) = match self.for_each.take() {
            None => (Vec::new(), None),
            Some(RawForEach::Inline(entries)) => {
                check_for_each(&entries).map_err(|e| format!("key `source.for_each`: {e}"))?;
                (entries, None)
            }
            Some(RawForEach::From(from)) => (Vec::new(), Some(from.validate()?)),
        };
        let concurrency = self.concurrency.unwrap_or(2);
        if concurrency == 0 {
            return Err("key `source.concurrency`: must be at least 1".into());
        }
        let backoff = duration("backoff", &self.backoff, Duration::from_secs(1))?;
        let max_backoff = duration("max_backoff", &self.max_backoff, Duration::from_secs(60))?;
        if max_backoff < backoff {
            return Err("key `source.max_backoff`: shorter than `backoff`".into());
        }
        Ok(Source::Http(Box::new(HttpSource {
            api,
            url,
            params,
            headers: self.headers,
            auth: self.auth,
            records: self.records,
            block: self.block.unwrap_or_else(|| "hourly".into()),
            pagination,
            chunk_days,
            pad_days,
            for_each,
            for_each_from,
            concurrency,
            min_interval: self.rate_limit.as_deref().map(rate).transpose()?,
            timeout: duration("timeout", &self.timeout, Duration::from_secs(60))?,
            retries: self.retries.unwrap_or(5),
            backoff,
            max_backoff,
            max_retry_after: duration(
                "max_retry_after",
                &self.max_retry_after,
                Duration::from_secs(600),
            )?,
            max_pages: self.max_pages.unwrap_or(10_000),
            on_entry_error,
        })))
    }

    /// `{date}` names one day: it needs one-day requests without padding.
    fn check_date_template(
        &self,
        url: &str,
        chunk_days: Option<u32>,
        pad_days: u32,
    ) -> Result<(), String> {
        let uses_date = url.contains("{date}")
            || self
                .params
                .values()
                .chain(self.headers.values())
                .any(|v| v.contains("{date}"));
        if uses_date && (chunk_days != Some(1) || pad_days != 0) {
            return Err("key `source.url`: {date} names one day, so it needs chunk = \"day\" and no pad_days; use {from} and {to} for ranges, or {dates} for the list of days asked (padding included)".into());
        }
        Ok(())
    }
}

/// `for_each` entries must not name a template floe fills itself.
///
/// # Errors
/// The first such name.
pub fn check_for_each(entries: &[BTreeMap<String, String>]) -> Result<(), String> {
    let reserved = [
        "date",
        "dates",
        "from",
        "to",
        "to_exclusive",
        "offset",
        "limit",
    ];
    for entry in entries {
        if let Some(k) = entry.keys().find(|k| reserved.contains(&k.as_str())) {
            return Err(format!("{k:?} is a template name floe fills itself"));
        }
    }
    Ok(())
}

/// What a failing `for_each` entry (a ticker the API refuses today) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryErrors {
    /// The run fails, nothing committed (the default).
    #[default]
    Fail,
    /// The other entries land; the failed one's rows in the window are
    /// kept as they were; the run ends "partial" (exit code 3).
    Skip,
}

/// `for_each` as written: a list of tables, or where to read them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawForEach {
    Inline(Vec<BTreeMap<String, String>>),
    From(RawForEachFrom),
}

/// `for_each = { file = ... }` or `{ table = ..., columns = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForEachFrom {
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default, rename = "where")]
    filter: Option<String>,
}

/// Where an API job's `for_each` entries are read at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForEachFrom {
    /// A CSV file with a header (a column per key) or a JSON array of
    /// objects, relative to the pipeline file.
    File(String),
    /// The `columns` of a catalog table's rows (those matching `filter`, a
    /// SQL condition, when given), read at its current snapshot.
    Table {
        /// `namespace.table`.
        table: String,
        /// The keys, one per column.
        columns: Vec<String>,
        /// A SQL condition on the rows.
        filter: Option<String>,
    },
}

impl RawForEachFrom {
    fn validate(self) -> Result<ForEachFrom, String> {
        match (self.file, self.table) {
            (Some(file), None) if self.columns.is_empty() && self.filter.is_none() => {
                Ok(ForEachFrom::File(file))
            }
            (Some(_), None) => Err(
                "key `source.for_each`: `columns` and `where` are for a table; a file's columns are its keys"
                    .into(),
            ),
            (None, Some(table)) if !table.contains('.') => Err(format!(
                "key `source.for_each.table`: {table:?} needs its namespace (`namespace.table`)"
            )),
            (None, Some(_)) if self.columns.is_empty() => Err(
                "key `source.for_each.columns`: name the table's columns that make an entry".into(),
            ),
            (None, Some(table)) => {
                let columns: Vec<BTreeMap<String, String>> = vec![
                    self.columns
                        .iter()
                        .map(|c| (c.clone(), String::new()))
                        .collect(),
                ];
                check_for_each(&columns)
                    .map_err(|e| format!("key `source.for_each.columns`: {e}"))?;
                Ok(ForEachFrom::Table {
                    table,
                    columns: self.columns,
                    filter: self.filter,
                })
            }
            _ => Err(
                "key `source.for_each`: a list of entries, { file = \"...\" } or { table = \"ns.t\", columns = [...] }"
                    .into(),
            ),
        }
    }
}

/// The query parameters: Open-Meteo's default time zone added, and
/// none named like the `auth` parameter.
fn params(
    mut params: BTreeMap<String, String>,
    api: Api,
    auth: Option<&Auth>,
) -> Result<BTreeMap<String, String>, String> {
    if api == Api::OpenMeteo {
        // Open-Meteo answers in GMT unless asked otherwise; floe
        // turns its local times to UTC with utc_offset_seconds.
        params
            .entry("timezone".into())
            .or_insert_with(|| "GMT".into());
    }
    if let Some(Auth::Query { name, .. }) = auth
        && params.contains_key(name)
    {
        return Err(format!(
            "key `source.params`: {name:?} is also the auth parameter"
        ));
    }
    Ok(params)
}

/// `source.pagination` with its defaults (CKAN pages by offset unless told
/// otherwise); an offset page holds at least one record.
fn pagination(raw: Option<RawPagination>, api: Api) -> Result<Pagination, String> {
    let pagination = match raw {
        Some(RawPagination::None) => Pagination::None,
        Some(RawPagination::Offset {
            limit,
            offset_param,
            limit_param,
        }) => Pagination::Offset {
            limit: limit.unwrap_or(1000),
            offset_param: offset_param.unwrap_or_else(|| "offset".into()),
            limit_param: limit_param.unwrap_or_else(|| "limit".into()),
        },
        Some(RawPagination::Next { path }) => Pagination::Next { path },
        Some(RawPagination::Cursor { param, path }) => Pagination::Cursor { param, path },
        // CKAN pages by offset unless told otherwise.
        None if api == Api::Ckan => Pagination::Offset {
            limit: 1000,
            offset_param: "offset".into(),
            limit_param: "limit".into(),
        },
        None => Pagination::None,
    };
    if let Pagination::Offset { limit: 0, .. } = pagination {
        return Err("key `source.pagination.limit`: must be at least 1".into());
    }
    Ok(pagination)
}

/// `source.chunk`: `"day"` (the default) → 1, `"window"` → `None`, `"7d"`
/// → 7.
fn chunk_days(chunk: Option<&str>) -> Result<Option<u32>, String> {
    match chunk.map(str::trim) {
        None | Some("day") => Ok(Some(1)),
        Some("window") => Ok(None),
        Some(other) => {
            let n = other
                .strip_suffix('d')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!("key `source.chunk`: {other:?}; write \"day\", \"window\" or a number of days such as \"7d\"")
                })?;
            Ok(Some(n))
        }
    }
}

impl RawExpect {
    /// Validates `[job.expect]` (or its absence) against the job's column
    /// names; `http` sets the default of `empty_days` (fail for APIs,
    /// protect for files).
    pub(super) fn validate(
        raw: Option<Self>,
        columns: &[&str],
        http: bool,
    ) -> Result<Expect, String> {
        raw.unwrap_or_default().check(columns, http)
    }

    fn check(self, columns: &[&str], http: bool) -> Result<Expect, String> {
        for k in &self.key {
            if !columns.contains(&k.as_str()) {
                return Err(format!(
                    "key `expect.key`: {k:?} is not a column of the job"
                ));
            }
        }
        self.check_tests(columns)?;
        let cadence = self
            .cadence
            .as_deref()
            .map(|c| {
                crate::duration::parse_duration(c)
                    .map_err(|e| format!("key `expect.cadence`: {e}"))
                    .and_then(|d| {
                        if d.is_zero() {
                            Err("key `expect.cadence`: must be longer than zero".to_string())
                        } else {
                            Ok(d)
                        }
                    })
            })
            .transpose()?;
        // Duplicates are looked for when asked, or when a key or cadence
        // says what a series is; `empty_days` alone does not ask.
        let max_duplicates = self
            .max_duplicates
            .or((!self.key.is_empty() || cadence.is_some()).then_some(0));
        let publication_delay = match self.publication_delay.as_deref() {
            None => Duration::ZERO,
            Some(d) => crate::duration::parse_duration(d)
                .map_err(|e| format!("key `expect.publication_delay`: {e}"))?,
        };
        if self.publication_delay.is_some() && cadence.is_none() {
            return Err(
                "key `expect.publication_delay`: only slots of a cadence are delayed; set `expect.cadence` too"
                    .to_string(),
            );
        }
        Ok(Expect {
            key: self.key,
            cadence,
            publication_delay,
            max_gaps: self.max_gaps,
            max_duplicates,
            empty_days: self.empty_days.unwrap_or(if http {
                EmptyDays::Fail
            } else {
                EmptyDays::Protect
            }),
            not_null: self.not_null,
            regex: self.regex,
            expression: self.expression,
            sql: self.sql.0,
        })
    }

    /// The data tests: columns of the job, valid patterns, expressions
    /// that parse.
    fn check_tests(&self, columns: &[&str]) -> Result<(), String> {
        let column = |key: &str, c: &str| {
            if columns.contains(&c) || c == crate::pipeline::EVENT_TIME_COLUMN {
                Ok(())
            } else {
                Err(format!(
                    "key `expect.{key}`: {c:?} is not a column of the job"
                ))
            }
        };
        for n in &self.not_null {
            column("not_null", &n.column)?;
        }
        for (c, pattern) in &self.regex {
            column("regex", c)?;
            super::check_pattern(pattern).map_err(|e| format!("key `expect.regex.{c}`: {e}"))?;
        }
        for e in &self.expression {
            super::check_expression(e).map_err(|e| format!("key `expect.expression`: {e}"))?;
        }
        for test in &self.sql.0 {
            test.query_on("job.table")
                .map_err(|e| format!("key `expect.sql`: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_spacings() {
        assert_eq!(rate("5/s"), Ok(Duration::from_millis(200)));
        assert_eq!(rate("75/min"), Ok(Duration::from_millis(800)));
        assert!(rate("0/s").is_err());
        assert!(rate("5 per second").is_err());
    }
}
