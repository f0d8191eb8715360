//! A client of Trino's HTTP statement protocol (`POST /v1/statement`, then
//! `GET nextUri` until the query is done), enough for floe to have a Trino
//! cluster run SQL: the user, catalog and session properties go in
//! `X-Trino-*` headers, a password as HTTP basic auth or a JWT as a bearer
//! token. A query error keeps Trino's message, error name and the line and
//! column it points at; a query floe stops waiting for is cancelled.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pipeline::TrinoSettings;

/// Polls a busy coordinator may answer with 503/429 before floe gives up.
const MAX_BUSY_RETRIES: u32 = 30;
/// Pause before asking a busy coordinator again.
const BUSY_PAUSE: Duration = Duration::from_millis(500);
/// Times a statement is sent again while the coordinator has no node to
/// run it on (a coordinator that just started, before its nodes announce
/// themselves): the statement was not run, so sending it again is safe.
const MAX_NO_NODES_RETRIES: u32 = 30;
/// Pause before sending such a statement again.
const NO_NODES_PAUSE: Duration = Duration::from_secs(2);
/// Trino's error name for a query it had no node to schedule on.
const NO_NODES: &str = "NO_NODES_AVAILABLE";

/// A connection to one Trino coordinator.
#[derive(Clone)]
pub struct TrinoClient {
    http: reqwest::Client,
    settings: TrinoSettings,
}

impl std::fmt::Debug for TrinoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrinoClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Where in the query Trino's error points (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlPosition {
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

/// A query Trino ran and failed (or killed).
#[derive(Debug, Clone)]
pub struct QueryFailure {
    /// Trino's message.
    pub message: String,
    /// Trino's error name (`SYNTAX_ERROR`, `FUNCTION_NOT_FOUND`,
    /// `ADMINISTRATIVELY_KILLED`, ...).
    pub error_name: String,
    /// Where in the statement it points, when it does.
    pub position: Option<SqlPosition>,
}

impl std::fmt::Display for QueryFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.error_name)
    }
}

/// What a statement ended with.
pub enum Outcome {
    /// It finished: its rows (for a query), as Trino's JSON values.
    Done(Vec<Vec<Value>>),
    /// Trino refused or failed it.
    Failed(QueryFailure),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    next_uri: Option<String>,
    #[serde(default)]
    data: Vec<Vec<Value>>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_name: String,
    error_location: Option<WireLocation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireLocation {
    line_number: u64,
    column_number: u64,
}

/// Cancels the query when dropped before it finished (floe stopped
/// waiting: an error, a timeout or an interrupted run).
struct Cancel {
    http: reqwest::Client,
    next: Option<String>,
}

impl Drop for Cancel {
    fn drop(&mut self) {
        let (Some(uri), Ok(handle)) = (self.next.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let http = self.http.clone();
        handle.spawn(async move {
            let _ = http.delete(uri).send().await;
        });
    }
}

impl TrinoClient {
    /// A client for the coordinator `settings` name (nothing is sent yet).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(settings: &TrinoSettings) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // One poll: Trino answers a GET of nextUri within about a second.
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Config(format!("cannot build an HTTP client: {e}")).caused_by(e))?;
        Ok(Self {
            http,
            settings: settings.clone(),
        })
    }

    /// The coordinator's URI, for messages.
    pub fn uri(&self) -> &str {
        &self.settings.uri
    }

    /// The Trino catalog floe's tables are in.
    pub fn catalog(&self) -> &str {
        &self.settings.catalog
    }

    /// Runs one statement and waits for it (at most the settings' query
    /// timeout; the query is cancelled then).
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the coordinator cannot be reached or
    /// answers something that is not the statement protocol; a failed
    /// query is [`Outcome::Failed`], not an error.
    pub async fn run(&self, sql: &str) -> Result<Outcome> {
        self.run_with(sql, &[]).await
    }

