//! Staging tables: where an engine outside floe (Trino) writes a model's
//! result. A staging table has the target's schema (the same field ids),
//! partition spec and sort order, and lives inside the target's location
//! (`<target>/staging/<name>`), so the data files the engine writes can be
//! committed to the target as they are. floe reads the files back from the
//! staging table's snapshot, drops the staging table without purging them
//! and commits them to the target itself.
//!
//! A staging table is named `<target>__floe_staging_<run>` and records the
//! run, host and process that made it. One whose process is gone (same
//! host), or older than `stale_after` (any host), was left by a dead run:
//! the next run of the model drops it with its files, which were never
//! committed anywhere else.

use std::collections::HashMap;
use std::time::Duration;

use iceberg::spec::{DataFile, DataFileFormat, Literal, PrimitiveLiteral};

use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};
use crate::table::iceberg::scan::live_files;
use crate::table::snapshot::TableHandle;

/// What marks a staging table's name (after the target's name).
const MARK: &str = "__floe_staging_";
/// Property: the run that made the staging table.
const RUN_KEY: &str = "floe.staging.run-id";
/// Property: the host of the process that made it.
const HOST_KEY: &str = "floe.staging.host";
/// Property: that process.
const PID_KEY: &str = "floe.staging.pid";
/// Property: when it was made (milliseconds since the epoch).
const CREATED_KEY: &str = "floe.staging.created-ms";
/// Property: a value only floe knows, that the engine must read back (the
/// proof that the engine's catalog is floe's).
pub const TOKEN_KEY: &str = "floe.staging.token";

/// A staging table floe created for one model's run.
#[derive(Debug, Clone)]
pub struct StagingTable {
    /// Namespace levels (the target's).
    pub namespace: Vec<String>,
    /// Table name.
    pub name: String,
    /// The value of [`TOKEN_KEY`].
    pub token: String,
}

/// The staging table's name for a run of `target`.
pub fn staging_name(target: &str, run_id: &str) -> String {
    let run: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{target}{MARK}{run}")
}

/// This machine's name (empty when unknown).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the staging table for a run of the target `loaded`.
///
/// # Errors
/// When the catalog refuses it, or gives it other field ids or another
/// partition spec than the target's (it is dropped then).
pub async fn create(
    client: &RestClient,
    namespace: &[String],
    target: &str,
    loaded: &LoadedTable,
    run_id: &str,
) -> Result<StagingTable> {
    let name = staging_name(target, run_id);
    let metadata = &loaded.metadata;
    let schema = metadata.current_schema().as_ref().clone();
    let spec = metadata.default_partition_spec().as_ref().clone();
    let order = metadata.default_sort_order().as_ref().clone();
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut properties: HashMap<String, String> = HashMap::from([
        ("write.format.default".into(), "parquet".into()),
        ("write.parquet.compression-codec".into(), "zstd".into()),
        (
            "format-version".into(),
            (metadata.format_version() as u8).to_string(),
        ),
        (RUN_KEY.into(), run_id.to_string()),
        (HOST_KEY.into(), host()),
        (PID_KEY.into(), std::process::id().to_string()),
        (CREATED_KEY.into(), now_ms().to_string()),
        (TOKEN_KEY.into(), token.clone()),
    ]);
    if let Some(size) = metadata.properties().get("write.target-file-size-bytes") {
        properties.insert("write.target-file-size-bytes".into(), size.clone());
    }
    let location = format!("{}/staging/{name}", metadata.location());
    let staging = StagingTable {
        namespace: namespace.to_vec(),
        name,
        token,
    };
    let created = client
        .create_table_at(
            namespace,
            &staging.name,
            &schema,
            &spec.clone().into_unbound(),
            &order,
            &properties,
            Some(&location),
        )
        .await?;
    let same_schema = created.metadata.current_schema().as_struct() == schema.as_struct();
    let same_spec = created.metadata.default_partition_spec().fields() == spec.fields();
    if !(same_schema && same_spec)
        || created.metadata.properties().get(TOKEN_KEY) != Some(&staging.token)
    {
        purge(client, &staging).await;
        return Err(Error::Catalog(format!(
            "the catalog made the staging table {}.{} with other field ids or partitioning than {}.{target}; \
             its files could not be committed to the model's table",
            namespace.join("."),
            staging.name,
            namespace.join(".")
        )));
    }
    Ok(staging)
}

