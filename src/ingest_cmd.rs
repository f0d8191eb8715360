//! `floe ingest`: resolves the window and run id, runs the jobs, prints a
//! summary and writes the JSON report.

use std::io::Write;

use chrono::{Duration, NaiveDate, Utc};

use crate::cli::{IngestArgs, WindowArgs};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestRequest, JobReport};
use crate::pipeline;

/// The window: `--from/--to`, or the last `--days` days ending yesterday.
pub fn window(args: &WindowArgs, today: NaiveDate) -> Result<(NaiveDate, NaiveDate)> {
    let (from, to, days) = (args.from, args.to, args.days);
    match (from, to) {
        (Some(from), Some(to)) if from <= to => Ok((from, to)),
        (Some(from), Some(to)) => Err(Error::Config(format!("--from {from} is after --to {to}"))),
        _ => {
            let days = i64::from(days.unwrap_or(1));
            if days == 0 {
                return Err(Error::Config("--days must be at least 1".into()));
            }
            let to = today - Duration::days(1);
            Ok((to - Duration::days(days - 1), to))
        }
    }
}

/// A fresh run id: UTC time and a random tail.
pub fn new_run_id() -> String {
    let now = Utc::now().format("%Y%m%dT%H%M%SZ");
    let tail = uuid::Uuid::new_v4().simple().to_string();
    format!("{now}-{}", &tail[..8])
}

/// Records per commit with --follow unless --max-records says otherwise.
const FOLLOW_MAX_RECORDS: u64 = 1_000_000;

/// Runs `floe ingest`.
pub async fn run(args: &IngestArgs) -> Result<()> {
    let mut pipeline = pipeline::load(&args.pipeline)?;
    let (from, to) = window(&args.window, Utc::now().date_naive())?;
    let request = IngestRequest {
        from,
        to,
        dry_run: args.dry_run,
        replay: args.replay,
        allow_empty: args.allow_empty,
        now: Utc::now(),
        run_id: args.run_id.clone().unwrap_or_else(new_run_id),
        max_records: args.max_records,
    };
    if args.follow {
        check_follow(&pipeline, &args.jobs)?;
    }
    tracing::info!(run_id = %request.run_id, %from, %to, "ingest");
    let embedded = crate::connect::serve_embedded(&mut pipeline, !args.dry_run).await?;
    let outcome = if args.follow {
        follow(&pipeline, args, request).await
    } else {
        let (reports, outcome) = ingest::run(&pipeline, &args.jobs, &request).await;
        print_summary(&reports, args.dry_run);
        write_report(args, &request, &reports).and(outcome)
    };
    if let Some(running) = embedded {
        running.shutdown().await;
    }
    outcome
}

/// Writes the JSON report when `--report` asks for one.
fn write_report(args: &IngestArgs, request: &IngestRequest, reports: &[JobReport]) -> Result<()> {
    let Some(path) = &args.report else {
        return Ok(());
    };
    let json = serde_json::to_vec_pretty(&serde_json::json!({
        "run_id": request.run_id,
        "window": { "from": request.from, "to": request.to },
        "jobs": reports,
    }))
    .map_err(|e| Error::Config(format!("cannot encode the report: {e}")).caused_by(e))?;
    std::fs::write(path, json).map_err(|source| Error::Io {
        context: format!("cannot write the report {}", path.display()),
        source,
    })
}

/// `--follow` runs Kafka jobs only: other sources have no stream to wait on.
fn check_follow(pipeline: &pipeline::Pipeline, selected: &[String]) -> Result<()> {
    let jobs = ingest::selected_jobs(pipeline, selected)?;
    match jobs
        .iter()
        .find(|j| !matches!(j.source, pipeline::Source::Kafka(_)))
    {
        Some(j) => Err(Error::Config(format!(
            "--follow keeps Kafka jobs running; job {} does not read Kafka (name the Kafka jobs to follow, e.g. floe ingest --follow <job>)",
            j.name
        ))),
        None => Ok(()),
    }
}