    /// [`TrinoClient::run`] with session properties of its own (over the
    /// settings').
    ///
    /// # Errors
    /// As [`TrinoClient::run`].
    pub async fn run_with(&self, sql: &str, session: &[(String, String)]) -> Result<Outcome> {
        let started = Instant::now();
        let mut retries = 0;
        loop {
            match self.run_once(sql, session, started).await? {
                Outcome::Failed(f)
                    if f.error_name == NO_NODES
                        && retries < MAX_NO_NODES_RETRIES
                        && started.elapsed() + NO_NODES_PAUSE < self.settings.query_timeout =>
                {
                    retries += 1;
                    tracing::info!(
                        uri = %self.settings.uri,
                        retries,
                        "Trino has no node to run the statement on yet; sending it again"
                    );
                    tokio::time::sleep(NO_NODES_PAUSE).await;
                }
                outcome => return Ok(outcome),
            }
        }
    }

    /// One sending of `sql`, waited for until `started` is the settings'
    /// query timeout ago.
    async fn run_once(
        &self,
        sql: &str,
        session: &[(String, String)],
        started: Instant,
    ) -> Result<Outcome> {
        let url = format!("{}/v1/statement", self.settings.uri.trim_end_matches('/'));
        let first = self.send(|| {
            let mut request = self.with_headers(self.http.post(&url).body(sql.to_string()));
            for (k, v) in session {
                request = request.header("X-Trino-Session", format!("{k}={v}"));
            }
            request
        });
        let mut answer = first.await?;
        let mut cancel = Cancel {
            http: self.http.clone(),
            next: answer.next_uri.clone(),
        };
        let mut rows: Vec<Vec<Value>> = std::mem::take(&mut answer.data);
        loop {
            if let Some(e) = answer.error.take() {
                cancel.next = None;
                return Ok(Outcome::Failed(QueryFailure {
                    message: e.message,
                    error_name: e.error_name,
                    position: e.error_location.map(|l| SqlPosition {
                        line: l.line_number,
                        column: l.column_number,
                    }),
                }));
            }
            let Some(next) = answer.next_uri.take() else {
                cancel.next = None;
                return Ok(Outcome::Done(rows));
            };
            if started.elapsed() > self.settings.query_timeout {
                return Err(Error::Unavailable(format!(
                    "Trino at {}: the query ran longer than {:?} (engines.trino query_timeout); it was cancelled",
                    self.settings.uri, self.settings.query_timeout
                )));
            }
            cancel.next = Some(next.clone());
            answer = self
                .send(|| self.with_headers(self.http.get(&next)))
                .await?;
            rows.append(&mut answer.data);
        }
    }

    /// Sends a request, asking again while the coordinator is busy.
    async fn send(&self, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Answer> {
        let uri = &self.settings.uri;
        let unreachable = |e: reqwest::Error| {
            Error::Unavailable(format!(
                "cannot reach Trino at {uri} ([engines.trino] uri): {e}"
            ))
            .caused_by(e)
        };
        for _ in 0..MAX_BUSY_RETRIES {
            let response = request().send().await.map_err(unreachable)?;
            let status = response.status();
            if matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
            ) {
                tokio::time::sleep(BUSY_PAUSE).await;
                continue;
            }
            let body = response.text().await.map_err(unreachable)?;
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Error::Config(format!(
                    "Trino at {uri} refused floe's credentials (HTTP {status}); set [engines.trino] user and password or token"
                )));
            }
            if !status.is_success() {
                return Err(Error::Unavailable(format!(
                    "Trino at {uri} answered HTTP {status}: {}",
                    body.chars().take(300).collect::<String>()
                )));
            }
            return serde_json::from_str(&body).map_err(|e| {
                Error::Unavailable(format!(
                    "Trino at {uri} answered something that is not the statement protocol: {e}"
                ))
                .caused_by(e)
            });
        }
        Err(Error::Unavailable(format!(
            "Trino at {uri} stayed busy (HTTP 503/429) for {MAX_BUSY_RETRIES} attempts"
        )))
    }

    fn with_headers(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let s = &self.settings;
        let mut request = request
            .header("X-Trino-User", &s.user)
            .header("X-Trino-Source", "floe")
            .header("X-Trino-Catalog", &s.catalog);
        for (k, v) in &s.session {
            request = request.header("X-Trino-Session", format!("{k}={v}"));
        }
        if let Some(token) = s.token.as_ref().filter(|t| !t.is_empty()) {
            request = request.bearer_auth(token.expose());
        } else if let Some(password) = s.password.as_ref().filter(|p| !p.is_empty()) {
            request = request.basic_auth(&s.user, Some(password.expose()));
        }
        request
    }
}

