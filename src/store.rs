//! Object-store access shared by ingest and maintenance: the `FileIO` for a
//! table's files (catalog properties, then the AWS environment), an S3
//! operator for listing, and a recursive listing with sizes and times.
//! Every S3 request retries within one budget ([`StorageRetry`],
//! `FLOE_STORAGE_RETRY_TIMEOUT`).

pub use floe_catalog::storage::{
    BUDGET_ENV as RETRY_BUDGET_ENV, DEFAULT_BUDGET as DEFAULT_RETRY_BUDGET, FloeStorage,
    FloeStorageFactory, StorageRetry, s3_config,
};

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use iceberg::io::{FileIO, FileIOBuilder};

use crate::error::{Error, Result};
use crate::rest::{LoadedTable, RestClient};

/// The storage retry budget from `FLOE_STORAGE_RETRY_TIMEOUT`, else the
/// default (60 s).
///
/// # Errors
/// When the variable is set and not a duration.
pub fn storage_retry() -> Result<StorageRetry> {
    match std::env::var(RETRY_BUDGET_ENV) {
        Ok(text) => crate::duration::parse_duration(&text)
            .map(|budget| StorageRetry { budget })
            .map_err(|e| Error::Config(format!("{RETRY_BUDGET_ENV}: {e}")).caused_by(e)),
        Err(_) => Ok(StorageRetry::default()),
    }
}

/// [`storage_retry`], or the default when the variable is not a duration
/// (every command checks it first, see [`crate::run`]).
pub fn current_retry() -> StorageRetry {
    storage_retry().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "using the default storage retry budget");
        StorageRetry::default()
    })
}

/// IO built from `props` (catalog or pipeline properties) plus S3
/// credentials from the usual AWS environment variables where `props`
/// hand out none; S3 requests retry within [`current_retry`].
pub fn io_with_env(props: &HashMap<String, String>) -> FileIO {
    let mut props = props.clone();
    add_env_credentials(&mut props);
    let factory = FloeStorageFactory {
        retry: current_retry(),
    };
    FileIOBuilder::new(Arc::new(factory))
        .with_props(props)
        .build()
}

/// Adds S3 credentials and region from the environment, keeping any that
/// `props` already has.
pub fn add_env_credentials(props: &mut HashMap<String, String>) {
    let env = floe_catalog::S3Options::default().with_env_credentials();
    for (key, value) in env.file_io_props(true) {
        let is_credential = key.ends_with("access-key-id")
            || key.ends_with("secret-access-key")
            || key.ends_with("session-token")
            || key == "s3.region";
        if is_credential {
            props.entry(key).or_insert(value);
        }
    }
}

/// IO for a table's files: the catalog's properties, then the table's.
pub fn table_io(client: &RestClient, table: &LoadedTable) -> FileIO {
    io_with_env(&table_props(client, table))
}

/// S3 properties for a table (what [`table_io`] uses), for [`list`]: the
/// catalog's, then the table's, then credentials from the environment.
pub fn table_props(client: &RestClient, table: &LoadedTable) -> HashMap<String, String> {
    let mut props = client.properties.clone();
    props.extend(table.config.clone());
    add_env_credentials(&mut props);
    props
}

/// An opendal S3 operator for `bucket` from Iceberg-style `s3.*`
/// properties, retrying within [`current_retry`].
pub fn s3_operator(bucket: &str, props: &HashMap<String, String>) -> Result<opendal::Operator> {
    let get = |k: &str| props.get(k).map(String::as_str);
    let mut b = opendal::services::S3::default()
        .bucket(bucket)
        .region(
            get("s3.region")
                .or(get("client.region"))
                .unwrap_or("us-east-1"),
        )
        // Never probe instance metadata or ~/.aws: settings are explicit.
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(e) = get("s3.endpoint") {
        b = b.endpoint(e);
    }
    if let (Some(id), Some(secret)) = (get("s3.access-key-id"), get("s3.secret-access-key")) {
        b = b.access_key_id(id).secret_access_key(secret);
    }
    if let Some(t) = get("s3.session-token") {
        b = b.session_token(t);
    }
    if get("s3.path-style-access") == Some("false") {
        b = b.enable_virtual_host_style();
    }
    let op = opendal::Operator::new(b)
        .map_err(|e| Error::Storage(format!("s3://{bucket}: {e}")).caused_by(e))?
        .finish();
    Ok(current_retry().apply(op))
}