/// `--follow`: one bounded run every `--commit-every` (each its own run id,
/// `<id>-<n>`, and commit), until SIGTERM or Ctrl-C, which lets the run in
/// progress commit first. Runs that commit print their summary; the
/// report file holds the latest run's.
async fn follow(
    pipeline: &pipeline::Pipeline,
    args: &IngestArgs,
    first: IngestRequest,
) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| Error::Io {
        context: "cannot install the SIGTERM and Ctrl-C handlers".into(),
        source,
    };
    // Installed before the first run, so a stop is never a kill.
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io)?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
        let _ = stop.send(true);
    });
    let base = first.run_id.clone();
    let every = args.commit_every;
    let mut outcome = Ok(());
    for n in 1_u64.. {
        let started = std::time::Instant::now();
        let request = IngestRequest {
            run_id: format!("{base}-{n}"),
            now: Utc::now(),
            max_records: Some(args.max_records.unwrap_or(FOLLOW_MAX_RECORDS)),
            ..first.clone()
        };
        let (reports, result) = ingest::run(pipeline, &args.jobs, &request).await;
        let committed: Vec<JobReport> = reports
            .iter()
            .filter(|r| r.status != "up-to-date")
            .cloned()
            .collect();
        print_summary(&committed, false);
        if let Err(e) = write_report(args, &request, &reports).and(result) {
            outcome = Err(e);
            break;
        }
        if *stopped.borrow() {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(every.saturating_sub(started.elapsed())) => {}
            _ = stopped.changed() => break,
        }
    }
    listener.abort();
    tracing::info!("follow stopped");
    outcome
}

/// Prints one block per job (the files a dry run would read).
pub fn print_summary(reports: &[JobReport], dry_run: bool) {
    let mut out = std::io::stdout().lock();
    for r in reports {
        if dry_run {
            let _ = writeln!(
                out,
                "{} → {} ({} to {}): would read {} file(s) or request(s):",
                r.job,
                r.table,
                r.window.0,
                r.window.1,
                r.files_read.len()
            );
            for f in &r.files_read {
                let _ = writeln!(out, "  {f}");
            }
            continue;
        }
        let _ = writeln!(
            out,
            "{} → {}{}: {} ({} read, {} written, {} rejected, {} outside the window; {} file(s), {} bytes; snapshot {}; {} ms)",
            r.job,
            r.table,
            if r.format == crate::pipeline::TableFormat::Delta {
                " (delta)"
            } else {
                ""
            },
            r.status,
            r.rows_read,
            r.rows_written,
            r.rows_rejected,
            r.rows_outside_window,
            r.data_files,
            r.bytes_written,
            r.snapshot_id.map_or("-".to_string(), |s| s.to_string()),
            r.duration_ms
        );
        if let Some(location) = &r.location {
            let _ = writeln!(out, "  table files: {location}");
        }
        if let Some(h) = &r.http {
            let how = if h.replayed {
                format!("replayed {} landed page(s), no requests", h.pages)
            } else {
                format!(
                    "{} request(s), {} retried, {} page(s), {} bytes; {} error bodies, {} empty responses",
                    h.requests, h.retries, h.pages, h.bytes, h.error_bodies, h.empty_responses
                )
            };
            let _ = writeln!(out, "  api: {how}; raw responses in {}", h.landing);
        }
        if let Some(x) = &r.expect
            && (x.duplicates > 0 || x.gaps > 0 || !x.empty_days.is_empty())
        {
            let _ = writeln!(
                out,
                "  expect: {} duplicate(s), {} gap(s), {} empty day(s)",
                x.duplicates,
                x.gaps,
                x.empty_days.len()
            );
            for e in &x.examples {
                let _ = writeln!(out, "    {e}");
            }
        }
        if !r.emptied_days.is_empty() {
            let _ = writeln!(
                out,
                "  emptied on purpose (their rows were deleted): {}",
                r.emptied_days.join(", ")
            );
        }
        for reject in &r.sample_rejects {
            let _ = writeln!(
                out,
                "  reject {}:{}: {}",
                reject.source, reject.line, reject.reason
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "  error: {e}");
        }
    }
}
