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

mod columnar;
mod convert;
mod drift;
pub mod expect;
mod files;
pub mod http;
pub(crate) mod progress;
mod records;
mod rejects;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use iceberg::io::FileIO;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::pipeline::{
    CatalogSettings, EVENT_TIME_COLUMN, EmptyDays, Job, Pipeline, SchemaDrift, Source, TableFormat,
};
use crate::rest::{LoadedTable, RestClient};
use crate::table::days::{self, day_name, day_of, day_start};
use crate::table::props::{JOB_KEY, RUN_ID_KEY, WINDOW_KEY, target_file_size};
use crate::table::snapshot::{self, Overwrite, TableHandle};
use crate::table::{delta, lanes, schema, writer};
use convert::{BatchBuilder, Record};
pub use rejects::Reject;
use writer::DayWriters;

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
    /// `committed`, `already-committed`, `planned` (dry run) or `failed`.
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
    /// The first rejects, for the log.
    #[serde(skip)]
    pub sample_rejects: Vec<Reject>,
    /// Wall time in milliseconds.
    pub duration_ms: u128,
    /// Why the run failed.
    pub error: Option<String>,
    /// The table format written (a two-format job has a report per half).
    pub format: TableFormat,
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
            sample_rejects: Vec::new(),
            duration_ms: 0,
            error: None,
            format: job.format,
        }
    }
}

/// Runs the selected jobs (all when `selected` is empty) in file order.
/// Every job gets a report; the first failure is returned after all ran.
pub async fn run(
    pipeline: &Pipeline,
    selected: &[String],
    req: &IngestRequest,
) -> (Vec<JobReport>, Result<()>) {
    let jobs: Vec<&Job> = pipeline
        .jobs
        .iter()
        .filter(|j| selected.is_empty() || selected.contains(&j.name))
        .collect();
    if pipeline.jobs.is_empty() {
        return (
            Vec::new(),
            Err(Error::Config(format!(
                "{}: no [[job]] defined",
                pipeline.path.display()
            ))),
        );
    }
    if let Some(unknown) = selected
        .iter()
        .find(|s| !pipeline.jobs.iter().any(|j| &j.name == *s))
    {
        let names: Vec<&str> = pipeline.jobs.iter().map(|j| j.name.as_str()).collect();
        return (
            Vec::new(),
            Err(Error::Config(format!(
                "no job {unknown:?} in {}; jobs: {}",
                pipeline.path.display(),
                names.join(", ")
            ))),
        );
    }
    let embedded = match (&pipeline.catalog.embedded_warehouse, req.dry_run) {
        (Some(folder), false) => match crate::connect::start_embedded(folder).await {
            Ok(c) => Some(c),
            Err(e) => return (Vec::new(), Err(e)),
        },
        _ => None,
    };
    let mut settings = pipeline.catalog.clone();
    if let Some(running) = &embedded {
        settings.uri = running.uri();
    }
    // One client per distinct catalog (a job may name its own).
    let mut clients: Vec<(CatalogSettings, RestClient)> = Vec::new();
    let mut reports = Vec::new();
    let mut first_error = None;
    for job in jobs {
        let started = Instant::now();
        let mut report = JobReport::new(job, req);
        let job_settings = job.catalog.as_ref().unwrap_or(&settings);
        let delta = job.format == TableFormat::Delta;
        let client = if req.dry_run {
            None
        } else {
            match client_for(&mut clients, job_settings).await {
                Ok(c) => Some(c),
                // A Delta job only takes the catalog's storage settings
                // (`/v1/config`); without the catalog it goes on with the
                // pipeline's own.
                Err(e) if delta => {
                    tracing::warn!(job = %job.name, error = %e, "the catalog is not reachable; the Delta job uses the pipeline's [catalog] properties");
                    None
                }
                Err(e) => {
                    report.error = Some(e.to_string());
                    first_error.get_or_insert(e);
                    reports.push(report);
                    continue;
                }
            }
        };
        let props: HashMap<String, String> = match &client {
            Some(c) => c.properties.clone(),
            None => job_settings.properties.clone().into_iter().collect(),
        };
        // The Delta half of a two-format job writes what the Iceberg half
        // just wrote: nothing when that failed, and an API source's rows
        // from the bodies that half landed (no second fetch).
        let iceberg_half = reports
            .last()
            .filter(|r: &&JobReport| job.twin && delta && r.job == job.name);
        if let Some(half) = iceberg_half
            && half.status == "failed"
        {
            report.status = "skipped".into();
            report.error = Some("not run: the Iceberg half of this two-format job failed".into());
            reports.push(report);
            continue;
        }
        let landed_by_half = iceberg_half
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
        let outcome = if delta {
            run_delta_job(&props, job, job_req, pipeline, landing, &mut report).await
        } else {
            run_job(
                client.as_ref(),
                &props,
                job,
                req,
                pipeline.landing.as_deref(),
                &mut report,
            )
            .await
        };
        report.duration_ms = started.elapsed().as_millis();
        if let Err(e) = outcome {
            report.error = Some(e.to_string());
            report.status = "failed".into();
            first_error.get_or_insert(e);
        }
        reports.push(report);
    }
    if let Some(running) = embedded {
        running.shutdown().await;
    }
    (reports, first_error.map_or(Ok(()), Err))
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

async fn run_job(
    client: Option<&RestClient>,
    catalog_props: &HashMap<String, String>,
    job: &Job,
    req: &IngestRequest,
    landing: Option<&str>,
    report: &mut JobReport,
) -> Result<()> {
    let days = req.days();
    let window = days::window(req.from, req.to);
    let fetcher = files::Fetcher::new(catalog_props)?;
    let units: Vec<Unit> = match &job.source {
        Source::Files(cfg) => file_units(cfg, job, &days, &window, &fetcher, report).await?,
        Source::Http(h) => {
            if client.is_none() {
                report.files_read = if req.replay {
                    vec!["(the window's pages in the raw landing zone)".into()]
                } else {
                    http::planned_requests(h, &days)?
                };
            }
            Vec::new()
        }
    };
    let Some(client) = client else {
        report.status = "planned".into();
        return Ok(());
    };
    let (loaded, created) = open_table(client, job).await?;
    let outcome = fill_table(
        client,
        job,
        req,
        IcebergInputs {
            loaded,
            units,
            fetcher,
            landing,
        },
        report,
    )
    .await;
    if outcome.is_err() && created {
        drop_if_never_written(client, job).await;
    }
    outcome
}

/// What [`fill_table`] reads and writes to.
struct IcebergInputs<'a> {
    loaded: LoadedTable,
    units: Vec<Unit>,
    fetcher: files::Fetcher,
    landing: Option<&'a str>,
}

