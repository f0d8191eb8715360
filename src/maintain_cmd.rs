//! The maintenance commands' command-line side: resolve the table (a
//! pipeline's Delta table, or a table of the catalog) once, have the table
//! layer work on it, print a summary or JSON, map failures to the exit
//! code.

use std::io::Write;

use serde::Serialize;

use crate::cli::{CatalogArgs, CompactArgs, ExpireArgs, MaintainArgs, OrphanArgs, StatusArgs};
use crate::connect::{self, Connection};
use crate::error::{Error, Result};
use crate::maintain::human_bytes;
use crate::maintain::policy::{Policy, maintain_table, prometheus, write_atomically};
use crate::pipeline::MaintainSettings;
use crate::places::Places;
use crate::rest::RestClient;
use crate::table::Table;
use crate::table::iceberg::filter::Filter;
use crate::table::iceberg::orphans::DEFAULT_WINDOW;
use crate::table::iceberg::{all_tables, small_file_limit};
use crate::table::maintenance::{CompactOptions, ExpireOptions, OrphanOptions};

/// Connects, runs `work`, and always stops an embedded catalog.
pub(crate) async fn with_catalog<T>(
    args: &CatalogArgs,
    work: impl AsyncFnOnce(&RestClient, &MaintainSettings) -> Result<T>,
) -> Result<T> {
    let (settings, maintain) = connect::settings(&args.pipeline, args.catalog.as_deref())?;
    let conn = Connection::open(&settings).await?;
    let out = work(&conn.client, &maintain).await;
    conn.close().await;
    out
}

/// Where a pipeline's Delta tables are: its Delta jobs' and the Delta
/// models of its models folder (a folder that cannot be read adds none,
/// with a warning).
pub fn pipeline_places(pipeline: &crate::pipeline::Pipeline) -> Places {
    let places = Places::of(pipeline);
    let Some(dir) = &pipeline.models_dir else {
        return places;
    };
    match crate::transform::model::discover(dir) {
        Ok(models) => places.with_models(models.into_iter().map(|m| (m.name, m.format))),
        Err(e) => {
            tracing::warn!(error = %e, "the models folder was not read; its Delta tables are left out");
            places
        }
    }
}

/// The Delta table `ident` (`namespace.table`) of the pipeline (a job's or
/// a model's), if it is one.
///
/// # Errors
/// No Delta root for it.
pub fn delta_table_of(
    pipeline: &crate::pipeline::Pipeline,
    ident: &str,
) -> Result<Option<crate::table::delta::Target>> {
    let places = pipeline_places(pipeline);
    if !places.is_delta(ident) {
        return Ok(None);
    }
    places.target(ident).map(Some)
}

/// Every Delta table of the pipeline (its jobs' and its models'), as
/// `namespace.table`.
pub fn delta_tables(pipeline: &crate::pipeline::Pipeline) -> Vec<String> {
    pipeline_places(pipeline).tables()
}

/// The Delta table the pipeline writes as `table` (a job's or a model's),
/// when it does.
pub(crate) fn delta_target(
    args: &CatalogArgs,
    table: &str,
) -> Result<Option<crate::table::delta::Target>> {
    if args.catalog.is_some() || !args.pipeline.exists() {
        return Ok(None);
    }
    let p = crate::pipeline::load(&args.pipeline)?;
    delta_table_of(&p, table)
}

/// Opens `ident` and runs `work` on it: a pipeline's Delta table directly
/// (no catalog needed), any other table through the catalog.
async fn with_table<T>(
    args: &CatalogArgs,
    ident: &str,
    work: impl AsyncFnOnce(&mut Table, &MaintainSettings) -> Result<T>,
) -> Result<T> {
    if let Some(target) = delta_target(args, ident)? {
        let (_, maintain) = connect::settings(&args.pipeline, None)?;
        return work(&mut Table::delta(ident, target), &maintain).await;
    }
    with_catalog(args, async |client, maintain| {
        let mut table = Table::iceberg(client, ident).await?;
        work(&mut table, maintain).await
    })
    .await
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode the report: {e}")).caused_by(e))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|source| Error::Io {
        context: "cannot write to stdout".into(),
        source,
    })
}

