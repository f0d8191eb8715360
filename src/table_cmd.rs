//! `floe table list | describe | drop`: look at and remove the tables of a
//! catalog (and the pipeline's Delta tables) without another tool.

use std::io::Write;

use datafusion::object_store::ObjectStoreExt as _;
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::cli::{TableArgs, TableCommand, TableDescribeArgs, TableDropArgs, TableListArgs};
use crate::error::{Error, Result};
use crate::maintain_cmd::{delta_target, print_json, with_catalog};
use crate::rest::LoadedTable;
use crate::table::delta::Target;

/// Runs `floe table ...`.
pub async fn run(args: &TableArgs) -> Result<()> {
    match &args.command {
        TableCommand::List(a) => list(a).await,
        TableCommand::Describe(a) => describe(a).await,
        TableCommand::Drop(a) => drop_table(a).await,
    }
}

fn say(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// `namespace.table` as (namespace levels, table).
fn split(ident: &str) -> Result<(Vec<String>, String)> {
    match ident.rsplit_once('.') {
        Some((ns, table)) if !ns.is_empty() && !table.is_empty() => Ok((
            ns.split('.').map(str::to_string).collect(),
            table.to_string(),
        )),
        _ => Err(Error::Config(format!(
            "{ident:?} is not a table name: write namespace.table"
        ))),
    }
}

async fn list(args: &TableListArgs) -> Result<()> {
    let mut rows: Vec<(String, &str)> = with_catalog(&args.catalog, async |client, _| {
        let all = crate::table::iceberg::all_tables(client).await?;
        Ok(all.into_iter().map(|t| (t, "iceberg")).collect::<Vec<_>>())
    })
    .await?;
    if args.catalog.catalog.is_none() && args.catalog.pipeline.exists() {
        let pipeline = crate::pipeline::load(&args.catalog.pipeline)?;
        rows.extend(
            crate::maintain_cmd::delta_tables(&pipeline)
                .into_iter()
                .map(|t| (t, "delta")),
        );
    }
    if let Some(ns) = &args.namespace {
        let prefix = format!("{ns}.");
        rows.retain(|(t, _)| t.starts_with(&prefix));
    }
    rows.sort();
    if args.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(t, f)| json!({ "table": t, "format": f }))
            .collect();
        return print_json(&list);
    }
    for (table, format) in &rows {
        say(&format!("{table:<40} {format}"));
    }
    Ok(())
}

async fn describe(args: &TableDescribeArgs) -> Result<()> {
    let described = match delta_target(&args.catalog, &args.table)? {
        Some(target) => describe_delta(&args.table, &target).await?,
        None => {
            let (ns, name) = split(&args.table)?;
            with_catalog(&args.catalog, async |client, _| {
                let loaded = client.load_table(&ns, &name).await?.ok_or_else(|| {
                    Error::Catalog(format!("no table {} in the catalog", args.table))
                })?;
                Ok(describe_iceberg(&args.table, &loaded))
            })
            .await?
        }
    };
    if args.json {
        return print_json(&described);
    }
    print_described(&described);
    Ok(())
}

fn describe_iceberg(ident: &str, loaded: &LoadedTable) -> Value {
    let m = &loaded.metadata;
    let schema = m.current_schema();
    let columns: Vec<Value> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "name": f.name,
                "type": f.field_type.to_string(),
                "required": f.required,
            })
        })
        .collect();
    let partitioning: Vec<String> = m
        .default_partition_spec()
        .fields()
        .iter()
        .map(|f| {
            let source = schema
                .field_by_id(f.source_id)
                .map_or_else(|| f.source_id.to_string(), |c| c.name.clone());
            format!("{}({source})", f.transform)
        })
        .collect();
    let sort: Vec<String> = m
        .default_sort_order()
        .fields
        .iter()
        .map(|f| {
            let source = schema
                .field_by_id(f.source_id)
                .map_or_else(|| f.source_id.to_string(), |c| c.name.clone());
            format!("{source} {}", f.direction)
        })
        .collect();
    let current = m.current_snapshot().map(|s| {
        let summary = &s.summary().additional_properties;
        json!({
            "snapshot_id": s.snapshot_id(),
            "committed_at": chrono::DateTime::from_timestamp_millis(s.timestamp_ms())
                .map(|t| t.to_rfc3339()),
            "operation": s.summary().operation.as_str(),
            "rows": summary.get("total-records"),
            "data_files": summary.get("total-data-files"),
            "run_id": summary.get(crate::table::snapshot::RUN_ID_KEY),
        })
    });
    let mut refs: Vec<&String> = loaded.refs.keys().collect();
    refs.sort();
    json!({
        "table": ident,
        "format": "iceberg",
        "location": m.location(),
        "format_version": m.format_version() as u8,
        "uuid": m.uuid().to_string(),
        "columns": columns,
        "partitioning": partitioning,
        "sort": sort,
        "properties": m.properties().iter().collect::<std::collections::BTreeMap<_, _>>(),
        "snapshots": m.snapshots().count(),
        "refs": refs,
        "current": current,
    })
}

