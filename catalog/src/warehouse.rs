//! The warehouse: where table files live, and the only place the catalog
//! touches object storage.
//!
//! Every location a client proposes (create, register, `set-location`) is
//! normalised and must lie under the warehouse root; the catalog never
//! writes, reads or purges anything outside it.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use iceberg::MetadataLocation;
use iceberg::io::{FileIO, FileIOBuilder};
use iceberg::spec::TableMetadata;
use uuid::Uuid;

use crate::config::S3Options;
use crate::error::{ApiError, Result};
use crate::ident::TableName;

/// A warehouse root and the IO to reach it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    root: String,
    io: FileIO,
}

impl Warehouse {
    /// Opens a warehouse at `root` (`file:///abs/path` or `s3://bucket/prefix`).
    ///
    /// # Errors
    /// When the root is neither an absolute `file://` URL nor an `s3://` URL.
    pub fn open(root: &str, s3: &S3Options) -> Result<Self, String> {
        let root = normalize_location(root)
            .ok_or_else(|| format!("invalid warehouse location {root:?}"))?;
        let root = root.trim_end_matches('/').to_string();
        let props = if let Some(path) = root.strip_prefix("s3://") {
            let bucket = path.split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(format!("warehouse {root:?} names no bucket"));
            }
            s3.file_io_props(true)
        } else if root.starts_with("file:///") {
            HashMap::new()
        } else {
            return Err(format!(
                "warehouse {root:?} must be an absolute file:// path or an s3://bucket/prefix URL"
            ));
        };
        // S3 requests retry within `s3.retry`; local files as before.
        let factory = crate::storage::FloeStorageFactory { retry: s3.retry };
        let io = FileIOBuilder::new(Arc::new(factory))
            .with_props(props)
            .build();
        Ok(Self { root, io })
    }

    /// The root URL, without a trailing slash.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The IO used for metadata files.
    pub fn io(&self) -> &FileIO {
        &self.io
    }

    /// The folder of a namespace: `<root>/<levels>` (what a namespace
    /// without a `location` property reports, as Iceberg's JDBC catalog
    /// does; Trino then stages a new table under it).
    pub fn namespace_location(&self, namespace: &crate::ident::Namespace) -> String {
        let mut location = self.root.clone();
        for level in namespace.levels() {
            location.push('/');
            location.push_str(level);
        }
        location
    }

    /// The default location of a new table: `<root>/<ns levels>/<name>-<uuid>`.
    /// The uuid (the table's own) keeps a dropped-and-recreated or renamed
    /// table from sharing files with another, so purging one never touches
    /// the other.
    pub fn default_table_location(&self, table: &TableName, uuid: Uuid) -> String {
        let mut location = self.root.clone();
        for level in table.namespace.levels() {
            location.push('/');
            location.push_str(level);
        }
        location.push('/');
        location.push_str(truncate_bytes(&table.name, MAX_TABLE_FOLDER_PREFIX));
        location.push('-');
        location.push_str(&uuid.simple().to_string());
        location
    }

    /// Normalises a client-supplied location and checks that it lies under
    /// the warehouse root.
    pub fn confine(&self, location: &str) -> Result<String> {
        let normalized = normalize_location(location).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid location {location:?}: expected a URL such as {}/...",
                self.root
            ))
        })?;
        let normalized = normalized.trim_end_matches('/').to_string();
        if normalized.len() > MAX_LOCATION_BYTES {
            return Err(ApiError::bad_request(format!(
                "Location is {} bytes long; at most {MAX_LOCATION_BYTES} are allowed",
                normalized.len()
            )));
        }
        let inside = normalized
            .strip_prefix(&self.root)
            .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1);
        if !inside {
            return Err(ApiError::forbidden(format!(
                "Location {location:?} is outside the warehouse {}; table files must live under it",
                self.root
            )));
        }
        Ok(normalized)
    }

    /// Confines every property that names where files go
    /// (`write.data.path`, `write.metadata.path`, `write.object-storage.path`
    /// and any other `*.path` or `*.location` key) like a table location:
    /// normalised, and refused (403) outside the warehouse.
    pub fn confine_properties(
        &self,
        props: std::collections::HashMap<String, String>,
    ) -> Result<std::collections::HashMap<String, String>> {
        props
            .into_iter()
            .map(|(k, v)| {
                let key = k.to_ascii_lowercase();
                if key.ends_with(".path") || key == "location" || key.ends_with(".location") {
                    let confined = self.confine(&v).map_err(|e| {
                        ApiError::forbidden(format!("Table property {k}: {}", e.message()))
                    })?;
                    Ok((k, confined))
                } else {
                    Ok((k, v))
                }
            })
            .collect()
    }

    /// Reads a metadata file.
    pub async fn read_metadata(&self, location: &str) -> Result<TableMetadata> {
        TableMetadata::read_from(&self.io, location)
            .await
            .map_err(|e| match e.kind() {
                // A corrupt file will not heal with a retry.
                iceberg::ErrorKind::DataInvalid => ApiError::internal("parse table metadata", &e),
                _ => ApiError::unavailable("read table metadata", &e),
            })
    }

    /// The location of the first metadata file of a table.
    pub fn first_metadata_location(&self, metadata: &TableMetadata) -> MetadataLocation {
        MetadataLocation::new_with_metadata(metadata.location(), metadata)
    }

    /// The location of the metadata file that follows `current`.
    pub fn next_metadata_location(&self, current: &str, new: &TableMetadata) -> MetadataLocation {
        match MetadataLocation::from_str(current) {
            Ok(loc) if current.starts_with(new.location()) => {
                loc.with_next_version().with_new_metadata(new)
            }
            // A registered table may use another naming scheme, or the
            // commit may have moved the table: start a fresh sequence
            // under the (new) table location, numbered after the log.
            _ => {
                let base = MetadataLocation::new_with_metadata(new.location(), new);
                let mut next = base;
                for _ in 0..=new.metadata_log().len() {
                    next = next.with_next_version();
                }
                next
            }
        }
    }

    /// Writes a metadata file.
    pub async fn write_metadata(
        &self,
        metadata: &TableMetadata,
        location: &MetadataLocation,
    ) -> Result<()> {
        metadata
            .write_to(&self.io, location)
            .await
            .map_err(|e| ApiError::unavailable("write table metadata", &e))
    }

    /// Best-effort removal of a metadata file that lost its commit race.
    pub async fn discard(&self, location: &str) {
        if let Err(e) = self.io.delete(location).await {
            tracing::warn!(%location, error = %e, "could not delete unused metadata file");
        }
    }

    /// Deletes a dropped table's files. Only paths under the table's own
    /// location are ever deleted, whatever the metadata references (a
    /// metadata file can name any path, e.g. as a statistics file). Data files
    /// are kept when `gc.enabled=false`, as Iceberg's catalogs do. When the
    /// folder is one this catalog assigned to exactly this table and no other
    /// table points into it (`folder_shared`), everything left under it goes
    /// too (uncommitted files, old metadata).
    pub async fn purge(&self, metadata_location: &str, folder_shared: bool) -> Result<()> {
        let metadata = self.read_metadata(metadata_location).await?;
        let location = metadata.location().to_string();
        let prefix = format!("{location}/");
        let mut paths = self.referenced_files(&metadata).await;
        paths.push(metadata_location.to_string());
        let (inside, outside): (Vec<String>, Vec<String>) = paths
            .into_iter()
            .partition(|p| p.starts_with(&prefix) && self.confine(p).is_ok());
        if !outside.is_empty() {
            tracing::warn!(
                count = outside.len(),
                %location,
                "purge kept files referenced outside the table location"
            );
        }
        self.io
            .delete_stream(futures::stream::iter(inside))
            .await
            .map_err(|e| ApiError::unavailable("delete table files", &e))?;
        let owned = location.ends_with(&format!("-{}", metadata.uuid().simple()));
        if owned && !folder_shared && self.confine(&location).is_ok() {
            self.io
                .delete_prefix(&prefix)
                .await
                .map_err(|e| ApiError::unavailable("delete table folder", &e))?;
        }
        Ok(())
    }

    async fn read_manifest_list(
        &self,
        path: &str,
        metadata: &TableMetadata,
    ) -> iceberg::Result<iceberg::spec::ManifestList> {
        let bytes = self.io.new_input(path)?.read().await?;
        iceberg::spec::ManifestList::parse_with_version(&bytes, metadata.format_version())
    }

    /// Every file the metadata references: metadata log, statistics,
    /// manifest lists, manifests and (unless `gc.enabled=false`) data files.
    /// Unreadable manifests are logged and skipped: the table is already
    /// dropped, and the folder sweep catches what they list.
    async fn referenced_files(&self, metadata: &TableMetadata) -> Vec<String> {
        let mut paths: Vec<String> = metadata
            .metadata_log()
            .iter()
            .map(|m| m.metadata_file.clone())
            .collect();
        paths.extend(
            metadata
                .statistics_iter()
                .map(|s| s.statistics_path.clone()),
        );
        paths.extend(
            metadata
                .partition_statistics_iter()
                .map(|s| s.statistics_path.clone()),
        );
        let gc = metadata.properties().get("gc.enabled").map(String::as_str) != Some("false");
        let mut manifests = HashSet::new();
        for snapshot in metadata.snapshots() {
            paths.push(snapshot.manifest_list().to_string());
            match self
                .read_manifest_list(snapshot.manifest_list(), metadata)
                .await
            {
                Ok(list) => manifests.extend(
                    list.entries()
                        .iter()
                        .cloned()
                        .map(|m| (m.manifest_path.clone(), m)),
                ),
                Err(e) => tracing::warn!(error = %e, "purge could not read a manifest list"),
            }
        }
        for (path, manifest) in manifests {
            if gc {
                match manifest.load_manifest(&self.io).await {
                    Ok(m) => paths.extend(m.entries().iter().map(|e| e.file_path().to_string())),
                    Err(e) => tracing::warn!(error = %e, "purge could not read a manifest"),
                }
            }
            paths.push(path);
        }
        paths
    }
}

