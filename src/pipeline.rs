//! The pipeline definition: a TOML file with the catalog to write through
//! and one `[[job]]` table per ingest job.
//!
//! ```toml
//! [catalog]
//! uri = "http://127.0.0.1:8181"
//! credential = "${FLOE_CATALOG_CREDENTIAL}"   # client_id:secret (OAuth2), optional
//!
//! [[job]]
//! name = "demand"
//! table = "bronze.demand"
//! source = { path = "data/demand/{date}.csv", format = "csv" }
//! event_time = { kind = "period", date_column = "SETTLEMENT_DATE",
//!                period_column = "SETTLEMENT_PERIOD", zone = "Europe/London" }
//! columns = [
//!   { name = "site_id", type = "string", required = true },
//!   { name = "demand_mw", type = "double", from = "ND" },
//! ]
//! ```
//!
//! `${VAR}` (or `${VAR:-default}`) anywhere in the file is replaced by the
//! environment variable before parsing, so secrets stay out of the file.
//! Every error names the file and line, and the key where there is one.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::secret::{Redacted, Secret};

/// The event-time column every floe table is keyed and partitioned by.
pub const EVENT_TIME_COLUMN: &str = "ts_utc";
/// Default catalog URI (a local `floe catalog serve`).
pub const DEFAULT_CATALOG_URI: &str = "http://127.0.0.1:8181";

/// A parsed, validated pipeline file.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Where it was read from.
    pub path: PathBuf,
    /// The catalog settings.
    pub catalog: CatalogSettings,
    /// The jobs, in file order.
    pub jobs: Vec<Job>,
    /// Maintenance policy defaults.
    pub maintain: MaintainSettings,
    /// `[landing] location`: the raw landing zone of HTTP sources (a local
    /// folder, resolved against the pipeline file's folder, or `s3://...`);
    /// by default `raw/` at the warehouse root, beside the namespaces.
    pub landing: Option<String>,
    /// `[delta]`: the Delta tables' root and store options.
    pub delta: DeltaSettings,
    /// `[transform] models`: the SQL models folder (resolved against the
    /// pipeline file's folder).
    pub models_dir: Option<PathBuf>,
    /// `[transform] format`: the table format of models whose header does
    /// not name one.
    pub model_format: TableFormat,
    /// `[transform] engine`: the engine of models whose header does not
    /// name one.
    pub engine: Engine,
    /// `[engines.trino]`.
    pub trino: Option<TrinoSettings>,
}

/// `[maintain]`: the policy `floe maintain` applies to every table, unless
/// a table's properties say otherwise (`write.target-file-size-bytes`,
/// `floe.compact.min-input-files`, `history.expire.max-snapshot-age-ms`,
/// `history.expire.min-snapshots-to-keep`, `floe.orphans.older-than`,
/// `floe.maintain.enabled`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintainSettings {
    /// Compaction's output file size in bytes (default: the table's
    /// `write.target-file-size-bytes`, else 128 MiB).
    #[serde(default)]
    pub target_file_size: Option<u64>,
    /// Small files a partition needs before it is compacted (default 5).
    #[serde(default)]
    pub min_input_files: Option<usize>,
    /// Snapshots older than this are expired (default 5d).
    #[serde(default)]
    pub expire_older_than: Option<String>,
    /// Snapshots of `main` always kept (default 1).
    #[serde(default)]
    pub retain_last: Option<usize>,
    /// Unreferenced files older than this are deleted (default 3d).
    #[serde(default)]
    pub orphans_older_than: Option<String>,
    /// Who rewrites the small files floe decides to compact: `floe`
    /// (default) or `trino` (Trino's `optimize`, checked by floe after); a
    /// table's `floe.compact.engine` property overrides it.
    #[serde(default)]
    pub compact_engine: Option<CompactEngine>,
    /// The pipeline's `[engines.trino]` (not read from `[maintain]`).
    #[serde(skip)]
    pub trino: Option<TrinoSettings>,
}

/// Who rewrites a table's small files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CompactEngine {
    /// floe itself (the default).
    #[default]
    Floe,
    /// Trino's `ALTER TABLE ... EXECUTE optimize`, on the days floe picks.
    Trino,
}

/// How to reach the REST catalog and the object store behind it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// REST catalog URI.
    #[serde(default = "default_uri")]
    pub uri: String,
    /// Instead of `uri`: serve floe's catalog inside this process over a
    /// local-folder warehouse (relative to the pipeline file), for one-machine
    /// use with nothing else running. The pointer database is a SQLite file
    /// in that folder, so a `floe catalog serve` on it later sees the tables.
    #[serde(default)]
    pub embedded_warehouse: Option<String>,
    /// Warehouse name or location sent as `warehouse` to `/v1/config`.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Static bearer token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// OAuth2 client credentials, `client_id:client_secret`.
    #[serde(default)]
    pub credential: Option<Secret>,
    /// OAuth2 scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// Sign every request with AWS SigV4 (AWS S3 Tables, Glue, and
    /// S3-compatible servers with an embedded catalog); credentials come
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    #[serde(default)]
    pub sigv4: bool,
    /// SigV4 signing name (service): `s3tables`, `glue`, ... (default
    /// `execute-api`, as pyiceberg).
    #[serde(default)]
    pub signing_name: Option<String>,
    /// SigV4 signing region (default AWS_REGION, else us-east-1).
    #[serde(default)]
    pub signing_region: Option<String>,
    /// Object-store properties (`s3.endpoint`, `s3.path-style-access`, ...)
    /// merged over what the catalog hands out.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for CatalogSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogSettings")
            .field("uri", &self.uri)
            .field("embedded_warehouse", &self.embedded_warehouse)
            .field("warehouse", &self.warehouse)
            .field("token", &self.token)
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .field("sigv4", &self.sigv4)
            .field("signing_name", &self.signing_name)
            .field("signing_region", &self.signing_region)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