async fn describe_delta(ident: &str, target: &Target) -> Result<Value> {
    let table = target.open().await?;
    let Some(version) = table.version() else {
        return Err(Error::Storage(format!(
            "no Delta table at {} (never written)",
            target.url
        )));
    };
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::Storage(format!("reading {}: {e}", target.url)).caused_by(e))?;
    let columns: Vec<Value> = snapshot
        .schema()
        .fields()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": f.data_type().to_string(),
                "required": !f.is_nullable(),
            })
        })
        .collect();
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut rows = 0u64;
    let mut views = snapshot
        .snapshot()
        .file_views(table.log_store().as_ref(), None);
    while let Some(view) = views.next().await {
        let view =
            view.map_err(|e| Error::Storage(format!("listing {}: {e}", target.url)).caused_by(e))?;
        files += 1;
        bytes += u64::try_from(view.size()).unwrap_or(0);
        rows += view.num_records().map_or(0, |n| n as u64);
    }
    Ok(json!({
        "table": ident,
        "format": "delta",
        "location": target.url.to_string(),
        "version": version,
        "columns": columns,
        "partitioning": snapshot.metadata().partition_columns(),
        "properties": snapshot.metadata().configuration(),
        "current": { "rows": rows, "data_files": files, "bytes": bytes },
    }))
}

fn print_described(d: &Value) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    say(&format!("{} ({})", text(&d["table"]), text(&d["format"])));
    say(&format!("  location: {}", text(&d["location"])));
    say("  columns:");
    for c in d["columns"].as_array().into_iter().flatten() {
        say(&format!(
            "    {:<28} {:<20}{}",
            text(&c["name"]),
            text(&c["type"]),
            if c["required"] == Value::Bool(true) {
                " required"
            } else {
                ""
            }
        ));
    }
    let list = |v: &Value| -> String {
        let items: Vec<String> = v.as_array().into_iter().flatten().map(text).collect();
        if items.is_empty() {
            "none".into()
        } else {
            items.join(", ")
        }
    };
    say(&format!("  partitioned by: {}", list(&d["partitioning"])));
    if d.get("sort").is_some() {
        say(&format!("  sorted by: {}", list(&d["sort"])));
    }
    if let Some(props) = d["properties"].as_object()
        && !props.is_empty()
    {
        say("  properties:");
        for (k, v) in props {
            say(&format!("    {k} = {}", text(v)));
        }
    }
    if let Some(n) = d.get("snapshots") {
        say(&format!("  snapshots: {}", text(n)));
    }
    if let Some(v) = d.get("version") {
        say(&format!("  version: {}", text(v)));
    }
    match &d["current"] {
        Value::Null => say("  current: no data yet"),
        c => say(&format!(
            "  current: {} row(s) in {} data file(s){}{}",
            text(&c["rows"]),
            text(&c["data_files"]),
            c.get("snapshot_id")
                .map(|s| format!(", snapshot {}", text(s)))
                .unwrap_or_default(),
            c.get("run_id")
                .filter(|r| !r.is_null())
                .map(|r| format!(", run {}", text(r)))
                .unwrap_or_default()
        )),
    }
}

async fn drop_table(args: &TableDropArgs) -> Result<()> {
    if let Some(target) = delta_target(&args.catalog, &args.table)? {
        if !args.purge {
            return Err(Error::Config(format!(
                "{} is a Delta table: it is its folder {}, with no catalog entry to drop; pass --purge to delete its files",
                args.table, target.url
            )));
        }
        let deleted = purge_delta(&target).await?;
        say(&format!(
            "dropped {} (delta): deleted {deleted} file(s) under {}",
            args.table, target.url
        ));
        return Ok(());
    }
    let (ns, name) = split(&args.table)?;
    with_catalog(&args.catalog, async |client, _| {
        if client.load_table(&ns, &name).await?.is_none() {
            return Err(Error::Catalog(format!(
                "no table {} in the catalog",
                args.table
            )));
        }
        client.drop_table(&ns, &name, args.purge).await
    })
    .await?;
    say(&format!(
        "dropped {}{}",
        args.table,
        if args.purge {
            " and asked the catalog to delete its files"
        } else {
            " (its files stay where they are)"
        }
    ));
    Ok(())
}

/// Deletes every file of a Delta table (log and data); returns how many.
async fn purge_delta(target: &Target) -> Result<u64> {
    let table = target.open().await?;
    if table.version().is_none() {
        return Err(Error::Storage(format!("no Delta table at {}", target.url)));
    }
    let store = table.object_store();
    let storage = |e: deltalake::ObjectStoreError| {
        Error::Storage(format!("deleting the files of {}: {e}", target.url)).caused_by(e)
    };
    let paths: Vec<deltalake::Path> = store
        .list(None)
        .map(|m| m.map(|m| m.location))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<std::result::Result<_, _>>()
        .map_err(storage)?;
    // The log last: an interrupted purge leaves a table floe still finds,
    // so running the purge again finishes it.
    let (log, data): (Vec<_>, Vec<_>) = paths
        .into_iter()
        .partition(|p| p.as_ref().starts_with("_delta_log"));
    let mut deleted = 0u64;
    for path in data.iter().chain(&log) {
        store.delete(path).await.map_err(storage)?;
        deleted += 1;
    }
    Ok(deleted)
}
