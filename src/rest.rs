//! A client of the Iceberg REST catalog protocol for floe's writer: config,
//! OAuth2 client credentials or a bearer token, the `prefix` the catalog
//! announces, namespaces, load, create and commit. It works against any
//! REST catalog (floe's own, Lakekeeper, Polaris, Nessie, ...).
//!
//! floe builds its own commits (overwrite snapshots, which the `iceberg`
//! crate cannot produce), so the commit call takes the requirements and
//! updates as they go on the wire.

use std::collections::HashMap;
use std::time::Duration;

use iceberg::spec::{Schema, SnapshotReference, SortOrder, TableMetadata, UnboundPartitionSpec};
use iceberg::{TableRequirement, TableUpdate};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::pipeline::CatalogSettings;
use crate::secret::{Redacted, Secret};
use crate::sigv4::SigV4;

/// Separator of namespace levels in URL paths.
const NS_SEPARATOR: &str = "%1F";

/// A table as the catalog returned it.
#[derive(Clone)]
pub struct LoadedTable {
    /// Location of the current metadata file.
    pub metadata_location: Option<String>,
    /// The metadata.
    pub metadata: TableMetadata,
    /// IO properties the catalog hands out (endpoint, credentials, ...).
    pub config: HashMap<String, String>,
    /// Every branch and tag (the `iceberg` crate keeps them private).
    pub refs: HashMap<String, SnapshotReference>,
}