/// The Iceberg run on its open table: fetch (API sources), evolve, write,
/// check, commit.
async fn fill_table(
    client: &RestClient,
    job: &Job,
    req: &IngestRequest,
    inputs: IcebergInputs<'_>,
    report: &mut JobReport,
) -> Result<()> {
    let IcebergInputs {
        mut loaded,
        mut units,
        mut fetcher,
        landing,
    } = inputs;
    let days = req.days();
    let window = days::window(req.from, req.to);
    if let Some(id) = snapshot::landed_snapshot(&loaded.metadata, &req.run_id) {
        report.status = "already-committed".into();
        report.snapshot_id = Some(id);
        return Ok(());
    }
    if let Source::Http(h) = &job.source {
        fetcher.io = crate::store::table_io(client, &loaded);
        fetcher.s3_props = crate::store::table_props(client, &loaded);
        let zone = http::landing::Landing::resolve(
            landing,
            loaded.metadata.location(),
            &job.namespace,
            fetcher.io.clone(),
            fetcher.s3_props.clone(),
        )?;
        units = api_units(job, h, req, &days, &zone, report).await?;
    }
    let evolved;
    let job = if job.schema_drift == SchemaDrift::Evolve {
        let (scan_job, scan_units, scan_fetcher) = (job.clone(), units.clone(), fetcher.clone());
        let new = tokio::task::spawn_blocking(move || {
            drift::scan_unknown(&scan_job, &scan_units, &scan_fetcher)
        })
        .await
        .map_err(|e| Error::Source(format!("the schema scan failed: {e}")))??;
        let mut j = job.clone();
        if !new.is_empty() {
            loaded = drift::evolve(client, &mut j, loaded, &new).await?;
        }
        evolved = j;
        &evolved
    } else {
        job
    };
    report.location = Some(loaded.metadata.location().to_string());
    let handle = TableHandle {
        namespace: job.namespace.clone(),
        name: job.table.clone(),
        io: crate::store::table_io(client, &loaded),
    };
    let (data_files, rejects, checker) =
        write_files(job, req, &loaded, &handle, units, fetcher, report).await?;
    for f in &data_files {
        let day = snapshot::file_day(f).map(day_name).unwrap_or_default();
        let d = report.days.entry(day).or_default();
        d.rows_written += f.record_count();
        d.files += 1;
        d.bytes += f.file_size_in_bytes();
    }
    report.data_files = data_files.len() as u64;
    report.bytes_written = data_files.iter().map(|f| f.file_size_in_bytes()).sum();
    report.rows_written = data_files.iter().map(|f| f.record_count()).sum();
    let verdict = judge(job, req, &days, checker, report);
    if report.rows_rejected > 0 {
        // The rejects are the evidence of a failing run too: kept, with the
        // run id, even when the target is not touched.
        match rejects::commit(client, job, req, &rejects).await {
            Ok(id) => report.rejects_snapshot_id = Some(id),
            Err(e) => {
                delete_files(&handle.io, &data_files).await;
                return Err(e);
            }
        }
    }
    let guarded_days = match threshold(job, report).and(verdict) {
        Ok(days) => days,
        Err(e) => {
            delete_files(&handle.io, &data_files).await;
            return Err(e);
        }
    };
    let added = data_files.clone();
    let overwrite = Overwrite {
        added: data_files,
        days: Some(window),
        guarded_days,
        properties: HashMap::from([
            (JOB_KEY.to_string(), job.name.clone()),
            (WINDOW_KEY.to_string(), format!("{}/{}", req.from, req.to)),
            (
                "floe.rows-rejected".to_string(),
                report.rows_rejected.to_string(),
            ),
        ]),
        run_id: req.run_id.clone(),
    };
    let committed = match snapshot::commit_overwrite(client, &handle, loaded, &overwrite).await {
        Ok(c) => c,
        Err(Error::WouldEmpty(days)) => {
            delete_files(&handle.io, &added).await;
            return Err(would_empty(job, &days, report));
        }
        Err(e) => return Err(e),
    };
    report.snapshot_id = Some(committed.snapshot_id);
    report.replaced_files = committed.deleted_files;
    report.emptied_days = committed
        .emptied_days
        .iter()
        .map(|d| day_name(*d))
        .collect();
    report.commit_attempts = committed.attempts;
    report.status = if committed.already_landed {
        "already-committed"
    } else {
        "committed"
    }
    .into();
    Ok(())
}

