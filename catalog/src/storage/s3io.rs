//! The Iceberg `FileIO` storage floe and its catalog build: S3 (`s3://`, `s3a://`,
//! `s3n://`) through opendal operators that carry floe's retry budget
//! ([`StorageRetry`]); every other scheme (local files, memory) through
//! iceberg-storage-opendal's resolving storage, as before.
//!
//! iceberg-storage-opendal 0.10.1 wraps each S3 operator in a fixed
//! `RetryLayer::new()` (3 retries, 1 s, 2 s, 4 s) that nothing outside
//! the crate can change; an S3 outage longer than about 7 s failed the
//! run whatever floe was told. The S3 properties are read as that crate
//! reads them ([`s3_config`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{ErrorKind, Result};
use iceberg_storage_opendal::OpenDalResolvingStorageFactory;
use opendal::services::S3Config;
use opendal::{Configurator, Operator};
use serde::{Deserialize, Serialize};

use super::StorageRetry;

/// Builds [`FloeStorage`]: what `floe::store::io_with_env` and the
/// catalog's warehouse hand `FileIO`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct FloeStorageFactory {
    /// The retry budget of S3 requests.
    pub retry: StorageRetry,
}

#[typetag::serde(name = "FloeStorageFactory")]
impl StorageFactory for FloeStorageFactory {
    fn build(&self, config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(FloeStorage {
            props: config.props().clone(),
            retry: self.retry,
            cache: Arc::default(),
        }))
    }
}

/// Iceberg storage: S3 with floe's retry budget, the rest as
/// iceberg-storage-opendal does it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloeStorage {
    props: HashMap<String, String>,
    retry: StorageRetry,
    #[serde(skip)]
    cache: Arc<Cache>,
}

/// What [`FloeStorage`] builds once: an operator per bucket, the storage
/// of other schemes.
#[derive(Debug, Default)]
struct Cache {
    operators: Mutex<HashMap<String, Operator>>,
    other: OnceLock<Arc<dyn Storage>>,
}

fn io_error(e: opendal::Error) -> iceberg::Error {
    iceberg::Error::new(ErrorKind::Unexpected, "Failure in doing io operation").with_source(e)
}

fn is_s3(path: &str) -> bool {
    ["s3://", "s3a://", "s3n://"]
        .iter()
        .any(|s| path.starts_with(s))
}

impl FloeStorage {
    /// The storage of non-S3 paths (built on first use).
    fn other(&self) -> Result<&Arc<dyn Storage>> {
        if let Some(s) = self.cache.other.get() {
            return Ok(s);
        }
        let built = OpenDalResolvingStorageFactory::new()
            .build(&StorageConfig::from_props(self.props.clone()))?;
        Ok(self.cache.other.get_or_init(|| built))
    }

    /// The operator of `path`'s bucket, and `path` relative to it.
    fn s3<'a>(&self, path: &'a str) -> Result<(Operator, &'a str)> {
        let invalid = |why: &str| {
            iceberg::Error::new(
                ErrorKind::DataInvalid,
                format!("Invalid s3 url: {path}, {why}"),
            )
        };
        let (_, rest) = path.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let (bucket, relative) = rest.split_once('/').ok_or_else(|| invalid("no key"))?;
        if bucket.is_empty() {
            return Err(invalid("missing bucket"));
        }
        let mut operators =
            self.cache.operators.lock().map_err(|_| {
                iceberg::Error::new(ErrorKind::Unexpected, "operator cache poisoned")
            })?;
        if let Some(op) = operators.get(bucket) {
            return Ok((op.clone(), relative));
        }
        let config = s3_config(&self.props)?;
        let op = Operator::new(config.into_builder().bucket(bucket))
            .map_err(io_error)?
            .finish();
        let op = self.retry.apply(op);
        operators.insert(bucket.to_string(), op.clone());
        Ok((op, relative))
    }
}

#[typetag::serde(name = "FloeStorage")]
#[async_trait::async_trait]
impl Storage for FloeStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        if !is_s3(path) {
            return self.other()?.exists(path).await;
        }
        let (op, rel) = self.s3(path)?;
        op.exists(rel).await.map_err(io_error)
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        if !is_s3(path) {
            return self.other()?.metadata(path).await;
        }
        let (op, rel) = self.s3(path)?;
        let meta = op.stat(rel).await.map_err(io_error)?;
        Ok(FileMetadata {
            size: meta.content_length(),
        })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        if !is_s3(path) {
            return self.other()?.read(path).await;
        }
        let (op, rel) = self.s3(path)?;
        Ok(op.read(rel).await.map_err(io_error)?.to_bytes())
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        if !is_s3(path) {
            return self.other()?.reader(path).await;
        }
        let (op, rel) = self.s3(path)?;
        Ok(Box::new(Reader(op.reader(rel).await.map_err(io_error)?)))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        if !is_s3(path) {
            return self.other()?.write(path, bs).await;
        }
        let (op, rel) = self.s3(path)?;
        op.write(rel, bs).await.map_err(io_error)?;
        Ok(())
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        if !is_s3(path) {
            return self.other()?.writer(path).await;
        }
        let (op, rel) = self.s3(path)?;
        Ok(Box::new(Writer(op.writer(rel).await.map_err(io_error)?)))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        if !is_s3(path) {
            return self.other()?.delete(path).await;
        }
        let (op, rel) = self.s3(path)?;
        op.delete(rel).await.map_err(io_error)
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        if !is_s3(path) {
            return self.other()?.delete_prefix(path).await;
        }
        let (op, rel) = self.s3(path)?;
        let rel = if rel.ends_with('/') {
            rel.to_string()
        } else {
            format!("{rel}/")
        };
        op.delete_with(&rel).recursive(true).await.map_err(io_error)
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        let mut deleters: HashMap<String, opendal::Deleter> = HashMap::new();
        while let Some(path) = paths.next().await {
            if !is_s3(&path) {
                self.other()?.delete(&path).await?;
                continue;
            }
            let (op, rel) = self.s3(&path)?;
            let bucket = op.info().name().to_string();
            let deleter = match deleters.entry(bucket) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(op.deleter().await.map_err(io_error)?)
                }
            };
            deleter.delete(rel).await.map_err(io_error)?;
        }
        for (_, mut deleter) in deleters {
            deleter.close().await.map_err(io_error)?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_string()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_string()))
    }
}