fn default_uri() -> String {
    DEFAULT_CATALOG_URI.to_string()
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            uri: default_uri(),
            embedded_warehouse: None,
            warehouse: None,
            token: None,
            credential: None,
            scope: None,
            sigv4: false,
            signing_name: None,
            signing_region: None,
            properties: BTreeMap::new(),
        }
    }
}

mod column_type;
mod data_tests;
mod source;

pub use column_type::{ColumnType, StructField};

pub use data_tests::{NotNull, SqlTest, SqlTests, check_expression, check_pattern};

pub use source::{
    Api, Auth, AvroSchemaSource, DatabaseSource, EmptyDays, EntryErrors, Expect, ForEachFrom,
    Format, HttpSource, KafkaRecords, KafkaSource, Pagination, Relation, Source, SourceConfig,
    check_for_each,
};

/// One column of the contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// Column name in the table.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// A record without a value for it is a reject.
    #[serde(default)]
    pub required: bool,
    /// Source field name, when it differs.
    #[serde(default)]
    pub from: Option<String>,
}

impl Column {
    /// The source field this column is read from.
    pub fn source_field(&self) -> &str {
        self.from.as_deref().unwrap_or(&self.name)
    }
}

/// The steps of a field path: `units[0].capacity` → `units`, `0`,
/// `capacity` (a plain name is one step).
pub fn path_segments(path: &str) -> Vec<&str> {
    path.split(['.', '[', ']'])
        .filter(|segment| !segment.is_empty())
        .collect()
}

/// How the event time of a record is derived.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventTimeConfig {
    /// A timestamp that carries its offset (RFC 3339).
    Offset {
        /// Source field.
        column: String,
    },
    /// A naive local timestamp in `zone`.
    Local {
        /// Source field.
        column: String,
        /// IANA zone, e.g. `Europe/London`.
        zone: ZoneName,
        /// strftime format; ISO shapes when absent.
        #[serde(default)]
        format: Option<String>,
    },
    /// Seconds since the epoch.
    EpochSeconds {
        /// Source field.
        column: String,
    },
    /// Milliseconds since the epoch.
    EpochMillis {
        /// Source field.
        column: String,
    },
    /// A calendar date (`YYYY-MM-DD`, e.g. a trading day), keyed at 00:00
    /// UTC of that date so that the row lands in that date's partition.
    Date {
        /// Source field.
        column: String,
    },
    /// A local date and a 1-based period of the day.
    Period {
        /// Source field with the date (`YYYY-MM-DD`).
        date_column: String,
        /// Source field with the period number.
        period_column: String,
        /// IANA zone of the calendar.
        zone: ZoneName,
        /// Period length in minutes.
        #[serde(default = "default_period_minutes")]
        minutes: u32,
    },
    /// No event time (`event_time` left out): reference data (a facilities
    /// list, a company overview), written to an unpartitioned table that
    /// each run replaces whole (or, `mode = "append"`, adds to).
    #[serde(skip)]
    Absent,
}

fn default_period_minutes() -> u32 {
    30
}

impl EventTimeConfig {
    /// The source fields the event time is computed from.
    pub fn source_fields(&self) -> Vec<&str> {
        match self {
            Self::Offset { column }
            | Self::Local { column, .. }
            | Self::EpochSeconds { column }
            | Self::EpochMillis { column }
            | Self::Date { column } => vec![column],
            Self::Period {
                date_column,
                period_column,
                ..
            } => vec![date_column, period_column],
            Self::Absent => Vec::new(),
        }
    }
}

/// A validated IANA time-zone name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ZoneName(pub Tz);

impl TryFrom<String> for ZoneName {
    type Error = String;

    fn try_from(value: String) -> std::result::Result<Self, String> {
        value.parse::<Tz>().map(ZoneName).map_err(|_| {
            format!("unknown time zone {value:?}; use an IANA name such as Europe/London")
        })
    }
}

/// How a run's rows meet the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// The run replaces the window's days (one `overwrite` snapshot).
    #[default]
    Overwrite,
    /// The run's rows are added to the table's (one `append` snapshot),
    /// once per run id: every run kept, told apart by `_ingest_time`.
    Append,
    /// Reference data with history (a slowly changing dimension, as dbt's
    /// snapshots): per `unique_key`, a changed row closes the current
    /// version (`_valid_to` = the run's time) and opens a new one
    /// (`_valid_from`); a key gone from the source is closed.
    Scd2,
    /// The run's rows replace the table's rows with the same `unique_key`,
    /// wherever they are, and the rest are kept (dlt's `merge`): the days
    /// holding a replaced row or a new one are rewritten, or the whole
    /// table when it has no event time.
    Merge,
}

/// What to do with source fields the contract does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaDrift {
    /// Fail the run, naming the field.
    #[default]
    Error,
    /// Add the field to the table as a new nullable column (type inferred
    /// from the data) before writing.
    Evolve,
    /// Ignore it.
    Ignore,
}

/// A partition field after `day(ts_utc)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionBy {
    /// The source column.
    pub column: String,
    /// `identity`, `bucket[N]` or `truncate[W]`.
    pub transform: iceberg::spec::Transform,
}