/// A `format = "delta"` job: the same reading, conversion, rejects and
/// checks as for Iceberg; the rows stream into one Delta overwrite of the
/// window's `day` partitions, committed only when the checks pass.
async fn run_delta_job(
    catalog_props: &HashMap<String, String>,
    job: &Job,
    req: &IngestRequest,
    pipeline: &Pipeline,
    landing: Option<&str>,
    report: &mut JobReport,
) -> Result<()> {
    let days = req.days();
    let window = days::window(req.from, req.to);
    let fetcher = files::Fetcher::new(catalog_props)?;
    let (io, s3_props) = (fetcher.io.clone(), fetcher.s3_props.clone());
    let target = delta::Target::resolve(
        job,
        &pipeline.delta,
        pipeline.catalog.embedded_warehouse.as_deref(),
        &s3_props,
    )?;
    report.location = Some(target.url.to_string());
    let mut units: Vec<Unit> = match &job.source {
        Source::Files(cfg) => file_units(cfg, job, &days, &window, &fetcher, report).await?,
        Source::Http(h) if req.dry_run => {
            report.files_read = http::planned_requests(h, &days)?;
            Vec::new()
        }
        Source::Http(_) => Vec::new(),
    };
    if req.dry_run {
        report.status = "planned".into();
        return Ok(());
    }
    if let Some(version) = target.landed(&req.run_id).await? {
        report.status = "already-committed".into();
        report.snapshot_id = i64::try_from(version).ok();
        return Ok(());
    }
    if let Source::Http(h) = &job.source {
        let zone = http::landing::Landing::resolve(
            landing,
            target.url.as_str(),
            &job.namespace,
            io,
            s3_props,
        )?;
        units = api_units(job, h, req, &days, &zone, report).await?;
    }
    let table_schema = schema::arrow_schema(&schema::table_schema(job)?)?;
    let target_size = target_file_size(&job.properties);
    let metadata = vec![
        (RUN_ID_KEY.to_string(), serde_json::json!(req.run_id)),
        (JOB_KEY.to_string(), serde_json::json!(job.name)),
        (
            WINDOW_KEY.to_string(),
            serde_json::json!(format!("{}/{}", req.from, req.to)),
        ),
    ];
    let properties: HashMap<String, String> = job.properties.clone().into_iter().collect();
    let mut write = delta::Write::start(
        &target,
        delta::WriteSpec {
            schema: &table_schema,
            time_column: Some(EVENT_TIME_COLUMN),
            properties: &properties,
            run_id: &req.run_id,
            replace: delta::Replace::window(req.from, req.to),
            target_file_size: target_size,
            sort: &job.sort,
        },
    )
    .await?;
    let builder = BatchBuilder::new(job, table_schema, Utc::now().timestamp_micros())?;
    let (rejects, checker, read_result) =
        drain(job, units, fetcher, builder, &mut write, report).await;
    report.sample_rejects = rejects.iter().take(5).cloned().collect();
    for (day, rows) in &write.rows_per_day {
        report.days.entry(day_name(*day)).or_default().rows_written += rows;
    }
    report.rows_written = write.rows_per_day.values().sum();
    if let Err(e) = read_result {
        // The writer's own error, when it stopped first, explains more.
        unwritten(report);
        write.finish(Some(e.to_string()), Vec::new()).await?;
        return Err(e);
    }
    let verdict = judge(job, req, &days, checker, report);
    if report.rows_rejected > 0 {
        let batch = rejects::batch(rejects::arrow_schema()?, job, req, &rejects)?;
        match delta::append_rejects(&target, batch).await {
            Ok(v) => report.rejects_snapshot_id = i64::try_from(v).ok(),
            Err(e) => {
                unwritten(report);
                write.finish(Some(e.to_string()), Vec::new()).await?;
                return Err(e);
            }
        }
    }
    let guarded_days = match threshold(job, report).and(verdict) {
        Ok(days) => days,
        Err(e) => {
            unwritten(report);
            write.finish(Some(e.to_string()), Vec::new()).await?;
            return Err(e);
        }
    };
    write.guard(guarded_days);
    let committed = match write.finish(None, metadata).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(Error::Storage("the Delta write did not commit".into())),
        Err(Error::WouldEmpty(days)) => {
            unwritten(report);
            return Err(would_empty(job, &days, report));
        }
        Err(e) => return Err(e),
    };
    report.snapshot_id = i64::try_from(committed.version).ok();
    report.emptied_days = committed.emptied_days.clone();
    for (day, (files, bytes)) in &committed.days {
        let d = report.days.entry(day.clone()).or_default();
        d.files += files;
        d.bytes += bytes;
    }
    report.bytes_written = committed.days.values().map(|d| d.1).sum();
    report.data_files = committed.added_files;
    report.replaced_files = committed.removed_files;
    report.commit_attempts = 1;
    report.status = "committed".into();
    Ok(())
}

