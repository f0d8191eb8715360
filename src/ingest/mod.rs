//! `floe ingest`: read a job's source files for a window of days, convert
//! every record to the table's types with a UTC event time, write one
//! Parquet data file set per day partition, and commit ONE overwrite
//! snapshot that replaces exactly the window's days.
//!
//! Reading and converting run on a blocking thread; batches flow to the
//! writer through a bounded channel, so memory stays bounded whatever the
//! input size. Records that cannot be converted are rejects: counted,
//! written with their reason to `<table>__rejects`, and past the job's
//! threshold the run fails without touching the target table.

mod avro;
mod carry;
mod columnar;
mod convert;
mod csv_blocks;
mod database;
#[cfg(test)]
mod decode_paths;
mod drift;
pub mod expect;
mod fields;
mod files;
mod flat;
mod for_each;
pub mod http;
mod json;
mod kafka;
mod merge;
mod nested;
mod pg_copy;
pub(crate) mod progress;
mod quick_json;
mod reading;
mod records;
mod rejects;
mod scd2;
mod sql_tests;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::NaiveDate;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::pipeline::{
    CatalogSettings, EmptyDays, Job, Pipeline, SchemaDrift, Source, TableFormat, WriteMode,
};
use crate::rest::RestClient;
use crate::table::days::{self, day_name, day_start};
use crate::table::props::target_file_size;
use crate::table::window::{
    Destination, Place, Replaces, WindowCommit, WindowSpec, WindowWrite, Written,
};
use convert::BatchBuilder;
pub use rejects::Reject;

/// Rows per Arrow batch handed to the writer.
const BATCH_ROWS: usize = 8192;
/// Batches in flight between reader and writer.
const CHANNEL_DEPTH: usize = 4;
/// Reject rows kept for the rejects table; past it they are only counted.
const MAX_KEPT_REJECTS: usize = 100_000;

/// What `floe ingest` was asked to do.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// First day of the window (UTC).
    pub from: NaiveDate,
    /// Last day of the window (UTC), inclusive.
    pub to: NaiveDate,
    /// Plan only: list what would be read and written.
    pub dry_run: bool,
    /// This run's id (recorded in every snapshot it makes).
    pub run_id: String,
    /// HTTP sources: rebuild from the raw landing zone, sending no request.
    pub replay: bool,
    /// Days of the window that get no rows may be emptied, whatever a job's
    /// `empty_days` says (`--allow-empty`).
    pub allow_empty: bool,
    /// The run's time: cadence slots later than it (minus a job's
    /// `publication_delay`) are not gaps yet.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Kafka jobs: read at most this many records (shared out among the
    /// partitions); the rest is the next run's.
    pub max_records: Option<u64>,
}

impl IngestRequest {
    fn days(&self) -> Vec<NaiveDate> {
        self.from
            .iter_days()
            .take_while(|d| *d <= self.to)
            .collect()
    }
}

/// Per-day figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayReport {
    /// Rows written to the day's partition.
    pub rows_written: u64,
    /// Data files written.
    pub files: u64,
    /// Bytes of Parquet written.
    pub bytes: u64,
}

/// What one job's run did (the JSON run report).
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    /// Job name.
    pub job: String,
    /// Target table.
    pub table: String,
    /// The table's location (where its files are).
    pub location: Option<String>,
    /// Run id.
    pub run_id: String,
    /// Window, inclusive.
    pub window: (NaiveDate, NaiveDate),
    /// `committed`, `already-committed`, `partial` (committed without the
    /// skipped `for_each` entries, whose rows were kept), `planned` (dry
    /// run) or `failed`.
    pub status: String,
    /// Source files read.
    pub files_read: Vec<String>,
    /// Records read.
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Records rejected.
    pub rows_rejected: u64,
    /// Records whose event time lies outside the window (skipped).
    pub rows_outside_window: u64,
    /// Rows of skipped `for_each` entries kept as they were (rewritten
    /// with the run's rows).
    pub rows_kept: u64,
    /// Per day (YYYY-MM-DD).
    pub days: BTreeMap<String, DayReport>,
    /// Data files written.
    pub data_files: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// The snapshot committed to the target.
    pub snapshot_id: Option<i64>,
    /// Files the overwrite removed from the window.
    pub replaced_files: u64,
    /// Days whose rows this run deleted without replacing them (only when
    /// allowed: `empty_days = "allow"` or `--allow-empty`).
    pub emptied_days: Vec<String>,
    /// Commit attempts.
    pub commit_attempts: u32,
    /// Snapshot of the rejects table, when there were rejects.
    pub rejects_snapshot_id: Option<i64>,
    /// HTTP sources: requests, retries, soft failures, landed files.
    pub http: Option<http::HttpReport>,
    /// What `[job.expect]` found: duplicates, gaps, empty days.
    pub expect: Option<expect::ExpectReport>,
    /// Kafka sources: the offsets read from and committed.
    pub kafka: Option<KafkaReport>,
    /// The first rejects, for the log.
    #[serde(skip)]
    pub sample_rejects: Vec<Reject>,
    /// Wall time in milliseconds.
    pub duration_ms: u128,
    /// Why the run failed.
    pub error: Option<String>,
    /// The table format written (a two-format job has a report per half).
    pub format: TableFormat,
    /// A database `cursor`: the largest value committed, from which the
    /// next run reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// `mode = "merge"`: the days (YYYY-MM-DD) rewritten because they hold
    /// a run row or a row it replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_days: Vec<String>,
    /// The same days, for the commit (none: not a merge, or a whole table).
    #[serde(skip)]
    merge_days: Option<std::collections::BTreeSet<i32>>,
}