/// Parses `partition = ["day(ts_utc)", "region", "bucket(16, site_id)",
/// "truncate(4, code)"]`: `day(ts_utc)` first (floe replaces windows of
/// days), then identity, bucket or truncate fields.
fn parse_partition(fields: &[String]) -> std::result::Result<Vec<PartitionBy>, String> {
    use iceberg::spec::Transform;
    let day = format!("day({EVENT_TIME_COLUMN})");
    match fields.first() {
        None => return Ok(Vec::new()),
        Some(first) if first.replace(' ', "") == day => {}
        Some(first) => {
            return Err(format!(
                "the first field must be {day:?} (floe overwrites windows of days), not {first:?}"
            ));
        }
    }
    let mut out: Vec<PartitionBy> = Vec::new();
    for raw in &fields[1..] {
        let text = raw.replace(' ', "");
        let (transform, column) = match text.split_once('(') {
            None => (Transform::Identity, text.clone()),
            Some((name, rest)) => {
                let args = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("{raw:?}: missing `)`"))?;
                let parts: Vec<&str> = args.split(',').collect();
                let number = |n: &str| {
                    n.parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("{raw:?}: {n:?} is not a positive number"))
                };
                match (name, parts.as_slice()) {
                    ("identity", [c]) => (Transform::Identity, c.to_string()),
                    ("bucket", [n, c]) => (Transform::Bucket(number(n)?), c.to_string()),
                    ("truncate", [w, c]) => (Transform::Truncate(number(w)?), c.to_string()),
                    _ => {
                        return Err(format!(
                            "{raw:?}: expected a column, identity(col), bucket(N, col) or truncate(W, col)"
                        ));
                    }
                }
            }
        };
        if column == EVENT_TIME_COLUMN || out.iter().any(|p| p.column == column) {
            return Err(format!("{raw:?}: {column} is already partitioned on"));
        }
        out.push(PartitionBy { column, transform });
    }
    Ok(out)
}

/// One ingest job as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    table: String,
    #[serde(default)]
    catalog: Option<CatalogSettings>,
    source: source::RawSource,
    #[serde(default)]
    expect: Option<source::RawExpect>,
    #[serde(default)]
    event_time: Option<EventTimeConfig>,
    #[serde(default)]
    columns: Vec<Column>,
    #[serde(default)]
    sort: Vec<String>,
    #[serde(default)]
    partition: Option<Vec<String>>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    reject_threshold: f64,
    #[serde(default)]
    schema_drift: SchemaDrift,
    #[serde(default)]
    mode: Option<WriteMode>,
    #[serde(default)]
    unique_key: Vec<String>,
    #[serde(default)]
    format: Formats,
}

/// `format = "delta"`, or `format = ["iceberg", "delta"]` for both.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Value")]
enum Formats {
    One(TableFormat),
    Many(Vec<TableFormat>),
}

impl TryFrom<toml::Value> for Formats {
    type Error = String;

    fn try_from(value: toml::Value) -> std::result::Result<Self, String> {
        let one = |v: &toml::Value| match v.as_str() {
            Some("iceberg") => Ok(TableFormat::Iceberg),
            Some("delta") => Ok(TableFormat::Delta),
            _ => Err(format!(
                "format {v}: use \"iceberg\", \"delta\" or [\"iceberg\", \"delta\"] (both)"
            )),
        };
        match &value {
            toml::Value::Array(items) => Ok(Self::Many(
                items
                    .iter()
                    .map(one)
                    .collect::<std::result::Result<_, _>>()?,
            )),
            v => one(v).map(Self::One),
        }
    }
}

impl Default for Formats {
    fn default() -> Self {
        Self::One(TableFormat::Iceberg)
    }
}

/// The engine that computes a model's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// DataFusion, inside floe (the default).
    #[default]
    DataFusion,
    /// A Trino cluster (`[engines.trino]`): Trino computes the result and
    /// writes its files, floe plans, tests and publishes.
    Trino,
}

impl Engine {
    /// The name used in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::DataFusion => "datafusion",
            Engine::Trino => "trino",
        }
    }
}

/// `[engines.trino]`: the Trino coordinator models with `engine = "trino"`
/// run on. Its catalog must be the same REST catalog as `[catalog]`.
#[derive(Clone)]
pub struct TrinoSettings {
    /// The coordinator, `http://host:8080`.
    pub uri: String,
    /// The Trino catalog that is floe's REST catalog (default `iceberg`).
    pub catalog: String,
    /// The Trino user (default `floe`).
    pub user: String,
    /// A password (HTTP basic auth), e.g. `"${TRINO_PASSWORD}"`.
    pub password: Option<Secret>,
    /// A JWT (bearer auth), e.g. `"${TRINO_JWT}"`.
    pub token: Option<Secret>,
    /// How long one model's query may run before floe cancels it.
    pub query_timeout: std::time::Duration,
    /// Session properties sent with every query.
    pub session: BTreeMap<String, String>,
}

impl std::fmt::Debug for TrinoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrinoSettings")
            .field("uri", &self.uri)
            .field("catalog", &self.catalog)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("query_timeout", &self.query_timeout)
            .field("session", &self.session)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrino {
    uri: String,
    catalog: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    token: Option<Secret>,
    query_timeout: Option<String>,
    #[serde(default)]
    session: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngines {
    trino: Option<RawTrino>,
}

/// Default for `[engines.trino] query_timeout`.
const DEFAULT_TRINO_QUERY_TIMEOUT: &str = "6h";

impl RawTrino {
    fn validate(self, file: &str) -> Result<TrinoSettings> {
        let bad = |msg: String| Error::Config(format!("{file}: [engines.trino] {msg}"));
        let uri = self.uri.trim_end_matches('/').to_string();
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(bad(format!(
                "uri {uri:?} is not an http:// or https:// URL of a Trino coordinator"
            )));
        }
        let timeout = self
            .query_timeout
            .as_deref()
            .unwrap_or(DEFAULT_TRINO_QUERY_TIMEOUT);
        let query_timeout = crate::duration::parse_duration(timeout)
            .map_err(|e| bad(format!("query_timeout: {e}")))?;
        if self.password.is_some() && self.token.is_some() {
            return Err(bad("sets both password and token; use one".into()));
        }
        Ok(TrinoSettings {
            uri,
            catalog: self.catalog.unwrap_or_else(|| "iceberg".to_string()),
            user: self.user.unwrap_or_else(|| "floe".to_string()),
            password: self.password,
            token: self.token,
            query_timeout,
            session: self.session,
        })
    }
}