/// A Delta run that commits nothing reports nothing written.
fn unwritten(report: &mut JobReport) {
    report.rows_written = 0;
    report.days.clear();
}

impl Sink for delta::Write {
    async fn put(&mut self, batch: arrow_array::RecordBatch) -> Result<bool> {
        self.send(batch).await
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
}

/// Feeds a unit's records to `sink`, `path` being its local copy.
fn read_unit(
    job: &Job,
    unit: &Unit,
    path: &std::path::Path,
    sink: &mut dyn records::RecordSink,
) -> Result<()> {
    match &job.source {
        Source::Files(cfg) => records::read_file(path, cfg, sink),
        Source::Http(h) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
            let empty = std::collections::BTreeMap::new();
            let vars = unit.vars.as_ref().unwrap_or(&empty);
            http::read_page(&bytes, &unit.file.uri(), h, vars, sink)
        }
    }
}

/// `[job.expect]` over what the run wrote (`report.days` filled in): puts
/// the findings in the report and returns the verdict: on success, the
/// empty days the commit must not empty (those still holding rows then
/// refuse it).
fn judge(
    job: &Job,
    req: &IngestRequest,
    days: &[NaiveDate],
    checker: Option<expect::Checker>,
    report: &mut JobReport,
) -> Result<std::collections::BTreeSet<i32>> {
    let empty: Vec<&NaiveDate> = days
        .iter()
        .filter(|d| !report.days.contains_key(&d.to_string()))
        .collect();
    let empty_days: Vec<String> = empty.iter().map(|d| d.to_string()).collect();
    let mut expect = job.expect.clone();
    if req.allow_empty {
        expect.empty_days = EmptyDays::Allow;
    }
    let guarded = match expect.empty_days {
        EmptyDays::Protect => empty.iter().map(|d| days::day_number(**d)).collect(),
        EmptyDays::Fail | EmptyDays::Allow => Default::default(),
    };
    let found = match checker {
        Some(c) => c.finish(
            day_start(req.from),
            day_start(req.to) + crate::table::days::MICROS_PER_DAY,
            empty_days,
        ),
        None => expect::ExpectReport {
            empty_days,
            ..Default::default()
        },
    };
    let verdict = expect::verdict(&job.name, &expect, &found);
    report.expect = Some(found);
    verdict.map(|()| guarded)
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
        })
        .collect())
}