fn say(line: String) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `floe compact`.
pub async fn compact_cmd(args: &CompactArgs) -> Result<()> {
    let filter = match &args.filter {
        Some(text) => Filter::parse(text)?,
        None => Filter::default(),
    };
    let days = match (args.from, args.to) {
        (Some(from), Some(to)) if from > to => {
            return Err(Error::Config(format!("--from {from} is after --to {to}")));
        }
        (Some(from), Some(to)) => Some((from, to)),
        _ => None,
    };
    let opts = CompactOptions {
        target_file_size: args.target_file_size,
        min_file_size: args.min_file_size,
        min_input_files: args.min_input_files,
        commit_bytes: args.commit_bytes.max(1),
        filter,
        sort: args.sort,
        dry_run: args.dry_run,
        days,
        zorder: args.zorder.clone(),
        ..CompactOptions::default()
    };
    let report = with_table(&args.catalog, &args.table, async |table, _| {
        table.compact(&opts).await
    })
    .await?;
    if args.json {
        return print_json(&report);
    }
    say(match report.status.as_str() {
        "nothing-to-do" => format!(
            "{}: nothing to compact ({} data files, {}; no partition has {} files below {})",
            report.table,
            report.files_before,
            human_bytes(report.bytes_before),
            args.min_input_files,
            human_bytes(
                opts.min_file_size
                    .unwrap_or_else(|| small_file_limit(report.target_file_size))
            )
        ),
        "planned" => format!(
            "{}: would rewrite {} files ({}) in {} group(s) of {} partition(s)",
            report.table,
            report.input_files,
            human_bytes(report.input_bytes),
            report.groups_planned,
            report.partitions_considered
        ),
        _ => format!(
            "{}: {} small files rewritten into {} in {} partition(s); {} → {} data files, {} → {} ({} rows; {} group(s) dropped for concurrent changes; snapshots {:?}; {} ms)",
            report.table,
            report.input_files,
            report.output_files,
            report.partitions_compacted,
            report.files_before,
            report.files_after,
            human_bytes(report.bytes_before),
            human_bytes(report.bytes_after),
            report.rows,
            report.groups_dropped,
            report.snapshots,
            report.duration_ms
        ),
    });
    Ok(())
}

/// `floe expire-snapshots`.
pub async fn expire_cmd(args: &ExpireArgs) -> Result<()> {
    let report = with_table(&args.catalog, &args.table, async |table, maintain| {
        let mut policy = Policy::resolve(maintain, &table.properties().await?)?;
        if let Some(min) = table.min_retention().await? {
            policy.hold_to(min);
        }
        let opts = ExpireOptions {
            older_than: args.older_than.unwrap_or(policy.expire_older_than),
            retain_last: args.retain_last.unwrap_or(policy.retain_last),
            dry_run: args.dry_run,
        };
        table.expire(&opts).await
    })
    .await?;
    if args.json {
        return print_json(&report);
    }
    let (verb, files) = if args.dry_run {
        ("would expire", "files to delete")
    } else {
        ("expired", "files deleted")
    };
    let mut line = format!(
        "{}: {verb} {} of {} snapshots; {files}: {} data ({}), {} delete, {} manifests, {} manifest lists",
        report.table,
        report.expired.len(),
        report.snapshots_before,
        report.data_files_deleted,
        human_bytes(report.bytes_deleted),
        report.delete_files_deleted,
        report.manifests_deleted,
        report.manifest_lists_deleted,
    );
    if let Some(v) = report.checkpoint {
        line.push_str(&format!("; checkpoint at version {v}"));
    }
    if report.log_entries_removed > 0 {
        line.push_str(&format!(
            "; {} expired log entries removed",
            report.log_entries_removed
        ));
    }
    say(line);
    if report.delete_failures > 0 {
        say(format!(
            "  {} file(s) could not be deleted; remove-orphans will delete them later",
            report.delete_failures
        ));
    }
    Ok(())
}