/// The table format a job or model writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    /// An Iceberg table through the REST catalog (the default).
    #[default]
    Iceberg,
    /// A Delta Lake table at `<[delta] location>/<namespace>/<table>`,
    /// partitioned by a `day` DATE column derived from its event time.
    Delta,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    #[serde(default)]
    catalog: CatalogSettings,
    #[serde(default)]
    maintain: MaintainSettings,
    #[serde(default)]
    transform: RawTransform,
    #[serde(default)]
    landing: RawLanding,
    #[serde(default)]
    delta: RawDelta,
    #[serde(default)]
    engines: RawEngines,
    #[serde(default, rename = "job")]
    jobs: Vec<RawJob>,
}

/// `[delta]`: where Delta tables live, and how to reach that store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelta {
    location: Option<String>,
    #[serde(default)]
    storage_options: BTreeMap<String, String>,
}

/// Where a pipeline's Delta tables live.
#[derive(Debug, Clone, Default)]
pub struct DeltaSettings {
    /// Root of the Delta tables (`s3://...`, `file://...` or an absolute
    /// folder); `None`: `delta/` in the embedded warehouse.
    pub location: Option<String>,
    /// object_store options (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...),
    /// over what floe derives from `[catalog] properties` and the AWS
    /// environment.
    pub storage_options: BTreeMap<String, String>,
}

/// `[landing]`: where HTTP sources land raw responses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLanding {
    location: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransform {
    models: Option<String>,
    #[serde(default)]
    format: TableFormat,
    #[serde(default)]
    engine: Engine,
}

/// A validated ingest job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique name within the pipeline.
    pub name: String,
    /// Target namespace levels.
    pub namespace: Vec<String>,
    /// Target table name.
    pub table: String,
    /// This job's catalog, when it differs from the pipeline's `[catalog]`.
    pub catalog: Option<CatalogSettings>,
    /// Source.
    pub source: Source,
    /// What the delivered rows must look like.
    pub expect: Expect,
    /// Source paths resolve against this folder (the pipeline file's).
    pub base_dir: PathBuf,
    /// Event-time derivation (lands in [`EVENT_TIME_COLUMN`]).
    pub event_time: EventTimeConfig,
    /// The contract's columns (besides `ts_utc` and the bronze columns).
    pub columns: Vec<Column>,
    /// Sort order within each data file.
    pub sort: Vec<String>,
    /// Partition fields after `day(ts_utc)` (set when the table is created).
    pub partition: Vec<PartitionBy>,
    /// Table properties set on creation.
    pub properties: BTreeMap<String, String>,
    /// Largest accepted fraction of rejected records (0 = none).
    pub reject_threshold: f64,
    /// Unknown source fields.
    pub schema_drift: SchemaDrift,
    /// Overwrite the window's days (default), append the run's rows, or
    /// keep reference data's history (`scd2`).
    pub mode: WriteMode,
    /// `mode = "scd2"`: the columns that name a row.
    pub unique_key: Vec<String>,
    /// Iceberg or Delta.
    pub format: TableFormat,
    /// The job writes both formats (`format = ["iceberg", "delta"]`, for a
    /// migration): this is one of its two halves, the Iceberg one run
    /// first.
    pub twin: bool,
}

impl Job {
    /// Every source field the job reads: its columns' and the event time's.
    pub fn source_fields(&self) -> HashSet<String> {
        let mut fields: HashSet<String> = self
            .columns
            .iter()
            .map(|c| c.source_field().to_string())
            .collect();
        // A path (`location.lat`) reads its first field.
        let roots: Vec<String> = fields
            .iter()
            .filter_map(|f| path_segments(f).first().map(|r| r.to_string()))
            .collect();
        fields.extend(roots);
        fields.extend(
            self.event_time
                .source_fields()
                .into_iter()
                .map(str::to_string),
        );
        // An API's `for_each` keys are request settings added to its
        // records, and its answer-level fields (Open-Meteo's latitude) are
        // added too: used when a column names them, never "unknown".
        // A database cursor is a setting of the read, not a column.
        if let Source::Database(d) = &self.source {
            fields.extend(d.cursor.iter().cloned());
        }
        if let Source::Http(h) = &self.source {
            fields.extend(h.for_each.iter().flat_map(|e| e.keys().cloned()));
            fields.extend(h.api.answer_fields().iter().map(|f| f.to_string()));
        }
        fields
    }

    /// Whether rows have an event time (`ts_utc`, day partitions, windows
    /// of days); a job without one writes reference data, replaced whole.
    pub fn has_event_time(&self) -> bool {
        self.event_time != EventTimeConfig::Absent
    }

    /// `namespace.table`.
    pub fn table_ident(&self) -> String {
        format!("{}.{}", self.namespace.join("."), self.table)
    }
}

/// Reads, interpolates, parses and validates a pipeline file.
///
/// # Errors
/// [`Error::Config`] naming the file, the line and the key.
pub fn load(path: &Path) -> Result<Pipeline> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!("cannot read pipeline file {}: {e}", path.display())).caused_by(e)
    })?;
    parse(&text, path)
}