impl std::fmt::Debug for LoadedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTable")
            .field("metadata_location", &self.metadata_location)
            .field("config", &Redacted(&self.config))
            .field("refs", &self.refs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct LoadTableWire {
    #[serde(rename = "metadata-location")]
    metadata_location: Option<String>,
    metadata: TableMetadata,
    #[serde(default)]
    config: HashMap<String, String>,
}

impl From<LoadTableWire> for LoadedTable {
    fn from(w: LoadTableWire) -> Self {
        Self {
            metadata_location: w.metadata_location,
            metadata: w.metadata,
            config: w.config,
            refs: HashMap::new(),
        }
    }
}

/// What a commit attempt ended with.
#[derive(Debug)]
pub enum CommitOutcome {
    /// The catalog accepted it.
    Committed(Box<LoadedTable>),
    /// 409: a requirement failed or another writer won; reload and retry.
    Conflict(String),
    /// The outcome is unknown (timeout, 5xx, broken connection): the commit
    /// may or may not have landed. The caller must check before retrying.
    Unknown(String),
}

/// A connected REST catalog client.
#[derive(Clone)]
pub struct RestClient {
    http: reqwest::Client,
    /// `{uri}/v1`, for `/config`.
    root: String,
    /// `{uri}/v1[/{prefix}]`, for everything else.
    base: String,
    token: Option<Secret>,
    signer: Option<SigV4>,
    /// Catalog defaults, then the pipeline's properties, then overrides.
    pub properties: HashMap<String, String>,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .field("sigv4", &self.signer.is_some())
            .field("properties", &Redacted(&self.properties))
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// Authenticates if configured and reads `/v1/config`.
    ///
    /// # Errors
    /// When the catalog is unreachable, rejects the credentials, or answers
    /// something that is not a REST catalog config.
    pub async fn connect(settings: &CatalogSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Catalog(format!("cannot build HTTP client: {e}")).caused_by(e))?;
        let uri = settings.uri.trim_end_matches('/').to_string();
        let mut token = settings.token.clone().filter(|t| !t.is_empty());
        if let Some(credential) = settings.credential.as_ref().filter(|c| !c.is_empty()) {
            token = Some(Secret::new(
                fetch_token(&http, &uri, credential.expose(), settings.scope.as_deref()).await?,
            ));
        }
        let signer = if settings.sigv4 {
            let region = settings
                .signing_region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_string());
            let service = settings
                .signing_name
                .clone()
                .unwrap_or_else(|| "execute-api".to_string());
            Some(SigV4::from_env(region, service)?)
        } else {
            None
        };
        let mut client = Self {
            http,
            root: format!("{uri}/v1"),
            base: format!("{uri}/v1"),
            token,
            signer,
            properties: HashMap::new(),
        };
        let query = settings
            .warehouse
            .as_deref()
            .map(|w| format!("?warehouse={}", encode(w)))
            .unwrap_or_default();
        let config = client
            .call(Method::GET, &format!("/config{query}"), None)
            .await?;
        let (status, body) = config;
        if status != StatusCode::OK {
            return Err(catalog_error(
                "read the catalog config",
                &uri,
                status,
                &body,
            ));
        }
        let strings = |v: &Value| -> HashMap<String, String> {
            v.as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut props = strings(&body["defaults"]);
        props.extend(settings.properties.clone());
        props.extend(strings(&body["overrides"]));
        if let Some(prefix) = props.get("prefix").filter(|p| !p.is_empty()) {
            client.base = format!("{uri}/v1/{}", prefix.trim_matches('/'));
        }
        crate::secret::remember_properties(props.iter());
        client.properties = props;
        Ok(client)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        // /v1/config never carries the prefix.
        let url = if path.starts_with("/config") {
            format!("{}{path}", self.root)
        } else {
            format!("{}{path}", self.base)
        };
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| Error::Catalog(format!("invalid catalog URL {url}: {e}")).caused_by(e))?;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| {
                Error::Catalog(format!("cannot encode a request: {e}")).caused_by(e)
            })?,
            None => Vec::new(),
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        if let Some(signer) = &self.signer {
            let host = match (parsed.host_str(), parsed.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => String::new(),
            };
            headers.push(("host".into(), host));
            let extra = signer.sign(
                method.as_str(),
                &parsed,
                &headers,
                &bytes,
                chrono::Utc::now(),
            );
            headers.extend(extra);
        }
        let mut req = self.http.request(method.clone(), parsed);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if body.is_some() {
            req = req.body(bytes);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{method} {url}: {e}")).caused_by(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            Error::Unavailable(format!("{method} {url}: reading the answer: {e}")).caused_by(e)
        })?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    fn table_path(namespace: &[String], table: &str) -> String {
        format!(
            "/namespaces/{}/tables/{}",
            ns_path(namespace),
            encode(table)
        )
    }

    /// Creates every missing level of `namespace`.
    pub async fn ensure_namespace(&self, namespace: &[String]) -> Result<()> {
        for depth in 1..=namespace.len() {
            let levels = &namespace[..depth];
            let (status, body) = self
                .call(
                    Method::GET,
                    &format!("/namespaces/{}", ns_path(levels)),
                    None,
                )
                .await?;
            match status {
                StatusCode::OK => continue,
                StatusCode::NOT_FOUND => {}
                other => {
                    return Err(catalog_error(
                        "load namespace",
                        &levels.join("."),
                        other,
                        &body,
                    ));
                }
            }
            let (status, body) = self
                .call(
                    Method::POST,
                    "/namespaces",
                    Some(&json!({ "namespace": levels })),
                )
                .await?;
            // 409: created concurrently by another run, which is fine.
            if !(status.is_success() || status == StatusCode::CONFLICT) {
                return Err(catalog_error(
                    "create namespace",
                    &levels.join("."),
                    status,
                    &body,
                ));
            }
        }
        Ok(())
    }

    /// The namespaces directly under `parent` (top level when empty).
    pub async fn list_namespaces(&self, parent: &[String]) -> Result<Vec<Vec<String>>> {
        let query = if parent.is_empty() {
            String::new()
        } else {
            format!("parent={}", ns_path(parent))
        };
        let pages = self.list_pages("/namespaces", &query, "namespaces").await?;
        pages
            .into_iter()
            .map(|v| {
                serde_json::from_value::<Vec<String>>(v).map_err(|e| {
                    Error::Catalog(format!("the catalog listed a malformed namespace: {e}"))
                        .caused_by(e)
                })
            })
            .collect()
    }

    /// The tables of `namespace`, as `(namespace, name)`.
    pub async fn list_tables(&self, namespace: &[String]) -> Result<Vec<(Vec<String>, String)>> {
        let path = format!("/namespaces/{}/tables", ns_path(namespace));
        let pages = self.list_pages(&path, "", "identifiers").await?;
        pages
            .into_iter()
            .map(|v| {
                let ns = serde_json::from_value::<Vec<String>>(v["namespace"].clone());
                match (ns, v["name"].as_str()) {
                    (Ok(ns), Some(name)) => Ok((ns, name.to_string())),
                    _ => Err(Error::Catalog(format!(
                        "the catalog listed a malformed table identifier: {v}"
                    ))),
                }
            })
            .collect()
    }

    /// Every item of a paginated list endpoint (bounded to 10,000 pages).
    async fn list_pages(&self, path: &str, query: &str, key: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let mut params: Vec<String> = Vec::new();
            if !query.is_empty() {
                params.push(query.to_string());
            }
            if let Some(t) = &token {
                params.push(format!("pageToken={}", encode(t)));
            }
            let url = if params.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", params.join("&"))
            };
            let (status, body) = self.call(Method::GET, &url, None).await?;
            if status != StatusCode::OK {
                return Err(catalog_error("list", path, status, &body));
            }
            if let Some(list) = body[key].as_array() {
                items.extend(list.iter().cloned());
            }
            token = body["next-page-token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(items);
            }
        }
        Err(Error::Catalog(format!(
            "listing {path} did not end after 10,000 pages"
        )))
    }

    /// Loads a table; `None` when it does not exist.
    pub async fn load_table(
        &self,
        namespace: &[String],
        table: &str,
    ) -> Result<Option<LoadedTable>> {
        let (status, body) = self
            .call(Method::GET, &Self::table_path(namespace, table), None)
            .await?;
        match status {
            StatusCode::OK => Ok(Some(parse_load(body, namespace, table)?)),
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(catalog_error(
                "load table",
                &ident(namespace, table),
                other,
                &body,
            )),
        }
    }

    /// Drops a table; with `purge`, asks the catalog to delete its files too
    /// (otherwise they are left to the catalog's purge policy).
    pub async fn drop_table(&self, namespace: &[String], table: &str, purge: bool) -> Result<()> {
        let mut path = Self::table_path(namespace, table);
        if purge {
            path.push_str("?purgeRequested=true");
        }
        let (status, body) = self.call(Method::DELETE, &path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(catalog_error(
            "drop table",
            &ident(namespace, table),
            status,
            &body,
        ))
    }

    /// Creates a table; when another run created it first, loads that one.
    pub async fn create_table(
        &self,
        namespace: &[String],
        table: &str,
        schema: &Schema,
        spec: &UnboundPartitionSpec,
        order: &SortOrder,
        properties: &HashMap<String, String>,
    ) -> Result<LoadedTable> {
        self.create_table_at(namespace, table, schema, spec, order, properties, None)
            .await
    }

    /// Creates a table at `location` (none: where the catalog puts it);
    /// as [`RestClient::create_table`] otherwise.
    ///
    /// # Errors
    /// As [`RestClient::create_table`].
    #[allow(clippy::too_many_arguments)]
    pub async fn create_table_at(
        &self,
        namespace: &[String],
        table: &str,
        schema: &Schema,
        spec: &UnboundPartitionSpec,
        order: &SortOrder,
        properties: &HashMap<String, String>,
        location: Option<&str>,
    ) -> Result<LoadedTable> {
        let mut body = json!({
            "name": table,
            "schema": schema,
            "partition-spec": spec,
            "write-order": order,
            "properties": properties,
        });
        if let Some(location) = location {
            body["location"] = Value::String(location.to_string());
        }
        let (status, value) = self
            .call(
                Method::POST,
                &format!("/namespaces/{}/tables", ns_path(namespace)),
                Some(&body),
            )
            .await?;
        match status {
            StatusCode::OK => parse_load(value, namespace, table),
            StatusCode::CONFLICT => self.load_table(namespace, table).await?.ok_or_else(|| {
                Error::Catalog(format!(
                    "table {} exists but cannot be loaded",
                    ident(namespace, table)
                ))
            }),
            other => Err(catalog_error(
                "create table",
                &ident(namespace, table),
                other,
                &value,
            )),
        }
    }

    /// Sends one commit.
    pub async fn commit(
        &self,
        namespace: &[String],
        table: &str,
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
    ) -> Result<CommitOutcome> {
        let body = json!({
            "identifier": { "namespace": namespace, "name": table },
            "requirements": requirements,
            "updates": updates,
        });
        let outcome = self
            .call(
                Method::POST,
                &Self::table_path(namespace, table),
                Some(&body),
            )
            .await;
        match outcome {
            Err(e) => Ok(CommitOutcome::Unknown(e.to_string())),
            Ok((StatusCode::OK, value)) => Ok(CommitOutcome::Committed(Box::new(parse_load(
                value, namespace, table,
            )?))),
            Ok((StatusCode::CONFLICT, value)) => Ok(CommitOutcome::Conflict(error_message(&value))),
            Ok((status, value)) if status.is_server_error() => Ok(CommitOutcome::Unknown(format!(
                "{status}: {}",
                error_message(&value)
            ))),
            Ok((status, value)) => Err(catalog_error(
                "commit to",
                &ident(namespace, table),
                status,
                &value,
            )),
        }
    }
}

