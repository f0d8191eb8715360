//! The maintenance commands' command-line side: connect, run, print a
//! summary or JSON, map failures to the exit code.

use std::io::Write;

use serde::Serialize;

use crate::cli::{CatalogArgs, CompactArgs, ExpireArgs, MaintainArgs, OrphanArgs, StatusArgs};
use crate::connect::{self, Connection};
use crate::error::{Error, Result};
use crate::maintain::compact::{CompactOptions, compact};
use crate::maintain::expire::{ExpireOptions, expire};
use crate::maintain::filter::Filter;
use crate::maintain::orphans::{DEFAULT_WINDOW, OrphanOptions, remove};
use crate::maintain::policy::{Policy, maintain_table, prometheus, write_atomically};
use crate::maintain::status::status;
use crate::maintain::{Target, all_tables, human_bytes, small_file_limit};
use crate::pipeline::MaintainSettings;
use crate::rest::RestClient;

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

/// The Delta table the pipeline's jobs write as `table`, when one does
/// (maintenance then acts on it instead of asking the catalog).
pub(crate) fn delta_target(
    args: &CatalogArgs,
    table: &str,
) -> Result<Option<crate::table::delta::Target>> {
    if args.catalog.is_some() || !args.pipeline.exists() {
        return Ok(None);
    }
    let p = crate::pipeline::load(&args.pipeline)?;
    crate::table::delta::maintain::target_of(&p, table)
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode the report: {e}")))?;
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
    let mut filter = match &args.filter {
        Some(text) => Filter::parse(text)?,
        None => Filter::default(),
    };
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            return Err(Error::Config(format!("--from {from} is after --to {to}")));
        }
        filter = filter.and(Filter::days(from, to));
    }
    let opts = CompactOptions {
        target_file_size: args.target_file_size,
        min_file_size: args.min_file_size,
        min_input_files: args.min_input_files,
        commit_bytes: args.commit_bytes.max(1),
        filter,
        sort: args.sort,
        dry_run: args.dry_run,
        ..CompactOptions::default()
    };
    if let Some(target) = delta_target(&args.catalog, &args.table)? {
        if args.dry_run || args.filter.is_some() || args.sort {
            return Err(Error::Config(
                "--dry-run, --filter and --sort are for Iceberg tables; a Delta table is compacted whole or by --from/--to days".into(),
            ));
        }
        let size = args.target_file_size.unwrap_or(128 * 1024 * 1024);
        let days = args.from.zip(args.to);
        let report =
            crate::table::delta::maintain::compact(&target, size, days, &args.zorder).await?;
        if args.json {
            return print_json(&report);
        }
        say(format!(
            "{} (delta): {} ({} small files rewritten into {} in {} partition(s){})",
            args.table,
            report.status,
            report.files_removed,
            report.files_added,
            report.partitions,
            report
                .version
                .map_or(String::new(), |v| format!("; version {v}"))
        ));
        return Ok(());
    }
    if !args.zorder.is_empty() {
        return Err(Error::Config(format!(
            "--zorder is for Delta tables; {} is an Iceberg table (use --sort with its sort order)",
            args.table
        )));
    }
    let report = with_catalog(&args.catalog, async |client, _| {
        let mut target = Target::open(client, &args.table).await?;
        compact(client, &mut target, &opts).await
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
            "{}: {} → {} data files, {} → {} ({} rows rewritten in {} partition(s); {} group(s) dropped for concurrent changes; snapshots {:?}; {} ms)",
            report.table,
            report.files_before,
            report.files_after,
            human_bytes(report.bytes_before),
            human_bytes(report.bytes_after),
            report.rows,
            report.partitions_compacted,
            report.groups_dropped,
            report.snapshots,
            report.duration_ms
        ),
    });
    Ok(())
}

