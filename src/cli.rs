//! Command-line definitions (clap structs only; no behaviour).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// floe: land external data in Iceberg tables, transform it with SQL,
/// and keep the tables healthy, from one binary.
#[derive(Debug, Parser)]
#[command(name = "floe", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FLOE_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// floe's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Land files and API responses in day-partitioned Iceberg (or Delta)
    /// tables for a window of days.
    ///
    /// Each job of the pipeline file reads its source for the window (files,
    /// or an HTTP API whose responses are first stored in the raw landing
    /// zone), converts every record to the table's types with a UTC event
    /// time (ts_utc), and commits ONE overwrite that replaces exactly the
    /// window's day partitions: re-running a window never duplicates rows.
    /// Records that do not convert go to <table>__rejects with their reason;
    /// past the job's reject_threshold, or when [job.expect] finds gaps,
    /// duplicates or empty days, nothing is committed and floe exits with
    /// code 1. A job with mode = "append" adds its rows instead; one with
    /// mode = "merge" and unique_key replaces the table's rows with the same
    /// key, rewriting only the days they touch; one without event_time
    /// replaces its whole (unpartitioned) table. With
    /// on_entry_error = "skip", failing for_each entries are skipped, their
    /// rows kept, and floe exits with code 3 (partial).
    ///
    /// A database job (source = { database = "postgres://..." or
    /// "mysql://...", table or query, password_env }) reads the window's
    /// days in one consistent snapshot; with cursor = "updated_at" and
    /// mode = "merge", only the rows changed since the last commit.
    ///
    /// A Kafka job (source = { kafka = "host:port", topic = "..." }) is
    /// not windowed: it appends every record after the offsets its table
    /// recorded, up to each partition's end offset at the start of the run,
    /// on the records' own days, and commits the new offsets in the same
    /// snapshot (exactly once; --from/--to/--days do not filter it).
    /// With --follow it keeps running, one such commit every --commit-every,
    /// until SIGTERM. With parallel = N, a database job reads N key ranges
    /// at once, all in one snapshot.
    Ingest(IngestArgs),
    /// Rewrite small data files into files of the target size (a `replace`
    /// snapshot; readers see the same rows).
    ///
    /// Per partition, files below the small-file size (75% of the target)
    /// are rewritten when there are at least --min-input-files of them, or
    /// when delete files apply to them (the deletes are applied). Memory
    /// stays bounded whatever the table size; work is committed in batches,
    /// so an interrupted run keeps what it committed. A group whose input
    /// files a concurrent writer replaced is dropped, never committed.
    ///
    /// A table a pipeline job writes with format = "delta" is optimized
    /// instead (delta-rs bin-packing per day partition, dataChange = false).
    Compact(CompactArgs),
    /// Remove old snapshots from a table's metadata and delete the files
    /// only they referenced.
    ///
    /// Kept: every branch and tag head, the last --retain-last snapshots of
    /// main, snapshots newer than --older-than, and the newest run record of
    /// each ingest job (retried runs rely on it).
    ///
    /// A Delta table (a pipeline job with format = "delta") is checkpointed,
    /// its expired log entries dropped, and the files its log removed more
    /// than --older-than ago (default 7 days) vacuumed.
    ExpireSnapshots(ExpireArgs),
    /// Delete files under a table's location that no metadata references
    /// and that are older than --older-than (left by killed runs).
    ///
    /// For a Delta table: a full vacuum (default 7 days; Delta refuses less
    /// than the table's deleted-file retention).
    RemoveOrphans(OrphanArgs),
    /// Table health: snapshots, metadata size, data files and bytes,
    /// small-file ratio, files per partition, orphan candidates.
    Status(StatusArgs),
    /// The one cron entry point: compact, expire and remove orphans where
    /// each table's policy says it is due, and report.
    ///
    /// The policy comes from the pipeline's [maintain] section and each
    /// table's properties (write.target-file-size-bytes,
    /// floe.compact.min-input-files, history.expire.max-snapshot-age-ms,
    /// history.expire.min-snapshots-to-keep, floe.orphans.older-than,
    /// floe.maintain.enabled=false to skip). Exits 2 when any table failed.
    Maintain(MaintainArgs),
    /// Run the SQL models (sql/<layer>/<name>.sql) into Iceberg tables
    /// <layer>.<name>, tested before they are published.
    ///
    /// Models run in dependency order (from the tables each query reads).
    /// By default a model recomputes only what changed since its last run:
    /// the changed days of day-partitioned inputs (incremental models), or
    /// everything (materialized = "table", or inputs not partitioned by
    /// day); nothing when no input changed. Each result is staged on an
    /// audit branch, its data tests run there, and the models of a layer
    /// that pass are published together in one multi-table commit. A failing
    /// test leaves the table's main branch untouched, skips the models that
    /// read it, and exits with code 1.
    Transform(TransformArgs),
    /// Ingest a window, then transform what it changed: the whole pipeline.
    ///
    /// Runs every ingest job of the pipeline for the window, then every
    /// model (incrementally: the re-ingested days flow downstream), and
    /// prints the first rows of the last layer's tables (gold in the
    /// example) and where they are.
    Run(RunArgs),
    /// The Iceberg REST catalog server that floe ships.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// List, describe or drop tables (the catalog's, and the pipeline's
    /// Delta tables).
    Table(TableArgs),
}