/// `floe remove-orphans`.
pub async fn orphans_cmd(args: &OrphanArgs) -> Result<()> {
    if args
        .older_than
        .is_some_and(|d| d < std::time::Duration::from_secs(3600))
    {
        tracing::warn!(
            "--older-than is under an hour: files a running writer has not committed yet may be deleted"
        );
    }
    let report = with_table(&args.catalog, &args.table, async |table, _| {
        let default = table
            .min_retention()
            .await?
            .map_or(DEFAULT_WINDOW, |min| min.max(DEFAULT_WINDOW));
        let opts = OrphanOptions {
            older_than: args.older_than.unwrap_or(default),
            dry_run: args.dry_run,
        };
        table.remove_orphans(&opts).await
    })
    .await?;
    if args.json {
        return print_json(&report);
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    say(format!(
        "{}: {verb} {} orphan file(s), {} ({} files listed; {} recent unreferenced file(s) kept)",
        report.table,
        report.orphans.len(),
        human_bytes(report.orphan_bytes),
        report.files_listed,
        report.recent_unreferenced
    ));
    for o in &report.orphans {
        say(format!("  {o}"));
    }
    if report.delete_failures > 0 {
        return Err(Error::Storage(format!(
            "{} orphan file(s) could not be deleted (see the log)",
            report.delete_failures
        )));
    }
    Ok(())
}

/// `floe status`.
pub async fn status_cmd(args: &StatusArgs) -> Result<()> {
    let window = args.orphans_older_than.unwrap_or(DEFAULT_WINDOW);
    let names: Vec<String> = if args.tables.is_empty() {
        let mut all =
            with_catalog(&args.catalog, async |client, _| all_tables(client).await).await?;
        all.extend(pipeline_delta_tables(&args.catalog)?);
        all
    } else {
        args.tables.clone()
    };
    let mut statuses = Vec::new();
    for t in &names {
        statuses.push(
            with_table(&args.catalog, t, async |table, maintain| {
                if !table.written().await? {
                    return Ok(None);
                }
                table
                    .status(Some(window), maintain.target_file_size)
                    .await
                    .map(Some)
            })
            .await?,
        );
    }
    let statuses: Vec<_> = statuses.into_iter().flatten().collect();
    if args.json {
        return print_json(&statuses);
    }
    say(format!(
        "{:<32} {:>9} {:>8} {:>10} {:>11} {:>6} {:>10} {:>9} {:>8}",
        "table",
        "snapshots",
        "files",
        "bytes",
        "small files",
        "parts",
        "max/part",
        "metadata",
        "orphans"
    ));
    for s in &statuses {
        say(format!(
            "{:<32} {:>9} {:>8} {:>10} {:>10.0}% {:>6} {:>10} {:>9} {:>8}",
            s.table,
            s.snapshots,
            s.data_files,
            human_bytes(s.data_bytes),
            s.small_file_ratio * 100.0,
            s.partitions,
            s.max_files_per_partition,
            s.metadata_file_bytes.map_or("-".into(), human_bytes),
            s.orphan_candidates
        ));
    }
    Ok(())
}

/// The pipeline's Delta tables (its jobs' and its models'), when the
/// commands work from a pipeline file.
fn pipeline_delta_tables(args: &CatalogArgs) -> Result<Vec<String>> {
    if args.catalog.is_some() || !args.pipeline.exists() {
        return Ok(Vec::new());
    }
    let p = crate::pipeline::load(&args.pipeline)?;
    Ok(delta_tables(&p))
}

/// `floe maintain`.
pub async fn maintain_cmd(args: &MaintainArgs) -> Result<()> {
    if args.tables.is_empty() && !args.all {
        return Err(Error::Config(
            "name the tables to maintain, or pass --all for every table of the catalog".into(),
        ));
    }
    let started = std::time::Instant::now();
    let outcomes = with_catalog(&args.catalog, async |client, maintain| {
        let mut maintain = maintain.clone();
        match args.compact_engine.as_deref() {
            Some("trino") => maintain.compact_engine = Some(crate::pipeline::CompactEngine::Trino),
            Some(_) => maintain.compact_engine = Some(crate::pipeline::CompactEngine::Floe),
            None => {}
        }
        let maintain = &maintain;
        let names: Vec<String> = if args.all {
            let mut all = all_tables(client).await?;
            all.extend(pipeline_delta_tables(&args.catalog)?);
            all
        } else {
            args.tables.clone()
        };
        let mut out = Vec::new();
        for t in &names {
            tracing::info!(table = %t, "maintaining");
            let opened = match delta_target(&args.catalog, t)? {
                Some(target) => Ok(Table::delta(t, target)),
                None => Table::iceberg(client, t).await,
            };
            out.push(match opened {
                Ok(mut table) => maintain_table(&mut table, maintain, args.dry_run).await,
                Err(e) => {
                    tracing::error!(table = %t, error = %e, "maintenance failed");
                    crate::maintain::policy::TableOutcome {
                        table: t.clone(),
                        status: "failed".into(),
                        error: Some(e.to_string()),
                        ..Default::default()
                    }
                }
            });
        }
        Ok(out)
    })
    .await?;
    let failed = outcomes.iter().filter(|o| o.status == "failed").count();
    let report = serde_json::json!({
        "dry_run": args.dry_run,
        "tables": outcomes,
        "failed": failed,
        "duration_ms": started.elapsed().as_millis(),
    });
    if let Some(path) = &args.report {
        let text = serde_json::to_vec_pretty(&report)
            .map_err(|e| Error::Config(format!("cannot encode the report: {e}")).caused_by(e))?;
        std::fs::write(path, text).map_err(|source| Error::Io {
            context: format!("cannot write the report {}", path.display()),
            source,
        })?;
    }
    if let Some(path) = &args.metrics_file {
        write_atomically(path, &prometheus(&outcomes, chrono::Utc::now().timestamp()))?;
    }
    if args.json {
        print_json(&report)?;
    } else {
        for o in &outcomes {
            let actions = if o.actions.is_empty() {
                "nothing due".to_string()
            } else {
                o.actions.join(", ")
            };
            say(format!(
                "{}: {} ({actions}): {} → {} data files, {} → {}, {} snapshot(s) expired, {} file(s) deleted, {} ms{}",
                o.table,
                o.status,
                o.before.data_files,
                o.after.data_files,
                human_bytes(o.before.data_bytes),
                human_bytes(o.after.data_bytes),
                o.snapshots_expired,
                o.files_deleted,
                o.duration_ms,
                o.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
            ));
        }
    }
    if failed > 0 {
        return Err(Error::Maintenance(format!(
            "{failed} of {} table(s) failed",
            outcomes.len()
        )));
    }
    Ok(())
}
