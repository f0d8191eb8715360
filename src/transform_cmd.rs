//! `floe transform` and `floe run` (ingest, then transform): connect,
//! run, print a summary per model, write the JSON report.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::cli::{ModelFlags, RunArgs, TransformArgs};
use crate::connect::Connection;
use crate::error::{Error, Result};
use crate::ingest::{self, IngestRequest};
use crate::ingest_cmd::{new_run_id, print_summary as print_ingest, window};
use crate::pipeline::{self, Pipeline};
use crate::rest::RestClient;
use crate::transform::{self, ModelReport, TransformRequest};

/// Rows of each last-layer table `floe run` prints.
const PREVIEW_ROWS: usize = 12;

/// Runs `floe transform`.
pub async fn transform_cmd(args: &TransformArgs) -> Result<()> {
    let (settings, _) =
        crate::connect::settings(&args.catalog.pipeline, args.catalog.catalog.as_deref())?;
    let pipeline = args
        .catalog
        .pipeline
        .exists()
        .then(|| pipeline::load(&args.catalog.pipeline))
        .transpose()?;
    let req = TransformRequest {
        models_dir: models_dir(&args.models, pipeline.as_ref())?,
        select: args.models.select.clone(),
        window: args.from.zip(args.to),
        run_id: args.run_id.clone().unwrap_or_else(new_run_id),
        dry_run: args.dry_run,
        concurrency: usize::from(args.models.concurrency),
        places: pipeline
            .as_ref()
            .map(crate::places::Places::of)
            .unwrap_or_default(),
        model_format: pipeline
            .as_ref()
            .map(|p| p.model_format)
            .unwrap_or_default(),
        engine: engine(&args.models, pipeline.as_ref()),
        trino: pipeline.as_ref().and_then(|p| p.trino.clone()),
    };
    if let Some((from, to)) = req.window
        && from > to
    {
        return Err(Error::Config(format!("--from {from} is after --to {to}")));
    }
    let connection = Connection::open(&settings).await?;
    let req = with_catalog_storage(req, &connection);
    let (reports, outcome) = transform::run(&connection.client, &req).await;
    connection.close().await;
    print_models(&reports);
    if let Some(path) = &args.report {
        write_report(
            path,
            &serde_json::json!({ "run_id": req.run_id, "models": reports }),
        )?;
    }
    outcome
}

/// Runs `floe run`: every ingest job for the window, then every model.
pub async fn run_cmd(args: &RunArgs) -> Result<()> {
    let pipeline = pipeline::load(&args.pipeline)?;
    let (from, to) = window(&args.window, Utc::now().date_naive())?;
    let run_id = args.run_id.clone().unwrap_or_else(new_run_id);
    let ingest_req = IngestRequest {
        from,
        to,
        dry_run: false,
        replay: args.replay,
        allow_empty: args.allow_empty,
        now: Utc::now(),
        max_records: None,
        run_id: run_id.clone(),
    };
    let req = TransformRequest {
        models_dir: models_dir(&args.models, Some(&pipeline))?,
        select: args.models.select.clone(),
        window: None,
        run_id: run_id.clone(),
        dry_run: false,
        concurrency: usize::from(args.models.concurrency),
        places: crate::places::Places::of(&pipeline),
        model_format: pipeline.model_format,
        engine: engine(&args.models, Some(&pipeline)),
        trino: pipeline.trino.clone(),
    };
    eprintln!("ingest {from} to {to}");
    let mut served = pipeline.clone();
    let embedded = crate::connect::serve_embedded(&mut served, true).await?;
    let (jobs, ingested) = ingest::run(&served, &[], &ingest_req).await;
    if let Some(running) = embedded {
        running.shutdown().await;
    }
    print_ingest(&jobs, false);
    let mut report = serde_json::json!({
        "run_id": run_id,
        "window": { "from": from, "to": to },
        "jobs": jobs,
    });
    // A partial ingest (skipped for_each entries, their rows kept)
    // committed its data: the models still run, and the run ends partial.
    let partial = match ingested {
        Err(e) if matches!(e.kind(), crate::error::Error::Partial(_)) => Some(e),
        Err(e) => {
            if let Some(path) = &args.report {
                write_report(path, &report)?;
            }
            return Err(e);
        }
        Ok(()) => None,
    };
    eprintln!("transform");
    let connection = Connection::open(&pipeline.catalog).await?;
    let req = with_catalog_storage(req, &connection);
    let (models, outcome) = transform::run(&connection.client, &req).await;
    print_models(&models);
    if outcome.is_ok() {
        print_last_layer(&connection.client, &req.places, &models).await;
    }
    connection.close().await;
    report["models"] = serde_json::to_value(&models).unwrap_or_default();
    if let Some(path) = &args.report {
        write_report(path, &report)?;
    }
    match (outcome, partial) {
        (Ok(()), Some(p)) => Err(p),
        (outcome, _) => outcome,
    }
}

/// The request with its Delta tables reached through the connected
/// catalog's storage settings.
fn with_catalog_storage(req: TransformRequest, connection: &Connection) -> TransformRequest {
    TransformRequest {
        places: req
            .places
            .clone()
            .with_store_properties(&connection.client.properties),
        ..req
    }
}