/// `floe table ...`.
#[derive(Debug, Args)]
pub struct TableArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TableCommand,
}

/// The `floe table` verbs.
#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Every table of the catalog (and the pipeline's Delta tables), with
    /// its format.
    List(TableListArgs),
    /// A table's location, columns, partitioning, sort order, properties
    /// and current snapshot (rows, files, the run that wrote it).
    Describe(TableDescribeArgs),
    /// Remove a table from the catalog. Without --purge its files stay
    /// where they are (and can be registered again); with --purge the
    /// catalog deletes them too. A Delta table has no catalog entry: it is
    /// dropped only with --purge, which deletes its folder's files.
    Drop(TableDropArgs),
}

/// Flags of `floe table list`.
#[derive(Debug, Args)]
pub struct TableListArgs {
    /// Only the tables of this namespace (and the namespaces below it).
    pub namespace: Option<String>,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe table describe`.
#[derive(Debug, Args)]
pub struct TableDescribeArgs {
    /// The table, namespace.name.
    pub table: String,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe table drop`.
#[derive(Debug, Args)]
pub struct TableDropArgs {
    /// The table, namespace.name.
    pub table: String,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Delete the table's files too (data, manifests, metadata).
    #[arg(long)]
    pub purge: bool,
}

/// Which models to run and how (shared by `transform` and `run`).
#[derive(Debug, Args)]
pub struct ModelFlags {
    /// Models to run: NAME (layer.name, or name when unique), NAME+ (and
    /// every model downstream), +NAME (and every model upstream).
    /// Repeatable; default: every model.
    #[arg(long = "select", short = 's', value_name = "MODEL")]
    pub select: Vec<String>,

    /// The models folder (default: the pipeline's [transform] models, else
    /// ./sql).
    #[arg(long, value_name = "DIR")]
    pub models: Option<PathBuf>,

    /// Independent models run at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// The engine of models whose header names none, over the pipeline's
    /// [transform] engine: datafusion (inside floe) or trino (the
    /// pipeline's [engines.trino] coordinator computes and writes the
    /// result; floe still plans, tests and publishes it).
    #[arg(long, value_name = "ENGINE", value_parser = ["datafusion", "trino"])]
    pub engine: Option<String>,
}

/// Flags of `floe transform`.
#[derive(Debug, Args)]
pub struct TransformArgs {
    #[command(flatten)]
    pub catalog: CatalogArgs,