struct Reader(opendal::Reader);

#[async_trait::async_trait]
impl FileRead for Reader {
    async fn read(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        Ok(self.0.read(range).await.map_err(io_error)?.to_bytes())
    }
}

struct Writer(opendal::Writer);

#[async_trait::async_trait]
impl FileWrite for Writer {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.0.write(bs).await.map_err(io_error)
    }

    async fn close(&mut self) -> Result<()> {
        self.0.close().await.map_err(io_error)?;
        Ok(())
    }
}

fn truthy(value: &str) -> bool {
    ["true", "t", "1", "on"].contains(&value.to_lowercase().as_str())
}

/// The opendal S3 settings of Iceberg `s3.*` properties, read as
/// iceberg-storage-opendal 0.10.1 reads them (virtual-host style unless
/// `s3.path-style-access`, `client.region` over `s3.region`, assume-role,
/// server-side encryption, anonymous access, no EC2 metadata or config
/// file when asked).
///
/// # Errors
/// An unknown `s3.sse.type`.
pub fn s3_config(props: &HashMap<String, String>) -> Result<S3Config> {
    use iceberg::io::{
        CLIENT_REGION, S3_ACCESS_KEY_ID, S3_ALLOW_ANONYMOUS, S3_ASSUME_ROLE_ARN,
        S3_ASSUME_ROLE_EXTERNAL_ID, S3_ASSUME_ROLE_SESSION_NAME, S3_DISABLE_CONFIG_LOAD,
        S3_DISABLE_EC2_METADATA, S3_ENDPOINT, S3_PATH_STYLE_ACCESS, S3_REGION,
        S3_SECRET_ACCESS_KEY, S3_SESSION_TOKEN, S3_SSE_KEY, S3_SSE_MD5, S3_SSE_TYPE,
    };
    let get = |k: &str| props.get(k).cloned();
    let mut cfg = S3Config::default();
    cfg.enable_virtual_host_style = true;
    cfg.endpoint = get(S3_ENDPOINT);
    cfg.access_key_id = get(S3_ACCESS_KEY_ID);
    cfg.secret_access_key = get(S3_SECRET_ACCESS_KEY);
    cfg.session_token = get(S3_SESSION_TOKEN);
    cfg.region = get(CLIENT_REGION).or_else(|| get(S3_REGION));
    cfg.role_arn = get(S3_ASSUME_ROLE_ARN);
    cfg.external_id = get(S3_ASSUME_ROLE_EXTERNAL_ID);
    cfg.role_session_name = get(S3_ASSUME_ROLE_SESSION_NAME);
    if let Some(v) = get(S3_PATH_STYLE_ACCESS) {
        cfg.enable_virtual_host_style = !truthy(&v);
    }
    match get(S3_SSE_TYPE).map(|t| t.to_lowercase()).as_deref() {
        Some("s3") => cfg.server_side_encryption = Some("AES256".to_string()),
        Some("kms") => {
            cfg.server_side_encryption = Some("aws:kms".to_string());
            cfg.server_side_encryption_aws_kms_key_id = get(S3_SSE_KEY);
        }
        Some("custom") => {
            cfg.server_side_encryption_customer_algorithm = Some("AES256".to_string());
            cfg.server_side_encryption_customer_key = get(S3_SSE_KEY);
            cfg.server_side_encryption_customer_key_md5 = get(S3_SSE_MD5);
        }
        None | Some("none") => {}
        Some(other) => {
            return Err(iceberg::Error::new(
                ErrorKind::DataInvalid,
                format!("Invalid {S3_SSE_TYPE}: {other}. Expected one of (custom, kms, s3, none)"),
            ));
        }
    }
    let on = |k: &str| get(k).is_some_and(|v| truthy(&v));
    cfg.skip_signature = on(S3_ALLOW_ANONYMOUS);
    cfg.disable_ec2_metadata = on(S3_DISABLE_EC2_METADATA);
    cfg.disable_config_load = on(S3_DISABLE_CONFIG_LOAD);
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_properties_read_as_iceberg_reads_them() {
        let props: HashMap<String, String> = [
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.region", "eu-west-1"),
            ("client.region", "us-east-2"),
            ("s3.path-style-access", "true"),
            ("s3.access-key-id", "id"),
            ("s3.sse.type", "kms"),
            ("s3.sse.key", "k"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cfg = s3_config(&props).expect("valid");
        assert_eq!(cfg.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(cfg.region.as_deref(), Some("us-east-2"));
        assert!(!cfg.enable_virtual_host_style);
        assert_eq!(cfg.access_key_id.as_deref(), Some("id"));
        assert_eq!(cfg.server_side_encryption.as_deref(), Some("aws:kms"));
        assert_eq!(
            cfg.server_side_encryption_aws_kms_key_id.as_deref(),
            Some("k")
        );
        assert!(
            s3_config(&HashMap::new())
                .expect("valid")
                .enable_virtual_host_style
        );
        let bad = HashMap::from([("s3.sse.type".to_string(), "rot13".to_string())]);
        assert!(s3_config(&bad).is_err());
    }
}