/// Drops, with their files, the staging tables of `target` that dead runs
/// left: made on this host by a process that is gone, or older than
/// `stale_after`. Failures are logged.
pub async fn drop_stale(
    client: &RestClient,
    namespace: &[String],
    target: &str,
    stale_after: Duration,
) {
    let prefix = format!("{target}{MARK}");
    let tables = match client.list_tables(namespace).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(table = target, error = %e, "could not list staging tables");
            return;
        }
    };
    let here = host();
    let cutoff = now_ms() - i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    for (ns, name) in tables {
        if !name.starts_with(&prefix) {
            continue;
        }
        let Ok(Some(t)) = client.load_table(&ns, &name).await else {
            continue;
        };
        let props = t.metadata.properties();
        let created = props
            .get(CREATED_KEY)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        let dead_here = props.get(HOST_KEY) == Some(&here)
            && props
                .get(PID_KEY)
                .is_some_and(|pid| !process_alive(pid) || *pid == std::process::id().to_string());
        if !(dead_here || created < cutoff) {
            continue;
        }
        tracing::info!(table = %name, run = ?props.get(RUN_KEY), "dropping a staging table a dead run left");
        if let Err(e) = client.drop_table(&ns, &name, true).await {
            tracing::warn!(table = %name, error = %e, "could not drop a stale staging table");
        }
    }
}

/// Whether process `pid` of this host is running (where /proc tells).
fn process_alive(pid: &str) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new("/proc").join(pid).exists()
}

/// The staging table's data files, as the engine committed them, each
/// under the target's partition spec `spec_id`.
///
/// # Errors
/// When the staging table is gone (dropped by another run), holds delete
/// files or files outside its location, or its manifests cannot be read.
pub async fn files(client: &RestClient, staging: &StagingTable) -> Result<Vec<DataFile>> {
    let ident = format!("{}.{}", staging.namespace.join("."), staging.name);
    let loaded = client
        .load_table(&staging.namespace, &staging.name)
        .await?
        .ok_or_else(|| {
            Error::Catalog(format!(
                "the staging table {ident} is gone: another run dropped it; run the model again"
            ))
        })?;
    if loaded.metadata.properties().get(TOKEN_KEY) != Some(&staging.token) {
        return Err(Error::Catalog(format!(
            "the staging table {ident} was replaced by another run; run the model again"
        )));
    }
    let Some(snapshot) = loaded.metadata.current_snapshot() else {
        return Ok(Vec::new());
    };
    let handle = TableHandle {
        namespace: staging.namespace.clone(),
        name: staging.name.clone(),
        io: crate::store::table_io(client, &loaded),
    };
    let table = handle.table(&loaded)?;
    let live = live_files(&table, &handle.io, snapshot, true).await?;
    let inside = format!("{}/", loaded.metadata.location());
    let mut out = Vec::with_capacity(live.len());
    for f in live {
        if f.is_delete() {
            return Err(Error::Model(format!(
                "the engine wrote delete files to the staging table {ident}; floe takes data files only"
            )));
        }
        if f.file.file_format() != DataFileFormat::Parquet
            || !f.file.file_path().starts_with(&inside)
        {
            return Err(Error::Model(format!(
                "the engine wrote {} to the staging table {ident}: not a Parquet file under its location",
                f.file.file_path()
            )));
        }
        out.push(f.file);
    }
    Ok(out)
}

/// The UTC day (days since 1970-01-01) a day-partitioned file holds.
pub fn file_day(file: &DataFile) -> Option<i32> {
    match file.partition().iter().next()? {
        Some(Literal::Primitive(PrimitiveLiteral::Int(day))) => Some(*day),
        _ => None,
    }
}

/// Drops the staging table, keeping its data files (now the target's to
/// commit or delete) and deleting its metadata files.
///
/// # Errors
/// When the catalog fails to drop it.
pub async fn release(client: &RestClient, staging: &StagingTable) -> Result<()> {
    let loaded = client.load_table(&staging.namespace, &staging.name).await?;
    client
        .drop_table(&staging.namespace, &staging.name, false)
        .await?;
    if let Some(loaded) = loaded {
        let io = crate::store::table_io(client, &loaded);
        let metadata = format!("{}/metadata/", loaded.metadata.location());
        if let Err(e) = io.delete_prefix(&metadata).await {
            tracing::warn!(table = %staging.name, error = %e, "could not delete a staging table's metadata files");
        }
    }
    Ok(())
}

/// Drops the staging table with its files (a run that will not use them).
pub async fn purge(client: &RestClient, staging: &StagingTable) {
    if let Err(e) = client
        .drop_table(&staging.namespace, &staging.name, true)
        .await
    {
        tracing::warn!(table = %staging.name, error = %e, "could not drop a staging table");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_name_is_an_identifier_every_engine_takes() {
        let name = staging_name("fact", "20261204T050000Z-ab12CD34");
        assert_eq!(name, "fact__floe_staging_20261204t050000z_ab12cd34");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }
}