    #[command(flatten)]
    pub models: ModelFlags,

    /// Recompute the days from this one (YYYY-MM-DD, UTC) whatever changed
    /// (incremental models; "table" models are recomputed whole).
    #[arg(long, requires = "to")]
    pub from: Option<chrono::NaiveDate>,

    /// Last day to recompute, inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,

    /// Print what each model would recompute, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Write a JSON report (per model: refresh, days, rows, files, tests,
    /// snapshot, duration) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Run id (audit branch names and snapshot summaries).
    #[arg(long, env = "FLOE_RUN_ID")]
    pub run_id: Option<String>,
}

/// The days an ingest covers.
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// First day of the window (YYYY-MM-DD, UTC).
    #[arg(long, requires = "to", conflicts_with = "days")]
    pub from: Option<chrono::NaiveDate>,

    /// Last day of the window, inclusive (YYYY-MM-DD, UTC).
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,

    /// The last N days, ending yesterday (UTC); the default is 1. (Kafka
    /// jobs are not windowed: they read up to the topic's end.)
    #[arg(long)]
    pub days: Option<u32>,
}

/// Flags of `floe run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline definition (TOML): jobs, catalog and [transform] models.
    #[arg(long, short, default_value = "floe.toml", env = "FLOE_PIPELINE")]
    pub pipeline: PathBuf,

    #[command(flatten)]
    pub window: WindowArgs,

    #[command(flatten)]
    pub models: ModelFlags,

    /// HTTP API jobs: ingest from the raw responses landed earlier instead
    /// of calling the APIs (see `floe ingest --replay`).
    #[arg(long)]
    pub replay: bool,

    /// Let this run empty days of the window that get no rows from the
    /// source, deleting what they held (as `empty_days = "allow"` for every
    /// job). Without it, a day that holds rows and gets none stops the run.
    #[arg(long)]
    pub allow_empty: bool,

    /// Write a JSON report of the ingest jobs and the models to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Run id (snapshot summaries; a retried ingest detects its commit).
    #[arg(long, env = "FLOE_RUN_ID")]
    pub run_id: Option<String>,
}

/// Which catalog a maintenance command works through.
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Pipeline file whose [catalog] (and [maintain]) to use.
    #[arg(long, short, default_value = "floe.toml", env = "FLOE_PIPELINE")]
    pub pipeline: PathBuf,

    /// REST catalog URI instead of the pipeline's (token or client
    /// credentials from FLOE_CATALOG_TOKEN / FLOE_CATALOG_CREDENTIAL).
    #[arg(long, env = "FLOE_CATALOG_URI")]
    pub catalog: Option<String>,
}

