//! Iceberg table maintenance through the REST catalog, on any Iceberg v2
//! table (floe-, pyiceberg-, Spark- or Trino-written), never changing what a
//! reader of the current snapshot sees:
//! - compaction commits `replace` snapshots through floe's snapshot producer,
//!   which refuses to remove a file that is no longer live, so a concurrent
//!   overwrite is never undone;
//! - expiry first commits the metadata change, then deletes only files that
//!   no remaining snapshot references (a crash in between leaves orphans,
//!   never a broken table);
//! - orphan removal deletes only unreferenced files older than a window, so
//!   a writer's uncommitted files survive until it commits.

pub mod changes;
pub mod compact;
pub mod expire;
pub mod filter;
pub mod handover;
pub mod orphans;
pub mod provider;
pub mod publish;
pub mod scan;
pub mod staging;
pub mod status;

use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};
use crate::table::snapshot::TableHandle;

/// A table's output file size: its `write.target-file-size-bytes`, else
/// the writer's default (128 MiB).
pub fn target_file_size(metadata: &iceberg::spec::TableMetadata) -> u64 {
    crate::table::props::target_file_size(metadata.properties()) as u64
}

/// Files below this size count as small: 75% of the target, as Spark's
/// rewrite_data_files.
pub fn small_file_limit(target_file_size: u64) -> u64 {
    target_file_size / 4 * 3
}

/// A table opened for maintenance.
#[derive(Debug, Clone)]
pub struct Target {
    /// `namespace.name`, as the user wrote it.
    pub ident: String,
    /// Catalog name and IO.
    pub handle: TableHandle,
    /// The metadata as loaded.
    pub loaded: LoadedTable,
}

impl Target {
    /// Loads `ident` (`namespace.name`, nested namespaces dotted).
    pub async fn open(client: &RestClient, ident: &str) -> Result<Self> {
        let (namespace, name) = parse_table_name(ident)?;
        let loaded = client
            .load_table(&namespace, &name)
            .await?
            .ok_or_else(|| Error::Config(format!("table {ident} does not exist in the catalog")))?;
        let io = crate::store::table_io(client, &loaded);
        Ok(Self {
            ident: ident.to_string(),
            handle: TableHandle {
                namespace,
                name,
                io,
            },
            loaded,
        })
    }

    /// Loads the table again.
    pub async fn reload(&mut self, client: &RestClient) -> Result<()> {
        self.loaded = crate::table::snapshot::reload(client, &self.handle).await?;
        Ok(())
    }
}

/// Splits `a.b.table` into (`[a, b]`, `table`).
pub fn parse_table_name(ident: &str) -> Result<(Vec<String>, String)> {
    let parts: Vec<&str> = ident.split('.').collect();
    match parts.split_last() {
        Some((name, ns)) if !ns.is_empty() && parts.iter().all(|p| !p.is_empty()) => Ok((
            ns.iter().map(|s| (*s).to_string()).collect(),
            (*name).to_string(),
        )),
        _ => Err(Error::Config(format!(
            "table {ident:?} must be written namespace.name (e.g. bronze.demand)"
        ))),
    }
}

/// Every table of the catalog, as `namespace.name`, sorted.
pub async fn all_tables(client: &RestClient) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending: Vec<Vec<String>> = client.list_namespaces(&[]).await?;
    // Bounded: each namespace is visited once.
    let mut visited = 0usize;
    while let Some(ns) = pending.pop() {
        visited += 1;
        if visited > 100_000 {
            return Err(Error::Catalog("more than 100,000 namespaces".into()));
        }
        for (tns, name) in client.list_tables(&ns).await? {
            out.push(format!("{}.{name}", tns.join(".")));
        }
        for child in client.list_namespaces(&ns).await? {
            if child.len() > ns.len() {
                pending.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert_eq!(
            parse_table_name("a.b.t").ok(),
            Some((vec!["a".to_string(), "b".to_string()], "t".to_string()))
        );
        for bad in ["t", "a..t", ".t", "a."] {
            assert!(parse_table_name(bad).is_err(), "{bad}");
        }
    }
}