/// Parses pipeline text read from `path` (used for messages and as the base
/// of relative source paths).
pub fn parse(text: &str, path: &Path) -> Result<Pipeline> {
    let file = path.display().to_string();
    let original = text;
    let text = interpolate_env(text, &file, |k| std::env::var(k).ok())?;
    let raw: RawPipeline =
        toml::from_str(&text).map_err(|e| toml_error(&e, &text, original, &file))?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut names = HashSet::new();
    let mut jobs = Vec::with_capacity(raw.jobs.len());
    for job in raw.jobs {
        let line = line_of(&text, job.name.span());
        let name = job.name.get_ref().clone();
        let at = |msg: String| Error::Config(format!("{file}:{line}: job {name:?}: {msg}"));
        if !names.insert(name.clone()) {
            return Err(at("another job has the same name".into()));
        }
        jobs.extend(validate(job, &base_dir).map_err(at)?);
    }
    let mut catalog = raw.catalog;
    if let Some(folder) = catalog.embedded_warehouse.take() {
        if catalog.uri != DEFAULT_CATALOG_URI {
            return Err(Error::Config(format!(
                "{file}: [catalog] sets both uri and embedded_warehouse; use one"
            )));
        }
        catalog.embedded_warehouse = Some(absolute_or_uri(&base_dir, folder));
    }
    for (key, value) in [
        ("expire_older_than", &raw.maintain.expire_older_than),
        ("orphans_older_than", &raw.maintain.orphans_older_than),
    ] {
        if let Some(v) = value {
            crate::duration::parse_duration(v).map_err(|e| {
                Error::Config(format!("{file}: [maintain] key `{key}`: {e}")).caused_by(e)
            })?;
        }
    }
    let trino = raw.engines.trino.map(|t| t.validate(&file)).transpose()?;
    if raw.transform.engine == Engine::Trino && trino.is_none() {
        return Err(Error::Config(format!(
            "{file}: [transform] engine = \"trino\" needs [engines.trino] uri = \"http://...\""
        )));
    }
    // Credentials in the file are hidden from every log line from now on.
    crate::secret::remember_properties(catalog.properties.iter());
    crate::secret::remember_properties(raw.delta.storage_options.iter());
    let mut maintain = raw.maintain;
    maintain.trino = trino.clone();
    Ok(Pipeline {
        path: path.to_path_buf(),
        catalog,
        jobs,
        maintain,
        delta: DeltaSettings {
            location: raw.delta.location.map(|l| absolute_or_uri(&base_dir, l)),
            storage_options: raw.delta.storage_options,
        },
        landing: raw.landing.location.map(|l| absolute_or_uri(&base_dir, l)),
        models_dir: raw.transform.models.map(|m| base_dir.join(m)),
        model_format: raw.transform.format,
        engine: raw.transform.engine,
        trino,
    })
}

/// The job (two jobs, Iceberg first, for `format = ["iceberg", "delta"]`).
fn validate(job: RawJob, base_dir: &Path) -> std::result::Result<Vec<Job>, String> {
    let formats = match &job.format {
        Formats::One(f) => vec![*f],
        Formats::Many(list) => {
            let mut unique = list.clone();
            unique.sort_by_key(|f| *f == TableFormat::Delta);
            unique.dedup();
            if unique.is_empty() {
                return Err("key `format`: name \"iceberg\", \"delta\" or both".into());
            }
            unique
        }
    };
    let twin = formats.len() > 1;
    let mut out = Vec::with_capacity(formats.len());
    for format in formats {
        let mut one = validate_one(&job, format, base_dir)?;
        one.twin = twin;
        out.push(one);
    }
    Ok(out)
}

fn validate_one(
    job: &RawJob,
    format: TableFormat,
    base_dir: &Path,
) -> std::result::Result<Job, String> {
    let job = job.clone();
    let mut parts: Vec<String> = job.table.split('.').map(str::to_string).collect();
    let table = parts.pop().unwrap_or_default();
    if parts.is_empty() || parts.iter().chain([&table]).any(|p| p.is_empty()) {
        return Err(format!(
            "key `table`: {:?} must be namespace.table (e.g. bronze.demand)",
            job.table
        ));
    }
    let seen = column_names(&job.columns)?;
    for s in &job.sort {
        if s != EVENT_TIME_COLUMN && !seen.contains(s.as_str()) {
            return Err(format!("key `sort`: {s:?} is not a column of the job"));
        }
    }
    let partition = parse_partition(job.partition.as_deref().unwrap_or_default())
        .map_err(|e| format!("key `partition`: {e}"))?;
    if let Some(p) = partition.iter().find(|p| !seen.contains(p.column.as_str())) {
        return Err(format!(
            "key `partition`: {:?} is not a column of the job",
            p.column
        ));
    }
    if !(0.0..=1.0).contains(&job.reject_threshold) {
        return Err(format!(
            "key `reject_threshold`: {} must be a fraction between 0 and 1",
            job.reject_threshold
        ));
    }
    let event_time = job.event_time.unwrap_or(EventTimeConfig::Absent);
    let mut source = job.source.validate()?;
    let names: Vec<&str> = job.columns.iter().map(|c| c.name.as_str()).collect();
    let expect =
        source::RawExpect::validate(job.expect, &names, matches!(source, Source::Http(_)))?;
    check_event_time(&event_time, &partition, &expect)?;
    let mode = match &source {
        Source::Kafka(_) => check_kafka(job.mode, format, &expect)?,
        _ => job.mode.unwrap_or_default(),
    };
    check_scd2((mode, &job.unique_key), &event_time, &seen)?;
    check_database(mode, &mut source, &job.unique_key)?;
    if mode == WriteMode::Scd2
        && matches!(&source, Source::Http(h) if h.on_entry_error == EntryErrors::Skip)
    {
        // A skipped entry's key would read as gone, closing its version.
        return Err(
            "key `source.on_entry_error`: \"skip\" is not for mode = \"scd2\": a skipped entry would read as removed; keep \"fail\""
                .into(),
        );
    }
    if format == TableFormat::Delta {
        if job.schema_drift == SchemaDrift::Evolve {
            return Err("key `schema_drift`: \"evolve\" is for Iceberg tables; a Delta job takes \"error\" or \"ignore\"".into());
        }
        if !partition.is_empty() {
            return Err(
                "key `partition`: a Delta table is partitioned by its `day` column only".into(),
            );
        }
        if mode == WriteMode::Merge {
            return Err(
                "key `mode`: \"merge\" is for Iceberg tables (format = \"iceberg\")".into(),
            );
        }
    }
    if job
        .catalog
        .as_ref()
        .is_some_and(|c| c.embedded_warehouse.is_some())
    {
        return Err("key `catalog.embedded_warehouse`: an embedded catalog is set for the whole pipeline, in [catalog]".into());
    }
    Ok(Job {
        name: job.name.into_inner(),
        namespace: parts,
        table,
        catalog: job.catalog,
        source,
        expect,
        base_dir: base_dir.to_path_buf(),
        event_time,
        partition,
        columns: job.columns,
        sort: job.sort,
        properties: job.properties,
        reject_threshold: job.reject_threshold,
        schema_drift: job.schema_drift,
        mode,
        unique_key: job.unique_key,
        format,
        twin: false,
    })
}