/// Flags of `floe compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// The table, namespace.name.
    pub table: String,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Only files that may hold rows matching this (comparisons joined by
    /// AND, e.g. "ts_utc >= '2024-03-01' AND site_id = 'A'").
    #[arg(long = "where", value_name = "PREDICATE")]
    pub filter: Option<String>,

    /// First day (UTC) of ts_utc to compact.
    #[arg(long, requires = "to")]
    pub from: Option<chrono::NaiveDate>,

    /// Last day (UTC) of ts_utc to compact, inclusive.
    #[arg(long, requires = "from")]
    pub to: Option<chrono::NaiveDate>,

    /// Output file size in bytes (default: the table's
    /// write.target-file-size-bytes, else 134217728).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub target_file_size: Option<u64>,

    /// Files below this size are rewritten (default: 75% of the target).
    #[arg(long, value_name = "BYTES")]
    pub min_file_size: Option<u64>,

    /// Small files a partition needs before it is rewritten.
    #[arg(long, default_value_t = 5)]
    pub min_input_files: usize,

    /// Input bytes per commit: a long compaction commits as it goes.
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_bytes: u64,

    /// Sort rewritten files by the table's sort order (holds one group of
    /// input in memory).
    #[arg(long)]
    pub sort: bool,

    /// Delta tables: rewrite each day's files Z-ordered by these columns
    /// (comma-separated, e.g. site_id,ts_utc) instead of bin-packing the
    /// small ones; every file of the day is rewritten.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub zorder: Vec<String>,

    /// Print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe expire-snapshots`.
#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// The table, namespace.name.
    pub table: String,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Expire snapshots older than this (3d, 12h, 1w, ...; default: the
    /// table's history.expire.max-snapshot-age-ms, else 5d).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub older_than: Option<std::time::Duration>,

    /// Always keep this many snapshots of main (default: the table's
    /// history.expire.min-snapshots-to-keep, else 1).
    #[arg(long)]
    pub retain_last: Option<usize>,

    /// Print what would be expired and deleted, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe remove-orphans`.
#[derive(Debug, Args)]
pub struct OrphanArgs {
    /// The table, namespace.name.
    pub table: String,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Only files older than this are deleted; running writers' files are
    /// younger. Default 3d.
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub older_than: Option<std::time::Duration>,

    /// List the orphans, delete nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Tables (namespace.name); default: every table of the catalog.
    pub tables: Vec<String>,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Window for orphan candidates (default 3d).
    #[arg(long, value_parser = crate::duration::parse_duration)]
    pub orphans_older_than: Option<std::time::Duration>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `floe maintain`.
#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Tables (namespace.name).
    pub tables: Vec<String>,

    /// Every table of the catalog.
    #[arg(long, conflicts_with = "tables")]
    pub all: bool,

    #[command(flatten)]
    pub catalog: CatalogArgs,

    /// Decide and report, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Write the JSON report to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Write the figures as a Prometheus textfile (node_exporter's
    /// textfile collector), replaced atomically.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Who rewrites small files, over [maintain] compact_engine: floe, or
    /// trino (the pipeline's [engines.trino] runs `optimize` on the days
    /// floe picks, and floe checks the result). A table's
    /// floe.compact.engine property still decides for that table.
    #[arg(long, value_name = "ENGINE", value_parser = ["floe", "trino"])]
    pub compact_engine: Option<String>,
}

/// Flags of `floe ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Jobs to run (default: every job in the pipeline file).
    pub jobs: Vec<String>,

    /// The pipeline definition (TOML).
    #[arg(long, short, default_value = "floe.toml", env = "FLOE_PIPELINE")]
    pub pipeline: PathBuf,

    #[command(flatten)]
    pub window: WindowArgs,

    /// Print what would be read and written, and stop.
    #[arg(long)]
    pub dry_run: bool,

    /// HTTP API jobs: rebuild the window from the raw responses landed by
    /// earlier runs (the newest fetch of each day), sending no request: for
    /// backfills and parser fixes without spending API credits.
    #[arg(long)]
    pub replay: bool,

    /// Let this run empty days of the window that get no rows from the
    /// source, deleting what they held (as `empty_days = "allow"` for every
    /// job). Without it, a day that holds rows and gets none stops the run.
    #[arg(long)]
    pub allow_empty: bool,

    /// Write a JSON run report (rows read/written/rejected per day, files,
    /// bytes, snapshot ids, duration; for API jobs requests, retries,
    /// soft failures and the raw files landed) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,

    /// Run id recorded in the snapshot summary (floe.run-id). Passing the
    /// scheduler's id makes a retried run detect that its commit landed.
    /// With --follow, each commit's id is this one followed by -<n>.
    #[arg(long, env = "FLOE_RUN_ID")]
    pub run_id: Option<String>,

    /// Kafka jobs: keep running, committing what arrived every
    /// --commit-every (each commit exactly once, with its offsets, as a
    /// bounded run would). SIGTERM or Ctrl-C stops it after the commit in
    /// progress; an error stops it with the exit code a bounded run would
    /// give (a supervisor restarts it from the table's offsets).
    #[arg(long, conflicts_with = "dry_run")]
    pub follow: bool,

    /// With --follow: how often to commit (e.g. 30s, 5m).
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub commit_every: std::time::Duration,

    /// Kafka jobs: read at most this many records per commit (shared out
    /// among the partitions), so a backlog lands in bounded commits. The
    /// default reads to the end offsets seen at the start (with --follow:
    /// 1000000).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_records: Option<u64>,
}

/// `floe catalog ...`.
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Serve an Iceberg REST catalog over a local folder or S3 warehouse.
    ///
    /// Table metadata files live in the warehouse; which file is current is
    /// kept in SQLite (by default a file inside a local warehouse) or
    /// PostgreSQL, in the layout of Iceberg's JDBC catalog. pyiceberg, Spark,
    /// Trino and floe connect with `uri = http://LISTEN`. Ready once
    /// `GET /v1/config` answers; stops cleanly on SIGTERM or Ctrl-C.
    Serve(ServeArgs),
}