/// `--engine`, else the pipeline's `[transform] engine`, else DataFusion.
fn engine(flags: &ModelFlags, pipeline: Option<&Pipeline>) -> pipeline::Engine {
    match flags.engine.as_deref() {
        Some("trino") => pipeline::Engine::Trino,
        Some(_) => pipeline::Engine::DataFusion,
        None => pipeline.map(|p| p.engine).unwrap_or_default(),
    }
}

/// `--models`, else the pipeline's `[transform] models`, else `./sql`.
fn models_dir(flags: &ModelFlags, pipeline: Option<&Pipeline>) -> Result<PathBuf> {
    let dir = flags
        .models
        .clone()
        .or_else(|| pipeline.and_then(|p| p.models_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("sql"));
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "models folder {} does not exist; pass --models DIR or set [transform] models in the pipeline file",
            dir.display()
        )));
    }
    Ok(dir)
}

fn write_report(path: &Path, value: &serde_json::Value) -> Result<()> {
    let json = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode the report: {e}")).caused_by(e))?;
    std::fs::write(path, json).map_err(|source| Error::Io {
        context: format!("cannot write the report {}", path.display()),
        source,
    })
}

fn print_models(reports: &[ModelReport]) {
    let mut out = std::io::stdout().lock();
    for r in reports {
        let refresh = match r.refresh.as_str() {
            "days" => format!("days {}", day_ranges(&r.days)),
            "" => "-".to_string(),
            other => other.to_string(),
        };
        if matches!(
            r.status.as_str(),
            "up-to-date" | "skipped" | "planned" | "unchanged"
        ) || r.refresh.is_empty()
        {
            let detail = match r.status.as_str() {
                "planned" => format!("would refresh {refresh}: {}", r.reason),
                "unchanged" => "recomputed, same rows: nothing committed".to_string(),
                _ => r.error.clone().unwrap_or_else(|| r.reason.clone()),
            };
            let _ = writeln!(out, "{}: {} ({detail})", r.model, r.status);
            continue;
        }
        let engine = if r.engine == "trino" {
            "on trino; "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{}: {} ({engine}refresh {refresh}; {} rows, {} file(s), {} bytes; snapshot {}; {} ms)",
            r.model,
            r.status,
            r.rows_written,
            r.data_files,
            r.bytes_written,
            r.snapshot_id.map_or("-".to_string(), |s| s.to_string()),
            r.duration_ms
        );
        if !r.reason.is_empty() {
            let _ = writeln!(out, "  why: {}", r.reason);
        }
        let passed = r.tests.iter().filter(|t| t.failures == 0).count();
        if !r.tests.is_empty() {
            let _ = writeln!(out, "  tests: {passed}/{} passed", r.tests.len());
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "  error: {e}");
        }
    }
}

/// `2024-03-30..2024-04-01, 2024-04-03` from day names.
fn day_ranges(days: &[String]) -> String {
    let numbers = days
        .iter()
        .filter_map(|d| d.parse().ok())
        .map(crate::table::days::day_number)
        .collect();
    crate::table::days::describe_days(&numbers)
}

/// Prints the first rows of the last layer's tables (the layer that runs
/// last: gold in the example, whatever the pipeline names it) and where
/// they are.
async fn print_last_layer(
    client: &RestClient,
    places: &crate::places::Places,
    reports: &[ModelReport],
) {
    let mut out = String::new();
    for r in last_layer(reports) {
        let location = match places.location(&r.model, r.format) {
            Ok(l) => l,
            Err(e) => {
                out.push_str(&format!("\n{}: cannot preview: {e}\n", r.model));
                continue;
            }
        };
        match transform::preview(client, &location, &r.model, PREVIEW_ROWS).await {
            Ok(Some((location, batches))) => {
                out.push_str(&format!("\n{} ({location}):\n", r.model));
                if let Ok(table) = pretty_format_batches(&batches) {
                    out.push_str(&table.to_string());
                    out.push('\n');
                }
            }
            Ok(None) => {}
            Err(e) => out.push_str(&format!("\n{}: cannot preview: {e}\n", r.model)),
        }
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
}

/// The reports of the models of the layer that ran last (reports are in
/// run order, which follows the layers' dependencies).
fn last_layer(reports: &[ModelReport]) -> Vec<&ModelReport> {
    let layer = |r: &ModelReport| r.model.split_once('.').map(|(l, _)| l.to_string());
    let Some(last) = reports.last().and_then(layer) else {
        return Vec::new();
    };
    reports
        .iter()
        .filter(|r| layer(r).as_deref() == Some(last.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(model: &str) -> ModelReport {
        ModelReport {
            model: model.to_string(),
            ..ModelReport::default()
        }
    }

    #[test]
    fn the_last_layer_is_the_one_that_ran_last_whatever_its_name() {
        let reports = [
            report("staging.prices"),
            report("marts.dim_ticker"),
            report("staging.tickers"),
            report("marts.fact_returns"),
        ];
        let names: Vec<&str> = last_layer(&reports)
            .iter()
            .map(|r| r.model.as_str())
            .collect();
        assert_eq!(names, ["marts.dim_ticker", "marts.fact_returns"]);
        assert!(last_layer(&[]).is_empty());
    }
}