/// A Kafka job appends (a stream has no window to replace), writes
/// Iceberg (its offsets live in the snapshot summary) and checks no
/// window-wide expectation: its rows land on their own days, whatever the
/// run's window.
fn check_kafka(
    mode: Option<WriteMode>,
    format: TableFormat,
    expect: &source::Expect,
) -> std::result::Result<WriteMode, String> {
    if let Some(m @ (WriteMode::Overwrite | WriteMode::Scd2)) = mode {
        let name = if m == WriteMode::Scd2 {
            "scd2"
        } else {
            "overwrite"
        };
        return Err(format!(
            "key `mode`: \"{name}\" is not for a Kafka source: a topic is a stream whose records are appended once each (mode = \"append\", the default for Kafka jobs)"
        ));
    }
    if format == TableFormat::Delta {
        return Err("key `format`: a Kafka source writes Iceberg tables only (its offsets are committed in the Iceberg snapshot with the rows)".into());
    }
    if expect.cadence.is_some() || expect.empty_days != EmptyDays::Protect {
        return Err("keys `expect.cadence` and `expect.empty_days` are about the run's window, which a Kafka job does not read by; its rows land on their own days".into());
    }
    Ok(WriteMode::Append)
}

/// The job's column names, each once, none of floe's own.
fn column_names(columns: &[Column]) -> std::result::Result<HashSet<&str>, String> {
    let mut seen = HashSet::new();
    for c in columns {
        if c.name == EVENT_TIME_COLUMN || c.name.starts_with('_') {
            return Err(format!(
                "key `columns`: {:?} is reserved ({EVENT_TIME_COLUMN} and names starting with '_' are floe's)",
                c.name
            ));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(format!("key `columns`: {:?} appears twice", c.name));
        }
    }
    Ok(seen)
}

/// `mode = "scd2"` keeps history of reference data: no event time, and a
/// `unique_key` of the job's columns (only there).
fn check_scd2(
    (mode, unique_key): (WriteMode, &[String]),
    event_time: &EventTimeConfig,
    columns: &HashSet<&str>,
) -> std::result::Result<(), String> {
    if mode == WriteMode::Merge {
        if unique_key.is_empty() {
            return Err("key `unique_key`: mode = \"merge\" needs the columns that name a row, e.g. unique_key = [\"id\"]".into());
        }
        if let Some(k) = unique_key.iter().find(|k| !columns.contains(k.as_str())) {
            return Err(format!(
                "key `unique_key`: {k:?} is not a column of the job"
            ));
        }
        return Ok(());
    }
    if mode != WriteMode::Scd2 {
        if !unique_key.is_empty() {
            return Err("key `unique_key`: is for mode = \"scd2\" or \"merge\"".into());
        }
        return Ok(());
    }
    if *event_time != EventTimeConfig::Absent {
        return Err(
            "key `mode`: \"scd2\" keeps the history of reference data, a job without event_time"
                .into(),
        );
    }
    if unique_key.is_empty() {
        return Err("key `unique_key`: mode = \"scd2\" needs the columns that name a row, e.g. unique_key = [\"code\"]".into());
    }
    if let Some(k) = unique_key.iter().find(|k| !columns.contains(k.as_str())) {
        return Err(format!(
            "key `unique_key`: {k:?} is not a column of the job"
        ));
    }
    Ok(())
}

/// A database `cursor` reads only rows past the last run's, so the rows it
/// brings must be merged by key (a changed row comes back).
fn check_database(
    mode: WriteMode,
    source: &mut Source,
    unique_key: &[String],
) -> std::result::Result<(), String> {
    let Source::Database(d) = source else {
        return Ok(());
    };
    if d.cursor.is_some() && mode != WriteMode::Merge {
        return Err(
            "key `source.cursor`: reads only the rows changed since the last run, which land by key: set mode = \"merge\" and unique_key".into(),
        );
    }
    if d.parallel > 1 && d.split_by.is_none() {
        match unique_key {
            [key] => d.split_by = Some(key.clone()),
            _ => {
                return Err(format!(
                    "key `source.split_by`: parallel = {} splits the rows by ranges of an integer column (a serial id); name it with split_by = \"id\"",
                    d.parallel
                ));
            }
        }
    }
    Ok(())
}

/// What the event time allows: periods that divide a day; without one, no
/// partitioning and no cadence (reference data has no time series).
fn check_event_time(
    event_time: &EventTimeConfig,
    partition: &[PartitionBy],
    expect: &Expect,
) -> std::result::Result<(), String> {
    if *event_time == EventTimeConfig::Absent && !partition.is_empty() {
        return Err(
            "key `partition`: a job without event_time writes an unpartitioned table, replaced whole; partition it by adding an event_time"
                .into(),
        );
    }
    if *event_time == EventTimeConfig::Absent && expect.cadence.is_some() {
        return Err(
            "key `expect.cadence`: a job without event_time has no time series to check".into(),
        );
    }
    if let EventTimeConfig::Period { minutes, .. } = event_time
        && (*minutes == 0 || 1440 % minutes != 0)
    {
        return Err(format!(
            "key `event_time.minutes`: {minutes} must divide a day (e.g. 30)"
        ));
    }
    Ok(())
}

