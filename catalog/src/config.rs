//! Server configuration, already resolved from flags and environment by the
//! caller (the `floe` binary); this crate never reads process-global state
//! except through [`S3Options::from_env`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Default name of the single warehouse this server serves.
pub const DEFAULT_WAREHOUSE_NAME: &str = "floe";
/// Default limit on request bodies (commits of large schemas stay far below).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// iceberg FileIO property keys (the names iceberg-rust, pyiceberg and
/// Iceberg Java share).
pub mod props {
    /// S3 endpoint URL.
    pub const S3_ENDPOINT: &str = "s3.endpoint";
    /// S3 region.
    pub const S3_REGION: &str = "s3.region";
    /// Path-style addressing (`true`/`false`).
    pub const S3_PATH_STYLE_ACCESS: &str = "s3.path-style-access";
    /// Access key id.
    pub const S3_ACCESS_KEY_ID: &str = "s3.access-key-id";
    /// Secret access key.
    pub const S3_SECRET_ACCESS_KEY: &str = "s3.secret-access-key";
    /// Session token.
    pub const S3_SESSION_TOKEN: &str = "s3.session-token";
}

/// A string that never shows up in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Every secret value this process holds, longest first: [`redact`]
/// replaces them in log output.
static KNOWN_SECRETS: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Secrets shorter than this are not looked for in logs (too likely to
/// match ordinary text).
const MIN_SECRET_LEN: usize = 4;

/// Remembers `value` as a secret, so that [`redact`] hides it wherever it
/// shows up in log output (a dependency's `Debug` of its credentials, a
/// command line).
pub fn remember_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    if let Ok(mut known) = KNOWN_SECRETS.write()
        && !known.iter().any(|k| k == value)
    {
        known.push(value.to_string());
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Markers after which dependencies print credentials in their `Debug`
/// output; the quoted value that follows is hidden even when it was never
/// remembered (a credential a dependency found by itself).
const SECRET_MARKERS: [&str; 6] = [
    "secret_access_key: \"",
    "session_token: Some(\"",
    "secret-access-key\": \"",
    "session-token\": \"",
    "client_secret: \"",
    "password: \"",
];

/// `text` with every remembered secret, and every quoted value after a
/// credential marker, replaced by `***`.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    if let Ok(known) = KNOWN_SECRETS.read() {
        for k in known.iter() {
            if out.contains(k.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(k.as_str(), "***"));
            }
        }
    }
    for marker in SECRET_MARKERS {
        if !out.contains(marker) {
            continue;
        }
        let mut result = String::with_capacity(out.len());
        let mut rest: &str = &out;
        while let Some(at) = rest.find(marker) {
            let (before, after) = rest.split_at(at + marker.len());
            result.push_str(before);
            let end = after.find('"').unwrap_or(after.len());
            result.push_str("***");
            rest = &after[end..];
        }
        result.push_str(rest);
        out = std::borrow::Cow::Owned(result);
    }
    out
}

impl Secret {
    /// Wraps a secret (and remembers it, see [`remember_secret`]).
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        remember_secret(&value);
        Self(value)
    }

    /// The secret itself; call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is the empty string (no secret given).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach S3 (or MinIO, or any S3-compatible server).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL; `None` means AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Path-style addressing (MinIO and most self-hosted servers need it).
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
    /// Session token.
    pub session_token: Option<Secret>,
    /// How long a request is retried while S3 does not answer.
    pub retry: crate::storage::StorageRetry,
}

impl S3Options {
    /// Fills the credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
    /// and `AWS_SESSION_TOKEN`, and the region from `AWS_REGION` when unset.
    pub fn with_env_credentials(mut self) -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        self.access_key_id = self.access_key_id.or_else(|| var("AWS_ACCESS_KEY_ID"));
        self.secret_access_key = self
            .secret_access_key
            .or_else(|| var("AWS_SECRET_ACCESS_KEY").map(Secret::new));
        self.session_token = self
            .session_token
            .or_else(|| var("AWS_SESSION_TOKEN").map(Secret::new));
        self.region = self
            .region
            .or_else(|| var("AWS_REGION"))
            .or_else(|| var("AWS_DEFAULT_REGION"));
        self
    }

    /// FileIO properties; credentials only when `with_credentials`.
    pub fn file_io_props(&self, with_credentials: bool) -> HashMap<String, String> {
        let mut p = HashMap::new();
        if let Some(e) = &self.endpoint {
            p.insert(props::S3_ENDPOINT.to_string(), e.clone());
        }
        if let Some(r) = &self.region {
            p.insert(props::S3_REGION.to_string(), r.clone());
        }
        p.insert(
            props::S3_PATH_STYLE_ACCESS.to_string(),
            self.path_style.to_string(),
        );
        if with_credentials {
            if let Some(k) = &self.access_key_id {
                p.insert(props::S3_ACCESS_KEY_ID.to_string(), k.clone());
            }
            if let Some(s) = &self.secret_access_key {
                p.insert(
                    props::S3_SECRET_ACCESS_KEY.to_string(),
                    s.expose().to_string(),
                );
            }
            if let Some(t) = &self.session_token {
                p.insert(props::S3_SESSION_TOKEN.to_string(), t.expose().to_string());
            }
        }
        p
    }
}

/// Who may call the catalog.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// A static bearer token accepted on every request.
    pub token: Option<Secret>,
    /// OAuth2 client-credentials: `(client_id, client_secret)`; tokens are
    /// issued at `POST /v1/oauth/tokens`.
    pub client: Option<(String, Secret)>,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
}

impl AuthConfig {
    /// Whether requests must carry a bearer token.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.client.is_some()
    }
}

/// Everything the server needs.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Warehouse root: `file:///abs/path` or `s3://bucket/prefix`.
    pub warehouse: String,
    /// Name clients may give as `?warehouse=` (also the JDBC `catalog_name`).
    pub name: String,
    /// Pointer database URL: `sqlite://PATH` or `postgres://...`.
    pub db_url: String,
    /// S3 access.
    pub s3: S3Options,
    /// Hand S3 credentials to clients in LoadTable responses.
    pub vend_credentials: bool,
    /// Authentication.
    pub auth: AuthConfig,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Connections held at once, and how long a client may send nothing.
    pub limits: ConnectionLimits,
}

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// A connection whose client sends nothing for this long (in a request
    /// header or body, or between requests) is closed.
    pub read_timeout: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            read_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl CatalogConfig {
    /// The default pointer database for a local warehouse: a SQLite file
    /// kept in the warehouse folder. `None` for object-store warehouses,
    /// which need an explicit database.
    pub fn default_db_url(warehouse: &str) -> Option<String> {
        let path = crate::warehouse::normalize_location(warehouse)?;
        let dir = path.strip_prefix("file://")?;
        Some(format!("sqlite://{dir}/floe-catalog.db"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let auth = AuthConfig {
            token: Some(Secret::new("hunter2")),
            client: Some(("id".into(), Secret::new("s3cret"))),
            token_ttl: Duration::from_secs(1),
        };
        let shown = format!("{auth:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn default_db_lives_in_a_local_warehouse() {
        assert_eq!(
            CatalogConfig::default_db_url("/data/wh").as_deref(),
            Some("sqlite:///data/wh/floe-catalog.db")
        );
        assert_eq!(CatalogConfig::default_db_url("s3://b/p"), None);
    }
}