/// When `table` is a pipeline job's Delta table, vacuums it for
/// `expire-snapshots` (`full = false`) or `remove-orphans` (`full = true`),
/// prints what it did and returns true.
async fn delta_vacuum(
    catalog: &CatalogArgs,
    table: &str,
    older_than: Option<std::time::Duration>,
    full: bool,
    dry_run: bool,
    json: bool,
) -> Result<bool> {
    let Some(target) = delta_target(catalog, table)? else {
        return Ok(false);
    };
    let older_than = older_than.unwrap_or(DELTA_RETENTION);
    let report = crate::table::delta::maintain::vacuum(&target, older_than, full, dry_run).await?;
    if json {
        print_json(&report)?;
        return Ok(true);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    say(format!(
        "{table} (delta): {}; {verb} {} file(s){}{}",
        report.status,
        report.files_deleted.len(),
        report
            .checkpoint
            .map_or(String::new(), |v| format!("; checkpoint at version {v}")),
        if report.log_entries_removed > 0 {
            format!(
                "; {} expired log entries removed",
                report.log_entries_removed
            )
        } else {
            String::new()
        }
    ));
    Ok(true)
}

/// Delta's default deleted-file retention, which vacuum holds to.
const DELTA_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// `floe expire-snapshots`.
pub async fn expire_cmd(args: &ExpireArgs) -> Result<()> {
    if delta_vacuum(
        &args.catalog,
        &args.table,
        args.older_than,
        false,
        args.dry_run,
        args.json,
    )
    .await?
    {
        return Ok(());
    }
    let report = with_catalog(&args.catalog, async |client, maintain| {
        let mut target = Target::open(client, &args.table).await?;
        let policy = Policy::resolve(maintain, target.loaded.metadata.properties())?;
        let opts = ExpireOptions {
            older_than: args.older_than.unwrap_or(policy.expire_older_than),
            retain_last: args.retain_last.unwrap_or(policy.retain_last),
            dry_run: args.dry_run,
        };
        expire(client, &mut target, &opts).await
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
    say(format!(
        "{}: {verb} {} of {} snapshots; {files}: {} data ({}), {} delete, {} manifests, {} manifest lists",
        report.table,
        report.expired.len(),
        report.snapshots_before,
        report.data_files_deleted,
        human_bytes(report.bytes_deleted),
        report.delete_files_deleted,
        report.manifests_deleted,
        report.manifest_lists_deleted,
    ));
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
    if delta_vacuum(
        &args.catalog,
        &args.table,
        args.older_than,
        true,
        args.dry_run,
        args.json,
    )
    .await?
    {
        return Ok(());
    }
    let opts = OrphanOptions {
        older_than: args.older_than.unwrap_or(DEFAULT_WINDOW),
        dry_run: args.dry_run,
    };
    if opts.older_than < std::time::Duration::from_secs(3600) {
        tracing::warn!(
            "--older-than is under an hour: files a running writer has not committed yet may be deleted"
        );
    }
    let report = with_catalog(&args.catalog, async |client, _| {
        let target = Target::open(client, &args.table).await?;
        remove(client, &target, &opts).await
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
    let statuses = with_catalog(&args.catalog, async |client, _| {
        let tables = if args.tables.is_empty() {
            all_tables(client).await?
        } else {
            args.tables.clone()
        };
        let mut out = Vec::new();
        for t in &tables {
            let target = Target::open(client, t).await?;
            out.push(status(client, &target, Some(window)).await?);
        }
        Ok(out)
    })
    .await?;
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

/// `floe maintain`.
pub async fn maintain_cmd(args: &MaintainArgs) -> Result<()> {
    if args.tables.is_empty() && !args.all {
        return Err(Error::Config(
            "name the tables to maintain, or pass --all for every table of the catalog".into(),
        ));
    }
    let started = std::time::Instant::now();
    let pipeline = if args.catalog.catalog.is_none() && args.catalog.pipeline.exists() {
        Some(crate::pipeline::load(&args.catalog.pipeline)?)
    } else {
        None
    };
    let outcomes = with_catalog(&args.catalog, async |client, maintain| {
        // Each table with its Delta target (none: an Iceberg table).
        let mut tables: Vec<(String, Option<crate::table::delta::Target>)> = Vec::new();
        if args.all {
            for t in all_tables(client).await? {
                tables.push((t, None));
            }
            if let Some(p) = &pipeline {
                let places = crate::table::delta::Places::with_models(p);
                for t in places.tables() {
                    let target = places.target(&t)?;
                    tables.push((t, Some(target)));
                }
            }
        } else {
            for t in &args.tables {
                let target = match &pipeline {
                    Some(p) => crate::table::delta::maintain::target_of(p, t)?,
                    None => None,
                };
                tables.push((t.clone(), target));
            }
        }
        let mut out = Vec::new();
        for (t, delta) in tables {
            let t = &t;
            tracing::info!(table = %t, "maintaining");
            out.push(match delta {
                Some(target) => {
                    crate::table::delta::maintain::maintain_table(
                        &target,
                        t,
                        maintain,
                        args.dry_run,
                    )
                    .await
                }
                None => maintain_table(client, t, maintain, args.dry_run).await,
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
            .map_err(|e| Error::Config(format!("cannot encode the report: {e}")))?;
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