async fn delete_files(io: &FileIO, files: &[iceberg::spec::DataFile]) {
    for f in files {
        if let Err(e) = io.delete(f.file_path()).await {
            tracing::warn!(path = f.file_path(), error = %e, "could not delete an uncommitted data file");
        }
    }
}

/// Loads the job's table, creating it (and its namespace) on the first
/// run; `true` with a table this call created.
///
/// A table that never held a snapshot (a first run that failed, or died,
/// after creating it) is adopted: recreated with the job's contract when
/// that no longer matches. With `schema_drift = "evolve"`, columns the
/// contract gained are added to an existing table as nullable columns.
async fn open_table(client: &RestClient, job: &Job) -> Result<(LoadedTable, bool)> {
    if let Some(t) = client.load_table(&job.namespace, &job.table).await? {
        let fits = schema::check_compatible(job, t.metadata.current_schema())
            .and_then(|()| snapshot::require_day_spec(&t.metadata).map(|_| ()));
        match fits {
            Ok(()) => return Ok((t, false)),
            Err(_) if t.metadata.snapshots().next().is_none() => {
                tracing::info!(table = %job.table_ident(), "recreating a table that never held data, for the job's contract");
                client.drop_table(&job.namespace, &job.table, true).await?;
            }
            Err(e) if job.schema_drift == SchemaDrift::Evolve => {
                let table = t.metadata.current_schema();
                let added: std::collections::BTreeMap<String, crate::pipeline::ColumnType> = job
                    .columns
                    .iter()
                    .filter(|c| table.field_by_name(&c.name).is_none())
                    .map(|c| (c.name.clone(), c.kind))
                    .collect();
                if added.is_empty() {
                    return Err(e);
                }
                let t = drift::add_columns(client, job, t, &added).await?;
                schema::check_compatible(job, t.metadata.current_schema())?;
                snapshot::require_day_spec(&t.metadata)?;
                return Ok((t, false));
            }
            Err(e) => return Err(e),
        }
    }
    client.ensure_namespace(&job.namespace).await?;
    let table_schema = schema::table_schema(job)?;
    let order = schema::sort_order(job, &table_schema)?;
    let mut props: HashMap<String, String> = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
    ]);
    props.extend(job.properties.clone());
    tracing::info!(table = %job.table_ident(), "creating table");
    let loaded = client
        .create_table(
            &job.namespace,
            &job.table,
            &table_schema,
            &schema::job_spec(job, &table_schema)?,
            &order,
            &props,
        )
        .await?;
    Ok((loaded, true))
}