/// Longest accepted table location; metadata file names add about 60 bytes
/// and the pointer column holds 1000.
const MAX_LOCATION_BYTES: usize = 900;

/// Longest table-name part of a table folder: the folder is
/// `<name>-<32 hex digits>` and must fit the usual 255-byte file-name limit.
const MAX_TABLE_FOLDER_PREFIX: usize = 200;

/// The longest prefix of `s` of at most `max` bytes that ends on a character
/// boundary.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Normalises a location: bare absolute paths and `file:/path` become
/// `file:///path`; `.` and `..` segments and doubled slashes are rejected
/// (not resolved), since they only ever serve to escape a prefix check.
pub fn normalize_location(location: &str) -> Option<String> {
    if location.chars().any(char::is_control) {
        return None;
    }
    let (scheme, rest) = if let Some(rest) = location.strip_prefix("file://") {
        ("file://", rest.to_string())
    } else if let Some(rest) = location.strip_prefix("file:") {
        ("file://", rest.to_string())
    } else if location.starts_with('/') {
        ("file://", location.to_string())
    } else if let Some(("s3" | "s3a" | "s3n", rest)) = location.split_once("://") {
        ("s3://", rest.to_string())
    } else {
        return None;
    };
    if scheme == "file://" && !rest.starts_with('/') {
        return None;
    }
    let body = rest.trim_start_matches('/');
    let trimmed = body.trim_end_matches('/');
    if trimmed.is_empty()
        || trimmed
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return None;
    }
    let lead = if scheme == "file://" { "/" } else { "" };
    Some(format!("{scheme}{lead}{trimmed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(root: &str) -> Warehouse {
        Warehouse::open(root, &S3Options::default()).expect("valid warehouse")
    }

    #[test]
    fn normalizes_local_and_s3_forms() {
        assert_eq!(
            normalize_location("/tmp/w/").as_deref(),
            Some("file:///tmp/w")
        );
        assert_eq!(
            normalize_location("file:/tmp/w").as_deref(),
            Some("file:///tmp/w")
        );
        assert_eq!(
            normalize_location("file:///tmp/w").as_deref(),
            Some("file:///tmp/w")
        );
        assert_eq!(normalize_location("s3a://b/p").as_deref(), Some("s3://b/p"));
        assert_eq!(normalize_location("s3://b/p/../q"), None);
        assert_eq!(normalize_location("relative/path"), None);
        assert_eq!(normalize_location("gs://b/p"), None);
        assert_eq!(normalize_location("file:///tmp//w"), None);
    }

    #[test]
    fn confines_locations_to_the_warehouse() {
        let w = local("file:///tmp/wh");
        assert!(w.confine("file:///tmp/wh/ns/t").is_ok());
        assert!(w.confine("/tmp/wh/ns/t").is_ok());
        assert!(
            w.confine("file:///tmp/wh").is_err(),
            "the root itself is not a table location"
        );
        assert!(
            w.confine("file:///tmp/wh2/t").is_err(),
            "a sibling with a common prefix"
        );
        assert!(w.confine("file:///tmp/wh/../etc").is_err());
        assert!(w.confine("s3://bucket/tmp/wh/t").is_err());
    }

    #[test]
    fn long_names_fit_a_file_name() {
        let w = local("file:///tmp/wh");
        let ns = crate::ident::Namespace::from_path("n").expect("valid");
        let t = TableName::new(ns, "é".repeat(127)).expect("valid: 254 bytes");
        let location = w.default_table_location(&t, Uuid::nil());
        let folder = location.rsplit('/').next().expect("folder");
        assert!(folder.len() <= 255, "{} bytes", folder.len());
    }

    #[test]
    fn default_location_carries_the_table_uuid() {
        let w = local("file:///tmp/wh/");
        let t = TableName::new(
            crate::ident::Namespace::from_path("a\u{1f}b").expect("valid"),
            "t",
        )
        .expect("valid");
        let uuid = Uuid::nil();
        assert_eq!(
            w.default_table_location(&t, uuid),
            "file:///tmp/wh/a/b/t-00000000000000000000000000000000"
        );
    }
}