/// A file found by [`list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its URI, in the scheme of the listed location.
    pub uri: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, when the store reports it.
    pub modified: Option<DateTime<Utc>>,
}

/// Every file under `location` (recursively): a local folder
/// (`/path`, `file:/path`, `file:///path`) or `s3://bucket/prefix`.
pub async fn list(location: &str, props: &HashMap<String, String>) -> Result<Vec<Listed>> {
    let root = location.trim_end_matches('/');
    if let Some(rest) = strip_s3(root) {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let scheme = &root[..root.len() - rest.len()];
        let op = s3_operator(bucket, props)?;
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let entries = op
            .list_with(&prefix)
            .recursive(true)
            .await
            .map_err(|e| Error::Storage(format!("listing {root}/: {e}")).caused_by(e))?;
        return Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| Listed {
                uri: format!("{scheme}{bucket}/{}", e.path()),
                size: e.metadata().content_length(),
                modified: e
                    .metadata()
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp_millis(t.into_inner().as_millisecond())),
            })
            .collect());
    }
    let dir = local_path(root).ok_or_else(|| {
        Error::Config(format!(
            "cannot list {location}: not a local folder or s3:// location"
        ))
    })?;
    let base = root.to_string();
    tokio::task::spawn_blocking(move || walk(&dir, &base))
        .await
        .map_err(|e| Error::Storage(format!("listing {location}: {e}")).caused_by(e))?
}

fn walk(dir: &std::path::Path, base: &str) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), base.to_string())];
    while let Some((d, uri)) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    context: format!("cannot list {}", d.display()),
                    source,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                context: format!("cannot list {}", d.display()),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = entry.metadata().map_err(|source| Error::Io {
                context: format!("cannot stat {}", entry.path().display()),
                source,
            })?;
            let child = format!("{uri}/{name}");
            if meta.is_dir() {
                stack.push((entry.path(), child));
            } else {
                out.push(Listed {
                    uri: child,
                    size: meta.len(),
                    modified: meta.modified().ok().map(DateTime::<Utc>::from),
                });
            }
        }
    }
    Ok(out)
}

fn strip_s3(uri: &str) -> Option<&str> {
    ["s3://", "s3a://", "s3n://"]
        .iter()
        .find_map(|s| uri.strip_prefix(s))
}

fn local_path(uri: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = uri.strip_prefix("file:") {
        // file:/p, file:///p
        let trimmed = rest.trim_start_matches('/');
        return Some(std::path::PathBuf::from(format!("/{trimmed}")));
    }
    uri.starts_with('/').then(|| std::path::PathBuf::from(uri))
}

/// A scheme-independent key for a file URI, so that `file:/p`,
/// `file:///p` and `/p` (or `s3a://b/k` and `s3://b/k`) compare equal.
pub fn path_key(uri: &str) -> String {
    if let Some(rest) = strip_s3(uri) {
        return format!("s3://{rest}");
    }
    match local_path(uri) {
        Some(p) => p.to_string_lossy().into_owned(),
        None => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::path_key;

    #[test]
    fn path_keys_ignore_scheme_spelling() {
        assert_eq!(path_key("file:///w/t/a.parquet"), "/w/t/a.parquet");
        assert_eq!(path_key("file:/w/t/a.parquet"), "/w/t/a.parquet");
        assert_eq!(path_key("/w/t/a.parquet"), "/w/t/a.parquet");
        assert_eq!(path_key("s3a://b/k/a.parquet"), "s3://b/k/a.parquet");
        assert_eq!(path_key("s3://b/k/a.parquet"), "s3://b/k/a.parquet");
        assert_ne!(path_key("s3://b/k"), path_key("/b/k"));
    }
}