/// A URI as it is; a relative folder resolved against `base_dir`.
fn absolute_or_uri(base_dir: &Path, l: String) -> String {
    if l.contains("://") || Path::new(&l).is_absolute() {
        return l;
    }
    let joined = base_dir.join(&l);
    std::path::absolute(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text.get(..span.start)
        .map_or(0, |t| t.matches('\n').count())
        + 1
}

/// A TOML error of the interpolated text, told with the file's own line
/// (its `${VAR}` placeholders, never the values put in their place).
fn toml_error(e: &toml::de::Error, text: &str, original: &str, file: &str) -> Error {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            // Values go in on one line each (newlines escaped), so line
            // numbers are the file's.
            let line = line_of(text, span.clone());
            let column = text
                .get(..span.start)
                .map_or(0, |t| t.len() - t.rfind('\n').map_or(0, |i| i + 1))
                + 1;
            let shown = original.lines().nth(line - 1).unwrap_or_default().trim();
            Error::Config(format!(
                "{file}: TOML parse error at line {line}, column {column}: {message} (in `{shown}`)"
            ))
        }
        None => Error::Config(format!("{file}: {message}")),
    }
}

/// Where a `${` stands in TOML text: inside a basic ("...") string, a
/// literal ('...') string, or outside strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoted {
    Basic,
    Literal,
    No,
}

/// The string context at the end of `text` (single-line strings and
/// comments; multi-line strings count as their quote kind).
fn quoted_at_end(text: &str) -> Quoted {
    let mut state = Quoted::No;
    let mut chars = text.chars().peekable();
    let mut comment = false;
    while let Some(c) = chars.next() {
        match (state, c) {
            (_, '\n') if comment => comment = false,
            _ if comment => {}
            (Quoted::No, '#') => comment = true,
            (Quoted::No, '"') => state = Quoted::Basic,
            (Quoted::No, '\'') => state = Quoted::Literal,
            (Quoted::Basic, '\\') => {
                chars.next();
            }
            (Quoted::Basic, '"') | (Quoted::Literal, '\'') => state = Quoted::No,
            _ => {}
        }
    }
    state
}