/// One table's part of a multi-table commit.
#[derive(Debug, Clone)]
pub struct TableChange {
    /// Namespace levels.
    pub namespace: Vec<String>,
    /// Table name.
    pub table: String,
    /// Requirements checked atomically with every other table's.
    pub requirements: Vec<TableRequirement>,
    /// Updates applied when all requirements hold.
    pub updates: Vec<TableUpdate>,
}

/// What a multi-table commit ended with.
#[derive(Debug)]
pub enum TransactionOutcome {
    /// Every change was applied.
    Committed,
    /// A requirement failed: nothing was applied.
    Conflict(String),
    /// The catalog has no `transactions/commit` endpoint.
    Unsupported(String),
    /// Unknown (timeout, 5xx): check the tables before retrying.
    Unknown(String),
}

impl RestClient {
    /// Commits changes to several tables at once, all or nothing
    /// (`POST /v1/{prefix}/transactions/commit`).
    pub async fn commit_transaction(&self, changes: &[TableChange]) -> Result<TransactionOutcome> {
        let body = json!({
            "table-changes": changes.iter().map(|c| json!({
                "identifier": { "namespace": c.namespace, "name": c.table },
                "requirements": c.requirements,
                "updates": c.updates,
            })).collect::<Vec<_>>(),
        });
        match self
            .call(Method::POST, "/transactions/commit", Some(&body))
            .await
        {
            Err(e) => Ok(TransactionOutcome::Unknown(e.to_string())),
            Ok((status, _)) if status.is_success() => Ok(TransactionOutcome::Committed),
            Ok((StatusCode::CONFLICT, value)) => {
                Ok(TransactionOutcome::Conflict(error_message(&value)))
            }
            Ok((
                status @ (StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::NOT_IMPLEMENTED),
                value,
            )) => Ok(TransactionOutcome::Unsupported(format!(
                "{status}: {}",
                error_message(&value)
            ))),
            Ok((status, value)) if status.is_server_error() => Ok(TransactionOutcome::Unknown(
                format!("{status}: {}", error_message(&value)),
            )),
            Ok((status, value)) => Err(catalog_error(
                "commit a transaction on",
                &changes
                    .iter()
                    .map(|c| ident(&c.namespace, &c.table))
                    .collect::<Vec<_>>()
                    .join(", "),
                status,
                &value,
            )),
        }
    }
}