/// `column` within any of `days` (UTC days since 1970-01-01; contiguous
/// days as one range), as a Trino predicate; `zoned` for a `timestamp with
/// time zone` column.
pub fn day_filter(column: &str, days: &std::collections::BTreeSet<i32>, zoned: bool) -> String {
    let stamp = |day: i32| {
        let date = chrono::NaiveDate::from_num_days_from_ce_opt(day + EPOCH_DAYS_FROM_CE)
            .unwrap_or_default();
        let zone = if zoned { " UTC" } else { "" };
        format!("TIMESTAMP '{date} 00:00:00{zone}'")
    };
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &day in days {
        match ranges.last_mut() {
            Some((_, hi)) if *hi + 1 == day => *hi = day,
            _ => ranges.push((day, day)),
        }
    }
    let parts: Vec<String> = ranges
        .into_iter()
        .map(|(lo, hi)| {
            format!(
                "({c} >= {} AND {c} < {})",
                stamp(lo),
                stamp(hi + 1),
                c = quoted(column)
            )
        })
        .collect();
    if parts.is_empty() {
        "false".to_string()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A string as a Trino SQL literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A name as a Trino SQL identifier (always quoted).
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_filter_covers_whole_utc_days() {
        let days: std::collections::BTreeSet<i32> = [19812, 19813, 19815].into_iter().collect();
        assert_eq!(
            day_filter("ts_utc", &days, true),
            "((\"ts_utc\" >= TIMESTAMP '2024-03-30 00:00:00 UTC' AND \"ts_utc\" < TIMESTAMP '2024-04-01 00:00:00 UTC') OR (\"ts_utc\" >= TIMESTAMP '2024-04-02 00:00:00 UTC' AND \"ts_utc\" < TIMESTAMP '2024-04-03 00:00:00 UTC'))"
        );
        assert_eq!(
            day_filter("t", &[0].into_iter().collect(), false),
            "((\"t\" >= TIMESTAMP '1970-01-01 00:00:00' AND \"t\" < TIMESTAMP '1970-01-02 00:00:00'))"
        );
        assert_eq!(day_filter("t", &Default::default(), false), "false");
    }

    /// A coordinator that has no node to run on yet: the statement is sent
    /// again (bounded) until it runs; any other failure is not.
    #[tokio::test]
    async fn a_statement_is_sent_again_while_trino_has_no_node() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};

        let posts = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&posts);
        let app = axum::Router::new().route(
            "/v1/statement",
            axum::routing::post(move |body: String| {
                let seen = Arc::clone(&seen);
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                    let error = |name: &str| {
                        serde_json::json!({"id": "q", "error": {"message": "no", "errorName": name}})
                    };
                    axum::Json(match body.as_str() {
                        "SELECT 1" if n < 3 => error(NO_NODES),
                        "SELECT 1" => serde_json::json!({"id": "q", "data": [[1]]}),
                        _ => error("SYNTAX_ERROR"),
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let settings = TrinoSettings {
            uri: format!("http://{addr}"),
            catalog: "iceberg".into(),
            user: "floe".into(),
            password: None,
            token: None,
            query_timeout: Duration::from_secs(60),
            session: Default::default(),
        };
        let client = TrinoClient::new(&settings).expect("client");
        match client.run("SELECT 1").await.expect("runs") {
            Outcome::Done(rows) => assert_eq!(rows, vec![vec![Value::from(1)]]),
            Outcome::Failed(f) => panic!("failed: {f}"),
        }
        assert_eq!(posts.load(Ordering::SeqCst), 3);
        match client.run("SELEC 1").await.expect("answers") {
            Outcome::Failed(f) => assert_eq!(f.error_name, "SYNTAX_ERROR"),
            Outcome::Done(_) => panic!("a syntax error ran"),
        }
        assert_eq!(
            posts.load(Ordering::SeqCst),
            4,
            "a syntax error is not sent again"
        );
        server.abort();
    }

    #[test]
    fn names_and_strings_are_quoted() {
        assert_eq!(quoted("ts_utc"), "\"ts_utc\"");
        assert_eq!(quoted("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