/// After a failed run: drops the table when this run created it and it
/// still holds no snapshot, so that a failed first run leaves nothing
/// behind (a fixed contract then starts afresh).
async fn drop_if_never_written(client: &RestClient, job: &Job) {
    match client.load_table(&job.namespace, &job.table).await {
        Ok(Some(t)) if t.metadata.snapshots().next().is_none() => {
            tracing::info!(table = %job.table_ident(), "dropping the table this failed first run created");
            if let Err(e) = client.drop_table(&job.namespace, &job.table, true).await {
                tracing::warn!(table = %job.table_ident(), error = %e, "could not drop the empty table");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(table = %job.table_ident(), error = %e, "could not check the table after a failed first run");
        }
    }
}

enum Msg {
    Batch(arrow_array::RecordBatch),
    Rejects(Vec<Reject>),
    Counts { read: u64, outside: u64 },
}

#[allow(clippy::too_many_arguments)]
async fn write_files(
    job: &Job,
    req: &IngestRequest,
    loaded: &LoadedTable,
    handle: &TableHandle,
    units: Vec<Unit>,
    fetcher: files::Fetcher,
    report: &mut JobReport,
) -> Result<(
    Vec<iceberg::spec::DataFile>,
    Vec<Reject>,
    Option<expect::Checker>,
)> {
    let arrow = schema::arrow_schema(loaded.metadata.current_schema())?;
    let ingest_time = Utc::now().timestamp_micros();
    let builder = BatchBuilder::new(job, arrow.clone(), ingest_time)?;
    let sort: Vec<usize> = job
        .sort
        .iter()
        .filter_map(|name| arrow.index_of(name).ok())
        .collect();
    let target = target_file_size(&job.properties);
    let mut lanes = lanes::Lanes::start(Some(EVENT_TIME_COLUMN), |lane, lanes| {
        Ok(DayWriters::new(
            &loaded.metadata,
            EVENT_TIME_COLUMN,
            handle.io.clone(),
            &format!("{}-{lane}", req.run_id),
            target,
            sort.clone(),
        )?
        .sharing(lanes))
    })?;
    let mut sink = LaneSink {
        lanes: &mut lanes,
        stopped: false,
    };
    let (rejects, checker, read_result) =
        drain(job, units, fetcher, builder, &mut sink, report).await;
    let (files, write_error) = lanes.close().await;
    if let Some(e) = write_error {
        delete_files(&handle.io, &files).await;
        return Err(e);
    }
    if let Err(e) = read_result {
        delete_files(&handle.io, &files).await;
        return Err(e);
    }
    report.sample_rejects = rejects.iter().take(5).cloned().collect();
    Ok((files, rejects, checker))
}

/// Where converted batches go: the Iceberg writer lanes or a Delta write.
pub(crate) trait Sink {
    /// Takes a batch; `Ok(false)` when the sink stopped on an error of its
    /// own (reported when it closes), so reading should stop.
    async fn put(&mut self, batch: arrow_array::RecordBatch) -> Result<bool>;
}

struct LaneSink<'a> {
    lanes: &'a mut lanes::Lanes<DayWriters>,
    stopped: bool,
}

impl Sink for LaneSink<'_> {
    async fn put(&mut self, batch: arrow_array::RecordBatch) -> Result<bool> {
        if !self.stopped && !self.lanes.send(batch).await? {
            self.stopped = true;
        }
        Ok(!self.stopped)
    }
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
    let (tx, mut rx) = mpsc::channel::<Msg>(CHANNEL_DEPTH);
    let reader_job = job.clone();
    let reader =
        tokio::task::spawn_blocking(move || read_all(&reader_job, units, &fetcher, builder, &tx));
    let mut rejects = Vec::new();
    let mut checker = expect::Checker::new(&job.expect);
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
        Err(e) => Err(Error::Source(format!("the reader thread failed: {e}"))),
    };
    let outcome = match failure {
        Some(e) => Err(e),
        None => read_result,
    };
    (rejects, checker, outcome)
}