impl JobReport {
    fn new(job: &Job, req: &IngestRequest) -> Self {
        Self {
            job: job.name.clone(),
            table: job.table_ident(),
            location: None,
            run_id: req.run_id.clone(),
            window: (req.from, req.to),
            status: "failed".into(),
            files_read: Vec::new(),
            rows_read: 0,
            rows_written: 0,
            rows_rejected: 0,
            rows_outside_window: 0,
            rows_kept: 0,
            days: BTreeMap::new(),
            data_files: 0,
            bytes_written: 0,
            snapshot_id: None,
            replaced_files: 0,
            emptied_days: Vec::new(),
            commit_attempts: 0,
            rejects_snapshot_id: None,
            http: None,
            expect: None,
            kafka: None,
            sample_rejects: Vec::new(),
            duration_ms: 0,
            error: None,
            format: job.format,
            cursor: None,
            merged_days: Vec::new(),
            merge_days: None,
        }
    }
}

/// Runs the selected jobs (all when `selected` is empty) in file order,
/// through the pipeline's catalog (an embedded one is served by the
/// command, see [`crate::connect::serve_embedded`]). Every job gets a
/// report; the first failure is returned after all ran (a partial run,
/// whose data was committed, only when nothing failed).
pub async fn run(
    pipeline: &Pipeline,
    selected: &[String],
    req: &IngestRequest,
) -> (Vec<JobReport>, Result<()>) {
    let jobs = match selected_jobs(pipeline, selected) {
        Ok(jobs) => jobs,
        Err(e) => return (Vec::new(), Err(e)),
    };
    // One client per distinct catalog (a job may name its own).
    let mut clients: Vec<(CatalogSettings, RestClient)> = Vec::new();
    let mut reports = Vec::new();
    let mut first_error = None;
    for job in jobs {
        let (report, outcome) = run_one(pipeline, job, req, &mut clients, &reports).await;
        reports.push(report);
        // A failure outranks a partial run (whose data was committed).
        match (outcome, &first_error) {
            (Err(e), None) => first_error = Some(e),
            (Err(e), Some(Error::Partial(_))) if !matches!(e, Error::Partial(_)) => {
                first_error = Some(e);
            }
            _ => {}
        }
    }
    (reports, first_error.map_or(Ok(()), Err))
}

/// The jobs `selected` names (all when it is empty), in file order.
pub fn selected_jobs<'p>(pipeline: &'p Pipeline, selected: &[String]) -> Result<Vec<&'p Job>> {
    if pipeline.jobs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no [[job]] defined",
            pipeline.path.display()
        )));
    }
    if let Some(unknown) = selected
        .iter()
        .find(|s| !pipeline.jobs.iter().any(|j| &j.name == *s))
    {
        let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Error::Config(format!(
            "no job {unknown:?} in {}; jobs: {}",
            pipeline.path.display(),
            names.join(", ")
        )));
    }
    Ok(pipeline
        .jobs
        .iter()
        .filter(|j| selected.is_empty() || selected.contains(&j.name))
        .collect())
}

/// One job of a run and its report (`earlier`: the reports of the jobs
/// run before it). The second half of a two-format job writes what the
/// first half just wrote: nothing when that failed, and an API source's
/// rows from the bodies that half landed (no second fetch).
async fn run_one(
    pipeline: &Pipeline,
    job: &Job,
    req: &IngestRequest,
    clients: &mut Vec<(CatalogSettings, RestClient)>,
    earlier: &[JobReport],
) -> (JobReport, Result<()>) {
    let started = Instant::now();
    let mut report = JobReport::new(job, req);
    let settings = job.catalog.as_ref().unwrap_or(&pipeline.catalog);
    let client = match job_client(clients, job, settings, req.dry_run).await {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(e.to_string());
            return (report, Err(e));
        }
    };
    let props: HashMap<String, String> = match &client {
        Some(c) => c.properties.clone(),
        None => settings.properties.clone().into_iter().collect(),
    };
    let first_half = earlier
        .last()
        .filter(|r: &&JobReport| job.twin && r.job == job.name);
    if first_half.is_some_and(|half| half.status == "failed") {
        report.status = "skipped".into();
        report.error = Some("not run: this two-format job failed on its Iceberg table".into());
        return (report, Ok(()));
    }
    let landed_by_half = first_half
        .and_then(|h| h.http.as_ref())
        .map(|h| h.landing.clone());
    let replay_req;
    let job_req = match &landed_by_half {
        Some(_) if !req.dry_run => {
            replay_req = IngestRequest {
                replay: true,
                ..req.clone()
            };
            &replay_req
        }
        _ => req,
    };
    let landing = landed_by_half.as_deref().or(pipeline.landing.as_deref());
    let place = Place::of(pipeline, client.as_ref(), &props);
    let outcome = run_job(&place, job, job_req, landing, &mut report).await;
    report.duration_ms = started.elapsed().as_millis();
    if let Err(e) = &outcome {
        report.error = Some(e.to_string());
        // A partial run committed: its status says so already.
        if !matches!(e.kind(), Error::Partial(_)) {
            report.status = "failed".into();
        }
    }
    (report, outcome)
}