fn parse_load(body: Value, namespace: &[String], table: &str) -> Result<LoadedTable> {
    let refs: HashMap<String, SnapshotReference> =
        serde_json::from_value(body["metadata"]["refs"].clone()).unwrap_or_default();
    serde_json::from_value::<LoadTableWire>(body)
        .map(|w| LoadedTable {
            refs,
            ..LoadedTable::from(w)
        })
        .map_err(|e| {
            Error::Catalog(format!(
                "the catalog's answer for {} is not a table: {e}",
                ident(namespace, table)
            ))
            .caused_by(e)
        })
}

async fn fetch_token(
    http: &reqwest::Client,
    uri: &str,
    credential: &str,
    scope: Option<&str>,
) -> Result<String> {
    let (id, secret) = credential.split_once(':').ok_or_else(|| {
        Error::Config("catalog credential must be client_id:client_secret".into())
    })?;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
        ("scope", scope.unwrap_or("catalog")),
    ];
    let url = format!("{uri}/v1/oauth/tokens");
    let resp = http
        .post(&url)
        .form(&form)
        .send()
        .await
        .map_err(|e| Error::Catalog(format!("POST {url}: {e}")).caused_by(e))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match body["access_token"].as_str() {
        Some(t) if status.is_success() => Ok(t.to_string()),
        _ => Err(Error::Catalog(format!(
            "the catalog at {uri} refused the client credentials ({status}): {}",
            body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given")
        ))),
    }
}

fn error_message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string())
}

fn catalog_error(what: &str, subject: &str, status: StatusCode, body: &Value) -> Error {
    let text = format!("cannot {what} {subject}: {status}: {}", error_message(body));
    if status.is_server_error() {
        Error::Unavailable(text)
    } else {
        Error::Catalog(text)
    }
}

fn ident(namespace: &[String], table: &str) -> String {
    format!("{}.{table}", namespace.join("."))
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn ns_path(levels: &[String]) -> String {
    levels
        .iter()
        .map(|l| encode(l))
        .collect::<Vec<_>>()
        .join(NS_SEPARATOR)
}