/// `value` as it goes into TOML text at a place quoted as `q`: escaped in a
/// basic string; refused in a literal string when it holds what cannot be
/// written there (the error names the variable, never the value).
fn escaped(value: &str, q: Quoted, name: &str, at: &str) -> Result<String> {
    match q {
        Quoted::Basic => Ok(value
            .chars()
            .map(|c| match c {
                '\\' => "\\\\".to_string(),
                '"' => "\\\"".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                c if c.is_control() => format!("\\u{:04X}", u32::from(c)),
                c => c.to_string(),
            })
            .collect()),
        Quoted::Literal if value.contains(['\'', '\n', '\r']) => Err(Error::Config(format!(
            "{at}: the value of {name} cannot go in a '...' string (it holds a quote or a line break); write \"${{{name}}}\" instead"
        ))),
        Quoted::Literal | Quoted::No => Ok(value.to_string()),
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` with environment values,
/// escaped for where they stand (see [`escaped`]). Values of variables
/// whose names say they hold a credential are remembered as secrets.
fn interpolate_env(
    text: &str,
    file: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let line = line_of(text, consumed + start..consumed + start);
        let end = after.find('}').ok_or_else(|| {
            Error::Config(format!("{file}:{line}: unterminated ${{ (write ${{NAME}})"))
        })?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::Config(format!(
                "{file}:{line}: invalid environment reference ${{{inner}}}"
            )));
        }
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(value) => {
                if crate::secret::is_secret_key(name) {
                    crate::secret::remember_secret(&value);
                }
                let at = format!("{file}:{line}");
                let q = quoted_at_end(&text[..consumed + start]);
                out.push_str(&escaped(&value, q, name, &at)?);
            }
            None => {
                return Err(Error::Config(format!(
                    "{file}:{line}: environment variable {name} is not set (used as ${{{name}}})"
                )));
            }
        }
        let advance = start + 2 + end + 1;
        consumed += advance;
        rest = &rest[advance..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[catalog]
uri = "http://127.0.0.1:9999"

[[job]]
name = "demand"
table = "bronze.demand"
source = { path = "data/{date}.csv", format = "csv" }
event_time = { kind = "period", date_column = "SETTLEMENT_DATE", period_column = "SETTLEMENT_PERIOD", zone = "Europe/London" }
columns = [
  { name = "site_id", type = "string", required = true },
  { name = "demand_mw", type = "double", from = "ND" },
]
sort = ["site_id", "ts_utc"]
reject_threshold = 0.01
"#;

    fn parse_str(text: &str) -> Result<Pipeline> {
        parse(text, Path::new("/etc/floe/pipeline.toml"))
    }

    fn config_error(text: &str) -> String {
        match parse_str(text).as_ref().map_err(Error::kind) {
            Err(Error::Config(msg)) => msg.clone(),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_job_may_write_both_formats() {
        let both = GOOD.replace(
            "reject_threshold = 0.01",
            "reject_threshold = 0.01\nformat = [\"delta\", \"iceberg\"]",
        );
        let p = parse_str(&both).expect("parses");
        let halves: Vec<(TableFormat, bool, &str)> = p
            .jobs
            .iter()
            .map(|j| (j.format, j.twin, j.name.as_str()))
            .collect();
        assert_eq!(
            halves,
            [
                (TableFormat::Iceberg, true, "demand"),
                (TableFormat::Delta, true, "demand")
            ],
            "Iceberg first, whatever the order written"
        );
        let one = parse_str(&GOOD.replace(
            "reject_threshold = 0.01",
            "reject_threshold = 0.01\nformat = \"delta\"",
        ))
        .expect("parses");
        assert_eq!(one.jobs.len(), 1);
        assert!(!one.jobs[0].twin);
        let bad = config_error(&GOOD.replace(
            "reject_threshold = 0.01",
            "reject_threshold = 0.01\nformat = \"parquet\"",
        ));
        assert!(
            bad.contains("\"parquet\"") && bad.contains("[\"iceberg\", \"delta\"]"),
            "{bad}"
        );
        let evolve = config_error(&GOOD.replace(
            "reject_threshold = 0.01",
            "reject_threshold = 0.01\nformat = [\"iceberg\", \"delta\"]\nschema_drift = \"evolve\"",
        ));
        assert!(evolve.contains("schema_drift"), "{evolve}");
    }

    #[test]
    fn parallel_database_reads_split_the_unique_key_or_a_named_column() -> Result<()> {
        let db = |extra: &str, job_extra: &str| {
            GOOD.replace(
                "source = { path = \"data/{date}.csv\", format = \"csv\" }",
                &format!("source = {{ database = \"postgres://app@127.0.0.1/shop\", table = \"orders\"{extra} }}{job_extra}"),
            )
        };
        let split = |p: &Pipeline| match &p.jobs[0].source {
            Source::Database(d) => (d.parallel, d.split_by.clone()),
            other => panic!("not a database source: {other:?}"),
        };
        assert_eq!(split(&parse_str(&db("", ""))?), (1, None));
        let keyed = db(
            ", parallel = 4",
            "\nunique_key = [\"site_id\"]\nmode = \"merge\"",
        );
        assert_eq!(split(&parse_str(&keyed)?), (4, Some("site_id".into())));
        let named = db(", parallel = 2, split_by = \"order_id\"", "");
        assert_eq!(split(&parse_str(&named)?), (2, Some("order_id".into())));
        assert!(config_error(&db(", parallel = 4", "")).contains("split_by"));
        assert!(config_error(&db(", parallel = 0", "")).contains("between 1 and 64"));
        assert!(config_error(&db(", timestamp_field = \"t\"", "")).contains("Kafka"));
        Ok(())
    }

    #[test]
    fn parses_a_job() -> Result<()> {
        let p = parse_str(GOOD)?;
        assert_eq!(p.catalog.uri, "http://127.0.0.1:9999");
        let job = &p.jobs[0];
        assert_eq!(job.namespace, ["bronze"]);
        assert_eq!(job.table, "demand");
        assert_eq!(job.columns[1].source_field(), "ND");
        assert_eq!(job.base_dir, Path::new("/etc/floe"));
        assert!(matches!(
            job.event_time,
            EventTimeConfig::Period {
                minutes: 30,
                zone: ZoneName(chrono_tz::Europe::London),
                ..
            }
        ));
        Ok(())
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let msg = config_error(&GOOD.replace("Europe/London", "Europe/Lndn"));
        assert!(
            msg.contains("/etc/floe/pipeline.toml") && msg.contains("line 9"),
            "{msg}"
        );
        assert!(msg.contains("unknown time zone"), "{msg}");
        let msg = config_error(&GOOD.replace("\"bronze.demand\"", "\"demand\""));
        assert!(
            msg.contains("pipeline.toml:6: job \"demand\": key `table`"),
            "{msg}"
        );
        let msg = config_error(&GOOD.replace("sort = [\"site_id\"", "sort = [\"nope\""));
        assert!(msg.contains("key `sort`") && msg.contains("nope"), "{msg}");
        let msg = config_error(&GOOD.replace("type = \"double\"", "type = \"decimal\""));
        assert!(msg.contains("line 12") && msg.contains("decimal"), "{msg}");
        let msg = config_error(&GOOD.replace("reject_threshold", "reject_treshold"));
        assert!(msg.contains("reject_treshold"), "{msg}");
    }

    #[test]
    fn local_folders_of_a_relative_pipeline_path_become_absolute() -> Result<()> {
        // A Delta table URL is built from these: a relative folder would
        // make `file://wh/...`, which names a host, not a folder.
        let text = "[catalog]\nembedded_warehouse = \"wh\"\n[landing]\nlocation = \"raw\"\n[delta]\nlocation = \"d\"\n";
        let p = parse(text, Path::new("floe.toml"))?;
        let folders = [
            p.catalog.embedded_warehouse.unwrap_or_default(),
            p.landing.unwrap_or_default(),
            p.delta.location.unwrap_or_default(),
        ];
        for f in folders {
            assert!(Path::new(&f).is_absolute(), "{f}");
        }
        Ok(())
    }

    #[test]
    fn interpolates_environment_variables() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        let out = interpolate_env("a = \"${TOKEN}\"\nb = \"${MISSING:-x}\"", "f", env);
        assert_eq!(out.ok().as_deref(), Some("a = \"s3cret\"\nb = \"x\""));
        let err = interpolate_env("\n\nc = \"${MISSING}\"", "f.toml", env);
        assert!(
            matches!(err.as_ref().map_err(Error::kind), Err(Error::Config(m)) if m.contains("f.toml:3") && m.contains("MISSING")),
            "{err:?}"
        );
        assert!(interpolate_env("${bad name}", "f", env).is_err());
        // A value with quotes and backslashes stays one string value; in a
        // literal string it is refused without being shown.
        let tricky = |k: &str| (k == "API_KEY").then(|| "a\"b\\c".to_string());
        let out = interpolate_env("k = \"${API_KEY}\" # ${API_KEY}", "f", tricky).expect("escaped");
        let parsed: toml::Table = toml::from_str(&out).expect("still TOML");
        assert_eq!(parsed["k"].as_str(), Some("a\"b\\c"));
        let err = interpolate_env("k = '${API_KEY}'", "f", |_| Some("x'y".to_string()))
            .expect_err("a quote in a literal string")
            .to_string();
        assert!(err.contains("API_KEY") && !err.contains("x'y"), "{err}");
        // A parse error on a line with a substituted secret shows the
        // placeholder, not the value.
        let original = "[catalog]\ntoken = \"${TOKEN}\" oops\n";
        let text = interpolate_env(original, "f", |_| Some("s3cr3t-value".into())).expect("text");
        let e = toml::from_str::<toml::Table>(&text).expect_err("bad TOML");
        let msg = toml_error(&e, &text, original, "f.toml").to_string();
        assert!(
            msg.contains("${TOKEN}") && !msg.contains("s3cr3t-value"),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "{msg}");
        assert!(interpolate_env("${UNCLOSED", "f", env).is_err());
    }
}