/// Flags of `floe catalog serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default; another address needs
    /// --token or --client-id (or --insecure-no-auth).
    #[arg(long, default_value = "127.0.0.1:8181", env = "FLOE_CATALOG_LISTEN")]
    pub listen: SocketAddr,

    /// Serve beyond loopback without authentication (only on a private
    /// network, such as a compose network).
    #[arg(long)]
    pub insecure_no_auth: bool,

    /// Warehouse root: a local folder (created if missing), file:///abs/path,
    /// or s3://bucket/prefix.
    #[arg(long, default_value = "warehouse", env = "FLOE_WAREHOUSE")]
    pub warehouse: String,

    /// Pointer database: sqlite://PATH or postgres://USER@HOST:PORT/DB.
    /// Default: sqlite file floe-catalog.db in a local warehouse (required
    /// for S3 warehouses).
    #[arg(long, env = "FLOE_CATALOG_DB")]
    pub db: Option<String>,

    /// Warehouse name clients may pass as `warehouse` (also the catalog_name
    /// of the database rows).
    #[arg(long, default_value = floe_catalog::config::DEFAULT_WAREHOUSE_NAME, env = "FLOE_CATALOG_NAME")]
    pub name: String,

    /// S3 endpoint URL (MinIO, SeaweedFS, ...); AWS when unset.
    #[arg(long, env = "FLOE_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "FLOE_S3_REGION")]
    pub s3_region: Option<String>,

    /// Use path-style S3 addressing (needed by MinIO and most self-hosted servers).
    #[arg(long, env = "FLOE_S3_PATH_STYLE")]
    pub s3_path_style: bool,

    /// Hand the server's S3 credentials to clients in table responses.
    /// Credentials otherwise come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long)]
    pub vend_credentials: bool,

    /// Require this bearer token on every request.
    #[arg(long, env = "FLOE_CATALOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// OAuth2 client id accepted at /v1/oauth/tokens (with --client-secret).
    #[arg(long, env = "FLOE_CATALOG_CLIENT_ID", requires = "client_secret")]
    pub client_id: Option<String>,

    /// OAuth2 client secret (prefer the environment variable).
    #[arg(
        long,
        env = "FLOE_CATALOG_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id"
    )]
    pub client_secret: Option<String>,

    /// Lifetime of issued OAuth2 tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = floe_catalog::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Connections served at once (further ones wait to be accepted).
    #[arg(long, default_value_t = 1024, env = "FLOE_CATALOG_MAX_CONNECTIONS")]
    pub max_connections: usize,

    /// Close a connection whose client sends nothing for this long (a
    /// stalled request header or body, or an idle keep-alive), e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = crate::duration::parse_duration, env = "FLOE_CATALOG_READ_TIMEOUT")]
    pub read_timeout: std::time::Duration,

    /// Write the bound address to this file once listening (for scripts
    /// that pass --listen 127.0.0.1:0).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}