/// The blocking side: reads every file, converts records, sends batches.
/// Remote files are fetched to a temporary file first (on this thread,
/// through the runtime's handle), so reading stays streaming and local.
fn read_all(
    job: &Job,
    units: Vec<Unit>,
    fetcher: &files::Fetcher,
    mut builder: BatchBuilder,
    tx: &mpsc::Sender<Msg>,
) -> Result<()> {
    let mut progress = progress::Progress::new(&job.name, units.len());
    let runtime = tokio::runtime::Handle::current();
    for unit in units {
        let uri = unit.file.uri();
        tracing::debug!(source = %uri, job = %job.name, "reading");
        progress.next_file();
        let (path, temp) = fetcher.materialize(&unit.file, &runtime)?;
        let mut sink = FileSink {
            job,
            uri,
            path: &path,
            builder: &mut builder,
            window: &unit.keep,
            tx,
            progress: &mut progress,
            rejected: Vec::new(),
            read: 0,
            outside: 0,
            drift_checked: false,
        };
        read_unit(job, &unit, &path, &mut sink)?;
        let (read, outside, rejected) = (sink.read, sink.outside, sink.rejected);
        drop(temp);
        tx.blocking_send(Msg::Counts { read, outside })
            .map_err(|_| closed())?;
        if !rejected.is_empty() {
            tx.blocking_send(Msg::Rejects(rejected))
                .map_err(|_| closed())?;
        }
    }
    progress.finish();
    if !builder.is_empty() {
        tx.blocking_send(Msg::Batch(builder.finish()?))
            .map_err(|_| closed())?;
    }
    Ok(())
}

fn closed() -> Error {
    Error::Storage("the writer stopped".into())
}

/// Converts one file's records and sends them on.
struct FileSink<'a> {
    job: &'a Job,
    uri: String,
    path: &'a std::path::Path,
    builder: &'a mut BatchBuilder,
    window: &'a std::ops::RangeInclusive<i32>,
    tx: &'a mpsc::Sender<Msg>,
    progress: &'a mut progress::Progress,
    rejected: Vec<Reject>,
    read: u64,
    outside: u64,
    drift_checked: bool,
}

impl FileSink<'_> {
    /// Schema drift: an unknown source field fails the run by default. A CSV
    /// header or Parquet schema is checked once; JSON records each time.
    fn check_drift<'f>(
        &mut self,
        fields: impl IntoIterator<Item = &'f String>,
        line: u64,
        once: bool,
    ) -> Result<()> {
        if self.job.schema_drift != SchemaDrift::Error || (once && self.drift_checked) {
            return Ok(());
        }
        self.drift_checked = true;
        match self.builder.unknown_field(fields) {
            Some(field) => Err(Error::Source(format!(
                "{}:{line}: unknown source field {field:?}: add it to the job's columns, or set schema_drift = \"ignore\"",
                self.path.display()
            ))),
            None => Ok(()),
        }
    }

    fn flush_rejects(&mut self) -> Result<()> {
        if self.rejected.len() >= BATCH_ROWS {
            self.tx
                .blocking_send(Msg::Rejects(std::mem::take(&mut self.rejected)))
                .map_err(|_| closed())?;
        }
        Ok(())
    }
}

impl records::RecordSink for FileSink<'_> {
    fn record(&mut self, record: Record) -> Result<()> {
        self.read += 1;
        self.progress.row();
        let once = self.job.source.files().map(|f| f.format) == Some(crate::pipeline::Format::Csv);
        self.check_drift(record.fields.keys(), record.line, once)?;
        let ts = match self.builder.event_time(&record) {
            Ok(ts) => ts,
            Err(reason) => {
                self.rejected.push(Reject::new(&record, reason, &self.uri));
                return self.flush_rejects();
            }
        };
        if !self.window.contains(&day_of(ts)) {
            self.outside += 1;
            return Ok(());
        }
        if let Err(reason) = self.builder.push(&record, ts, &self.uri) {
            self.rejected.push(Reject::new(&record, reason, &self.uri));
        }
        if self.builder.len() >= BATCH_ROWS {
            let batch = self.builder.finish()?;
            self.tx
                .blocking_send(Msg::Batch(batch))
                .map_err(|_| closed())?;
        }
        self.flush_rejects()
    }

    fn batch(&mut self, batch: arrow_array::RecordBatch, first: u64) -> Result<()> {
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        self.check_drift(names.iter(), first, true)?;
        let converted = self.builder.convert_batch(&batch, &self.uri, self.window)?;
        self.read += batch.num_rows() as u64;
        self.outside += converted.outside;
        for (row, reason) in converted.rejected {
            self.rejected.push(Reject {
                raw: records::row_text(&batch, row),
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