/// The job's catalog client: none for a dry run, nor for a table outside
/// the catalog when the catalog cannot be reached.
async fn job_client(
    clients: &mut Vec<(CatalogSettings, RestClient)>,
    job: &Job,
    settings: &CatalogSettings,
    dry_run: bool,
) -> Result<Option<RestClient>> {
    if dry_run {
        return Ok(None);
    }
    match client_for(clients, settings).await {
        Ok(c) => Ok(Some(c)),
        // A table outside the catalog only takes its storage settings
        // (`/v1/config`); without the catalog the job goes on with the
        // pipeline's own.
        Err(e) if !Destination::needs_catalog(job) => {
            tracing::warn!(job = %job.name, error = %e, "the catalog is not reachable; the job uses the pipeline's [catalog] properties");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The connected client for `settings`, connecting on first use.
async fn client_for(
    clients: &mut Vec<(CatalogSettings, RestClient)>,
    settings: &CatalogSettings,
) -> Result<RestClient> {
    if let Some((_, c)) = clients.iter().find(|(s, _)| s == settings) {
        return Ok(c.clone());
    }
    let client = RestClient::connect(settings).await?;
    clients.push((settings.clone(), client.clone()));
    Ok(client)
}

/// One job's run: find its inputs, open its table (of either format),
/// write the window, check, commit.
async fn run_job(
    place: &Place<'_>,
    job: &Job,
    req: &IngestRequest,
    landing: Option<&str>,
    report: &mut JobReport,
) -> Result<()> {
    let days = req.days();
    let window = days::window(req.from, req.to);
    let resolved = for_each::resolve(job, place.client).await?;
    let job = resolved.as_ref().unwrap_or(job);
    let fetcher = files::Fetcher::new(place.store_props)?;
    report.location = Destination::planned_location(job, place)?;
    let units: Vec<Unit> = match &job.source {
        Source::Files(cfg) => file_units(cfg, job, &days, &window, &fetcher, report).await?,
        Source::Http(h) if req.dry_run => {
            report.files_read = if req.replay {
                vec!["(the window's pages in the raw landing zone)".into()]
            } else {
                http::planned_requests(h, &days)?
            };
            Vec::new()
        }
        Source::Http(_) => Vec::new(),
        Source::Database(d) => {
            report.files_read = vec![database::describe(d)];
            Vec::new()
        }
        Source::Kafka(k) => {
            report.files_read = vec![k.uri()];
            Vec::new()
        }
    };
    if req.dry_run {
        report.status = "planned".into();
        return Ok(());
    }
    if let Source::Kafka(k) = &job.source {
        let mut dest = Destination::open(job, place).await?;
        let outcome = run_kafka(&mut dest, job, req, (k, fetcher, place.client), report).await;
        if outcome.is_err() {
            dest.abandon(job).await;
        }
        return outcome;
    }
    let mut dest = Destination::open(job, place).await?;
    // A database's rows are read in one snapshot, from the table's last
    // cursor when it has one, into a folder that lives until the run ends.
    let extract = match &job.source {
        Source::Database(d) => {
            let since = d
                .cursor
                .as_ref()
                .and_then(|_| dest.state(database::CURSOR_KEY));
            match database::extract(d, job, (req.from, req.to), &window, since).await {
                Ok(e) => {
                    report.cursor = e.cursor.clone();
                    Some(e)
                }
                Err(e) => {
                    dest.abandon(job).await;
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let units = match &extract {
        Some(e) => e.units.clone(),
        None => units,
    };
    let outcome = fill(
        &mut dest,
        job,
        req,
        (units, fetcher, landing, place.client),
        Settle::default(),
        report,
    )
    .await;
    if outcome.is_err() {
        dest.abandon(job).await;
    }
    outcome
}

/// A Kafka job's run on its open table: the records after the table's
/// offsets up to the partitions' ends, committed with the new offsets in
/// one snapshot, only if the table's offsets are still those the read
/// started from. A run that read nothing new commits nothing
/// (`up-to-date`).
async fn run_kafka(
    dest: &mut Destination,
    job: &Job,
    req: &IngestRequest,
    (src, fetcher, client): (
        &crate::pipeline::KafkaSource,
        files::Fetcher,
        Option<&crate::rest::RestClient>,
    ),
    report: &mut JobReport,
) -> Result<()> {
    if let Some(id) = dest.landed(&req.run_id).await? {
        report.status = "already-committed".into();
        report.snapshot_id = Some(id);
        return Ok(());
    }
    let recorded = dest.state(kafka::KAFKA_OFFSETS_KEY);
    let extract = kafka::extract(src, &job.base_dir, recorded.as_deref(), req.max_records).await?;
    report.kafka = Some(KafkaReport {
        from: extract.started.to_json(),
        to: extract.next.to_json(),
        records: extract.records,
    });
    if !extract.moved() {
        report.status = "up-to-date".into();
        return Ok(());
    }
    let (properties, guard) = extract.commit_state(recorded);
    let settle = Settle {
        properties,
        guard: Some(guard),
    };
    let units = extract.units.clone();
    fill(
        dest,
        job,
        req,
        (units, fetcher, None, client),
        settle,
        report,
    )
    .await
}

/// A Kafka run's offsets: where it started and what it commits.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaReport {
    /// The table's offsets when the run started (JSON).
    pub from: String,
    /// The offsets after the records read, committed with them (JSON).
    pub to: String,
    /// Records read.
    pub records: u64,
}

/// What a commit records besides the rows, and the state it requires.
#[derive(Debug, Clone, Default)]
struct Settle {
    /// More summary properties.
    properties: Vec<(String, String)>,
    /// The state the table must still hold.
    guard: Option<crate::table::snapshot::StateGuard>,
}

/// The run on the job's open table: fetch (API sources), evolve, write,
/// check, keep the rejects, commit.
async fn fill(
    dest: &mut Destination,
    job: &Job,
    req: &IngestRequest,
    (mut units, mut fetcher, landing, client): (
        Vec<Unit>,
        files::Fetcher,
        Option<&str>,
        Option<&crate::rest::RestClient>,
    ),
    settle: Settle,
    report: &mut JobReport,
) -> Result<()> {
    let days = req.days();
    if let Some(id) = dest.landed(&req.run_id).await? {
        report.status = "already-committed".into();
        report.snapshot_id = Some(id);
        return Ok(());
    }
    if let Source::Http(h) = &job.source {
        // Checked before any request: a skipped entry's rows must be
        // findable.
        carry::key_columns(job)?;
        units = fetch_api(dest, job, h, req, &days, (&mut fetcher, landing), report).await?;
    }
    let skipped = carry::missing(job, &days, &units);
    let kept = carry::rows(dest, job, &skipped).await?;
    let evolved = evolve(dest, job, &units, &fetcher).await?;
    let job = evolved.as_ref().unwrap_or(job);
    report.location = Some(dest.location());
    let (written, rejects, checker) =
        write_window(dest, job, req, (units, fetcher, kept), report).await?;
    tally(job, &written, report);
    let custom = match sql_tests::run(dest, job, &written, client).await {
        Ok(found) => found,
        Err(e) => {
            unwritten(report);
            written.discard().await;
            return Err(e);
        }
    };
    let verdict = match judge(job, req, &days, (checker, custom), report) {
        Ok(guarded) => whole_table_guard(dest, job, req, report)
            .await
            .map(|()| guarded),
        Err(e) => Err(e),
    };
    // The rejects are the evidence of a failing run too: kept, with the
    // run id, even when the target is not touched.
    let batch = rejects_batch(job, req, &rejects, report)?;
    let kept = keep_rejects(dest, job, &req.run_id, batch, report).await;
    let guarded_days = match kept.and_then(|()| threshold(job, report)).and(verdict) {
        Ok(days) => days,
        Err(e) => {
            unwritten(report);
            written.discard().await;
            return Err(e);
        }
    };
    if job.mode == WriteMode::Merge && report.merge_days.as_ref().is_some_and(|d| d.is_empty()) {
        // No row to merge (a database cursor with nothing past it).
        unwritten(report);
        written.discard().await;
        report.status = "up-to-date".into();
        return Ok(());
    }
    commit(dest, job, req, (written, guarded_days, settle), report).await?;
    partial(job, &skipped, report)
}

/// A run that skipped failing `for_each` entries committed the others: its
/// status is `partial` and its error (exit code 3) names the skipped ones.
fn partial(job: &Job, skipped: &[carry::Carried], report: &mut JobReport) -> Result<()> {
    if skipped.is_empty() || report.status != "committed" {
        return Ok(());
    }
    report.status = "partial".into();
    let named: Vec<String> = skipped
        .iter()
        .map(|c| {
            let entry: Vec<String> = c.entry.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{} on {}", entry.join(","), days::describe_days(&c.days))
        })
        .collect();
    Err(Error::Partial(format!(
        "job {}: {} for_each entr{} failed and {} skipped ({}); their rows were kept as they were ({} rows), the others were committed",
        job.name,
        skipped.len(),
        if skipped.len() == 1 { "y" } else { "ies" },
        if skipped.len() == 1 { "was" } else { "were" },
        named.join("; "),
        report.rows_kept
    )))
}

/// An API job's units: the landing zone beside the table (whose storage
/// `fetcher` takes on), and the window's pages fetched into it or
/// (`--replay`) found there.
async fn fetch_api(
    dest: &Destination,
    job: &Job,
    h: &crate::pipeline::HttpSource,
    req: &IngestRequest,
    days: &[NaiveDate],
    (fetcher, landing): (&mut files::Fetcher, Option<&str>),
    report: &mut JobReport,
) -> Result<Vec<Unit>> {
    let (io, props) = dest.storage((fetcher.io.clone(), fetcher.s3_props.clone()));
    fetcher.io = io.clone();
    fetcher.s3_props = props.clone();
    let zone =
        http::landing::Landing::resolve(landing, &dest.location(), &job.namespace, io, props)?;
    api_units(job, h, req, days, &zone, report).await
}

/// `schema_drift = "evolve"`: the job with the source fields it does not
/// know adopted as columns, which are added to the table too (`None`
/// under the other settings).
async fn evolve(
    dest: &mut Destination,
    job: &Job,
    units: &[Unit],
    fetcher: &files::Fetcher,
) -> Result<Option<Job>> {
    if job.schema_drift != SchemaDrift::Evolve {
        return Ok(None);
    }
    let (scan_job, scan_units, scan_fetcher) = (job.clone(), units.to_vec(), fetcher.clone());
    let new = tokio::task::spawn_blocking(move || {
        drift::scan_unknown(&scan_job, &scan_units, &scan_fetcher)
    })
    .await
    .map_err(|e| Error::Source(format!("the schema scan failed: {e}")).caused_by(e))??;
    let mut evolved = job.clone();
    if !new.is_empty() {
        drift::adopt(&mut evolved, &new);
        dest.add_columns(&evolved, &new).await?;
    }
    Ok(Some(evolved))
}

/// Reads the units into the table's window, uncommitted: returns what was
/// written, the kept rejects and the `[job.expect]` checker. On an error
/// nothing written is left behind.
async fn write_window(
    dest: &Destination,
    job: &Job,
    req: &IngestRequest,
    (units, fetcher, kept): (Vec<Unit>, files::Fetcher, Vec<arrow_array::RecordBatch>),
    report: &mut JobReport,
) -> Result<(Written, Vec<Reject>, Option<expect::Checker>)> {
    let spec = WindowSpec {
        run_id: &req.run_id,
        from: req.from,
        to: req.to,
        sort: &job.sort,
        properties: &job.properties,
        target_file_size: target_file_size(&job.properties),
    };
    let mut write = dest.start(job, &spec).await?;
    // Every row of a run gets the run's time (an appended run's rows are
    // told apart by it).
    let builder = BatchBuilder::new(job, dest.arrow_schema(job)?, req.now.timestamp_micros())?;
    let (rejects, checker, read_result) = if job.mode == WriteMode::Scd2 {
        // The run's rows merge with the table's history before writing.
        let mut run_rows = scd2::Collected::default();
        let (rejects, checker, read) =
            drain(job, units, fetcher, builder, &mut run_rows, report).await;
        let merged = match read {
            Ok(()) => history(dest, job, req, run_rows.batches, report).await,
            Err(e) => Err(e),
        };
        let written = match merged {
            Ok(rows) => keep_rows(dest, job, rows, &mut write, &mut 0).await,
            Err(e) => Err(e),
        };
        (rejects, checker, written)
    } else if job.mode == WriteMode::Merge {
        // The run's rows replace the table's by key, in the days they touch.
        let mut run_rows = scd2::Collected::default();
        let (rejects, checker, read) =
            drain(job, units, fetcher, builder, &mut run_rows, report).await;
        let schema = dest.arrow_schema(job)?;
        let merged = match read {
            Ok(()) => merge::merge(dest, job, &schema, run_rows.batches).await,
            Err(e) => Err(e),
        };
        let written = match merged {
            Ok(m) => {
                report.merged_days = m
                    .days
                    .iter()
                    .flatten()
                    .map(|d| days::day_name(*d))
                    .collect();
                report.merge_days = m.days;
                keep_rows(dest, job, m.rows, &mut write, &mut 0).await
            }
            Err(e) => Err(e),
        };
        (rejects, checker, written)
    } else {
        let (rejects, checker, read) =
            drain(job, units, fetcher, builder, &mut write, report).await;
        let read = match read {
            Ok(()) => keep_rows(dest, job, kept, &mut write, &mut report.rows_kept).await,
            Err(e) => Err(e),
        };
        (rejects, checker, read)
    };
    report.sample_rejects = rejects.iter().take(5).cloned().collect();
    // A writer's own error, when it stopped first, explains more.
    let written = match (write.close().await, read_result) {
        (Err(e), _) => return Err(e),
        (Ok(w), Err(e)) => {
            w.discard().await;
            return Err(e);
        }
        (Ok(w), Ok(())) => w,
    };
    Ok((written, rejects, checker))
}

/// `mode = "scd2"`: the table's rows with the run's merged in; a run that
/// got no rows never closes every version of a table that holds some,
/// unless told it may.
async fn history(
    dest: &Destination,
    job: &Job,
    req: &IngestRequest,
    run_rows: Vec<arrow_array::RecordBatch>,
    report: &JobReport,
) -> Result<Vec<arrow_array::RecordBatch>> {
    if run_rows.is_empty() && !may_empty(job, req) && dest.holds_rows().await? {
        return Err(would_empty(
            job,
            &format!(
                "any row (mode = \"scd2\" would close every current version in {})",
                job.table_ident()
            ),
            report,
        ));
    }
    let schema = dest.arrow_schema(job)?;
    scd2::merge(dest, job, &schema, run_rows, req.now.timestamp_micros()).await
}

/// Writes rows read from the table (a skipped `for_each` entry's kept
/// rows, or a merged history) with the run's, counting them in `count`.
async fn keep_rows(
    dest: &Destination,
    job: &Job,
    kept: Vec<arrow_array::RecordBatch>,
    write: &mut WindowWrite,
    count: &mut u64,
) -> Result<()> {
    let schema = dest.arrow_schema(job)?;
    for batch in kept {
        let batch = crate::table::content::conform(&batch, &schema, &job.name)?;
        *count += batch.num_rows() as u64;
        if !write.put(batch).await? {
            break;
        }
    }
    Ok(())
}

/// The days a job without an event time takes rows of: all (its rows
/// carry a stand-in time no column holds).
const EVERY_DAY: std::ops::RangeInclusive<i32> = i32::MIN..=i32::MAX;

/// The report's key for a job without an event time (its rows have no
/// day).
const WHOLE_TABLE: &str = "table";

/// Puts what `written` holds per day (a job without an event time: under
/// [`WHOLE_TABLE`]), and its totals, in the report.
fn tally(job: &Job, written: &Written, report: &mut JobReport) {
    for (day, f) in written.days() {
        let key = if job.has_event_time() {
            day_name(day)
        } else {
            WHOLE_TABLE.to_string()
        };
        let d = report.days.entry(key).or_default();
        d.rows_written += f.rows;
        d.files += f.files;
        d.bytes += f.bytes;
    }
    report.rows_written = report.days.values().map(|d| d.rows_written).sum();
    report.data_files = report.days.values().map(|d| d.files).sum();
    report.bytes_written = report.days.values().map(|d| d.bytes).sum();
}

/// The rows of the rejects table for the run's rejects, when there were
/// any.
fn rejects_batch(
    job: &Job,
    req: &IngestRequest,
    rejects: &[Reject],
    report: &JobReport,
) -> Result<Option<arrow_array::RecordBatch>> {
    if report.rows_rejected == 0 {
        return Ok(None);
    }
    rejects::batch(crate::table::rejects::arrow_schema()?, job, req, rejects).map(Some)
}

/// Appends `batch` (the run's rejects, if any) to the rejects table.
async fn keep_rejects(
    dest: &Destination,
    job: &Job,
    run_id: &str,
    batch: Option<arrow_array::RecordBatch>,
    report: &mut JobReport,
) -> Result<()> {
    if let Some(batch) = batch {
        report.rejects_snapshot_id = dest.append_rejects(job, run_id, batch).await?;
    }
    Ok(())
}

/// Commits `written` as the window's one overwrite (`guarded_days` must
/// not be emptied) and reports how it went.
async fn commit(
    dest: &Destination,
    job: &Job,
    req: &IngestRequest,
    (written, guarded_days, settle): (Written, std::collections::BTreeSet<i32>, Settle),
    report: &mut JobReport,
) -> Result<()> {
    let mut properties = vec![(
        "floe.rows-rejected".to_string(),
        report.rows_rejected.to_string(),
    )];
    properties.extend(settle.properties);
    // A database cursor is committed with the rows it read.
    properties.extend(
        report
            .cursor
            .clone()
            .map(|c| (database::CURSOR_KEY.to_string(), c)),
    );
    let commit = WindowCommit {
        job: &job.name,
        namespace: &job.namespace,
        table: &job.table,
        run_id: &req.run_id,
        from: req.from,
        to: req.to,
        guarded_days,
        replaces: Replaces::of(job),
        days: report.merge_days.clone(),
        properties,
        guard: settle.guard,
    };
    let committed = match written.commit(dest, commit).await {
        Ok(c) => c,
        Err(Error::WouldEmpty(days)) => {
            unwritten(report);
            return Err(would_empty(job, &days, report));
        }
        Err(e) => return Err(e),
    };
    report.snapshot_id = committed.snapshot_id;
    report.replaced_files = committed.replaced_files;
    report.emptied_days = committed.emptied_days;
    report.commit_attempts = committed.attempts;
    report.status = if committed.already_landed {
        "already-committed"
    } else {
        "committed"
    }
    .into();
    Ok(())
}

/// A run that commits nothing reports nothing written.
fn unwritten(report: &mut JobReport) {
    report.rows_written = 0;
    report.data_files = 0;
    report.bytes_written = 0;
    report.days.clear();
}

impl Sink for WindowWrite {
    async fn put(&mut self, batch: arrow_array::RecordBatch) -> Result<bool> {
        WindowWrite::put(self, batch).await
    }
}

/// One input of a run: a source file, or a landed API body, with the days
/// whose records it supplies (records of other days are skipped).
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    file: files::SourceFile,
    keep: std::ops::RangeInclusive<i32>,
    /// API bodies: the request series' `for_each` fields.
    vars: Option<std::collections::BTreeMap<String, String>>,
    /// Landed Kafka records: their partition and offsets.
    origin: Option<std::sync::Arc<kafka::Origin>>,
}

/// `[job.expect]` over what the run wrote (`report.days` filled in): puts
/// the findings in the report and returns the verdict: on success, the
/// empty days the commit must not empty (those still holding rows then
/// refuse it).
fn judge(
    job: &Job,
    req: &IngestRequest,
    days: &[NaiveDate],
    (checker, (sql_counts, sql_examples)): (
        Option<expect::Checker>,
        (Vec<expect::TestCount>, Vec<String>),
    ),
    report: &mut JobReport,
) -> Result<std::collections::BTreeSet<i32>> {
    // Reference data (no event time) has no days: it is empty or not.
    let by_day = job.has_event_time();
    // A merge replaces only the days it touches: its window has no empty
    // days to guard or report.
    let merge = job.mode == WriteMode::Merge;
    let empty: Vec<&NaiveDate> = days
        .iter()
        .filter(|d| by_day && !merge && !report.days.contains_key(&d.to_string()))
        .collect();
    let mut empty_days: Vec<String> = empty.iter().map(|d| d.to_string()).collect();
    if !by_day && !merge && report.rows_written == 0 {
        empty_days.push(format!("the whole table {}", job.table_ident()));
    }
    let mut expect = job.expect.clone();
    if may_empty(job, req) {
        expect.empty_days = EmptyDays::Allow;
    }
    // An append removes nothing, so no day needs guarding.
    let guarded = match (expect.empty_days, job.mode) {
        (EmptyDays::Protect, WriteMode::Overwrite) => {
            empty.iter().map(|d| days::day_number(**d)).collect()
        }
        _ => Default::default(),
    };
    let mut found = match checker {
        Some(c) => {
            let delay = i64::try_from(expect.publication_delay.as_micros()).unwrap_or(i64::MAX);
            c.finish(
                day_start(req.from),
                day_start(req.to) + crate::table::days::MICROS_PER_DAY,
                req.now.timestamp_micros().saturating_sub(delay),
                empty_days,
            )
        }
        None => expect::ExpectReport {
            empty_days,
            ..Default::default()
        },
    };
    found.tests.extend(sql_counts);
    found.examples.extend(sql_examples);
    let verdict = expect::verdict(&job.name, &expect, &found);
    report.expect = Some(found);
    verdict.map(|()| guarded)
}

/// Whether the run may empty what held rows: the job says so
/// (`empty_days = "allow"`) or the run does (`--allow-empty`).
fn may_empty(job: &Job, req: &IngestRequest) -> bool {
    req.allow_empty || job.expect.empty_days == EmptyDays::Allow
}

/// A job without an event time replaces its whole table: a run that got
/// no rows must not empty a table that holds some, unless told it may
/// (`empty_days = "allow"`, `--allow-empty`).
async fn whole_table_guard(
    dest: &Destination,
    job: &Job,
    req: &IngestRequest,
    report: &JobReport,
) -> Result<()> {
    // A merge removes only rows it replaces.
    if Replaces::of(job) != Replaces::Table
        || job.mode == WriteMode::Merge
        || report.rows_written > 0
        || may_empty(job, req)
    {
        return Ok(());
    }
    if !dest.holds_rows().await? {
        return Ok(());
    }
    Err(would_empty(
        job,
        &format!(
            "any row (a job without event_time replaces its whole table {})",
            job.table_ident()
        ),
        report,
    ))
}

/// The error of a run whose overwrite would have deleted the rows of
/// `days` (described) with nothing to put back.
fn would_empty(job: &Job, days: &str, report: &JobReport) -> Error {
    const SHOWN: usize = 5;
    let source = match &job.source {
        Source::Files(cfg) => {
            let mut read: Vec<&str> = report
                .files_read
                .iter()
                .take(SHOWN)
                .map(String::as_str)
                .collect();
            if report.files_read.len() > SHOWN {
                read.push("...");
            }
            format!(
                "looked for {:?}, found {} file(s){}",
                cfg.path,
                report.files_read.len(),
                if read.is_empty() {
                    String::new()
                } else {
                    format!(": {}", read.join(", "))
                }
            )
        }
        Source::Http(_) => format!("{} response(s) read", report.files_read.len()),
        Source::Database(d) => format!("read {}", database::describe(d)),
        Source::Kafka(k) => format!("read {}", k.uri()),
    };
    Error::Contract(format!(
        "job {}: the source has no rows for {days}, which hold rows in {} ({source}); \
         a run never deletes a day's rows unless told to: restore the source, narrow the window, \
         or set empty_days = \"allow\" under [job.expect] (or pass --allow-empty) to empty them; \
         nothing was committed",
        job.name,
        job.table_ident(),
    ))
}

/// The reject threshold: past it the run fails and the target is untouched.
fn threshold(job: &Job, report: &JobReport) -> Result<()> {
    let ratio = if report.rows_read == 0 {
        0.0
    } else {
        report.rows_rejected as f64 / report.rows_read as f64
    };
    if report.rows_rejected > 0 && ratio > job.reject_threshold {
        return Err(Error::Rejected(format!(
            "job {}: {} of {} records rejected ({:.2}%), above the threshold of {:.2}%; nothing was committed to {} (see {}__rejects)",
            job.name,
            report.rows_rejected,
            report.rows_read,
            ratio * 100.0,
            job.reject_threshold * 100.0,
            job.table_ident(),
            job.table_ident()
        )));
    }
    Ok(())
}

/// The source files of a file job's window, as units to read.
async fn file_units(
    cfg: &crate::pipeline::SourceConfig,
    job: &Job,
    days: &[NaiveDate],
    window: &std::ops::RangeInclusive<i32>,
    fetcher: &files::Fetcher,
    report: &mut JobReport,
) -> Result<Vec<Unit>> {
    let files = files::discover(&cfg.path, &job.base_dir, days, fetcher).await?;
    report.files_read = files.iter().map(files::SourceFile::uri).collect();
    Ok(files
        .into_iter()
        .map(|file| Unit {
            file,
            keep: window.clone(),
            vars: None,
            origin: None,
        })
        .collect())
}

/// The landed pages of an API job's window, fetched now or (`--replay`)
/// from the landing zone, as units to read.
async fn api_units(
    job: &Job,
    h: &crate::pipeline::HttpSource,
    req: &IngestRequest,
    days: &[NaiveDate],
    zone: &http::landing::Landing,
    report: &mut JobReport,
) -> Result<Vec<Unit>> {
    let (pages, http_report, outcome) = if req.replay {
        match http::replay(job, zone, days).await {
            Ok((p, r)) => (p, r, Ok(())),
            Err(e) => {
                let r = http::HttpReport {
                    replayed: true,
                    landing: zone.root().to_string(),
                    ..Default::default()
                };
                (Vec::new(), r, Err(e))
            }
        }
    } else {
        let fetch = http::Fetch {
            job,
            source: h,
            landing: zone,
            run_id: &req.run_id,
            client: http::client()?,
        };
        fetch.run(days).await
    };
    report.http = Some(http_report);
    outcome?;
    for p in &pages {
        if !report.files_read.contains(&p.uri) {
            report.files_read.push(p.uri.clone());
        }
    }
    Ok(pages
        .into_iter()
        .map(|p| Unit {
            file: files::SourceFile::of_uri(&p.uri),
            keep: days::window(*p.keep.start(), *p.keep.end()),
            vars: Some(p.vars),
            origin: None,
        })
        .collect())
}

enum Msg {
    Batch(arrow_array::RecordBatch),
    Rejects(Vec<Reject>),
    Counts { read: u64, outside: u64 },
}

/// Where converted batches go (a table's window write).
pub(crate) trait Sink {
    /// Takes a batch; `Ok(false)` when the sink stopped on an error of its
    /// own (reported when it closes), so reading should stop.
    async fn put(&mut self, batch: arrow_array::RecordBatch) -> Result<bool>;
}

/// Reads every unit on a blocking thread, converting records, and hands the
/// batches to `sink`, checking them against `[job.expect]` on the way.
/// Returns the kept rejects, the checker and how reading went.
async fn drain(
    job: &Job,
    units: Vec<Unit>,
    fetcher: files::Fetcher,
    builder: BatchBuilder,
    sink: &mut impl Sink,
    report: &mut JobReport,
) -> (Vec<Reject>, Option<expect::Checker>, Result<()>) {
    let mut checker = match expect::Checker::new(&job.expect) {
        Ok(c) => c,
        Err(e) => return (Vec::new(), None, Err(e)),
    };
    let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    let reader_job = job.clone();
    let reader = tokio::task::spawn_blocking(move || {
        reading::read_all(&reader_job, units, &fetcher, builder, &tx)
    });
    let mut rejects = Vec::new();
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Batch(batch) => {
                if let Some(c) = checker.as_mut()
                    && failure.is_none()
                    && let Err(e) = c.observe(&batch)
                {
                    failure = Some(e);
                }
                match sink.put(batch).await {
                    Ok(true) => {}
                    // The sink stopped: stop reading; its error comes when
                    // it closes.
                    Ok(false) => rx.close(),
                    Err(e) => {
                        failure.get_or_insert(e);
                        rx.close();
                    }
                }
            }
            Msg::Rejects(mut r) => {
                report.rows_rejected += r.len() as u64;
                let room = MAX_KEPT_REJECTS.saturating_sub(rejects.len());
                r.truncate(room);
                rejects.extend(r);
            }
            Msg::Counts { read, outside } => {
                report.rows_read += read;
                report.rows_outside_window += outside;
            }
        }
    }
    let read_result = match reader.await {
        Ok(r) => r,
        Err(e) => Err(Error::Source(format!("the reader thread failed: {e}")).caused_by(e)),
    };
    let outcome = match failure {
        Some(e) => Err(e),
        None => read_result,
    };
    (rejects, checker, outcome)
}
