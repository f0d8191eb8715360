//! HTTP API sources: the window is cut into request ranges (`chunk`), each
//! range asked once per `for_each` entry and paged to the end; every body
//! lands in the raw landing zone before it is parsed, and a manifest per
//! range records which pages make it up. Parsing then reads the landed
//! bodies, exactly as `--replay` does later with no request at all.
//!
//! Failures are handled on purpose: connection errors, timeouts, 429, 5xx,
//! truncated bodies and rate limits reported in 200 bodies are retried with
//! exponential backoff and jitter, honouring `Retry-After`, a bounded number
//! of times; other 4xx and error bodies fail the run at once. Either way the
//! run fails loudly and commits nothing.

pub mod api;
pub mod landing;
pub mod retry;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use super::convert::Record;
use super::json;
use super::records::{RecordSink, Unreadable};
use crate::error::{Error, Result};
use crate::pipeline::{Api, Auth, HttpSource, Job, Pagination};
use api::Verdict;
use landing::{Landing, Manifest, Page, Part};
use retry::{Failure, Pacer, Policy};

/// What the HTTP side of a run did (part of the run report).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HttpReport {
    /// Rebuilt from the landing zone without requests.
    pub replayed: bool,
    /// Requests sent (retries included).
    pub requests: u64,
    /// Retries among them.
    pub retries: u64,
    /// Pages whose records were used.
    pub pages: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// 200 responses whose body was a rate limit or an error.
    pub error_bodies: u64,
    /// Request series (a range, or a `for_each` entry of one) that returned
    /// no records at all.
    pub empty_responses: u64,
    /// The landing zone.
    pub landing: String,
    /// Raw bodies stored by this run (every response received).
    pub raw_files: Vec<String>,
    /// Manifests written (or, on replay, read).
    pub manifests: Vec<String>,
    /// `for_each` entries whose requests failed (`on_entry_error =
    /// "skip"`): their rows in the window are kept as they were.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_entries: Vec<FailedEntry>,
}

/// A `for_each` entry whose request series failed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailedEntry {
    /// The entry.
    pub entry: BTreeMap<String, String>,
    /// The days asked (`YYYY-MM-DD..YYYY-MM-DD`).
    pub days: String,
    /// Why.
    pub error: String,
}

/// A range of days asked in one request series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First UTC day the range is complete for.
    pub first: NaiveDate,
    /// Last, inclusive.
    pub last: NaiveDate,
}

/// The window cut into request ranges.
pub fn ranges(source: &HttpSource, days: &[NaiveDate]) -> Vec<Range> {
    let size = source.chunk_days.map_or(days.len().max(1), |n| n as usize);
    days.chunks(size)
        .filter_map(|c| {
            Some(Range {
                first: *c.first()?,
                last: *c.last()?,
            })
        })
        .collect()
}

/// A body landed and to be parsed: the records it holds are kept when their
/// day lies in `keep`, and get the `vars` fields.
#[derive(Debug, Clone)]
pub struct LandedPage {
    /// Where the body is.
    pub uri: String,
    /// Days whose records are taken from it.
    pub keep: std::ops::RangeInclusive<NaiveDate>,
    /// Fields of the request series (`for_each`).
    pub vars: BTreeMap<String, String>,
}

fn fill(template: &str, range: Range, pad: u32, vars: &BTreeMap<String, String>) -> String {
    let pad = chrono::Duration::days(i64::from(pad));
    let (from, to) = (range.first - pad, range.last + pad);
    // Every day asked, each quoted: a filter that matches one date at a
    // time (CKAN's `filters`) asks the neighbouring days with a list.
    let dates: Vec<String> = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|d| format!("\"{d}\""))
        .collect();
    let mut out = template
        .replace("{dates}", &dates.join(","))
        .replace("{date}", &from.to_string())
        .replace("{from}", &from.to_string())
        .replace("{to}", &to.to_string())
        .replace(
            "{to_exclusive}",
            &(to + chrono::Duration::days(1)).to_string(),
        );
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// The credential, read from its environment variable.
fn secret(source: &HttpSource) -> Result<Option<(Auth, String)>> {
    let Some(auth) = &source.auth else {
        return Ok(None);
    };
    match std::env::var(auth.env()) {
        Ok(v) if !v.is_empty() => {
            crate::secret::remember_secret(&v);
            Ok(Some((auth.clone(), v)))
        }
        _ => Err(Error::Config(format!(
            "environment variable {} (the source's auth) is not set",
            auth.env()
        ))),
    }
}

/// Masks a credential wherever it appears: as is, percent-encoded, and
/// form-encoded (as a query parameter carries it: `+` for a space, `*-._`
/// left alone).
fn mask(text: &str, secret: Option<&str>) -> String {
    let Some(s) = secret.filter(|s| !s.is_empty()) else {
        return text.to_string();
    };
    let percent =
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut out = text.replace(s, "***").replace(&percent, "***");
    if let Ok(mut u) = reqwest::Url::parse("http://127.0.0.1/") {
        u.query_pairs_mut().append_pair("k", s);
        if let Some(form) = u.query().and_then(|q| q.strip_prefix("k=")) {
            out = out.replace(form, "***");
        }
    }
    out
}

/// A URL for messages, reports and manifests: a query credential replaced
/// by `***`, and the credential masked anywhere else it appears.
fn shown(url: &reqwest::Url, auth: Option<&(Auth, String)>) -> String {
    let secret = auth.map(|(_, v)| v.as_str());
    let mut out = url.clone();
    if let Some((Auth::Query { name, .. }, _)) = auth {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == name.as_str() {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        out.query_pairs_mut().clear().extend_pairs(pairs);
    }
    mask(out.as_str(), secret)
}

/// One request series: a range and a `for_each` entry.
#[derive(Debug, Clone)]
struct Series {
    range: Range,
    index: usize,
    vars: BTreeMap<String, String>,
}

/// The first request of each series, for `--dry-run` (credentials masked).
pub fn planned_requests(source: &HttpSource, days: &[NaiveDate]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for s in series(source, days) {
        let url = first_url(source, &s, None)?;
        out.push(url.to_string());
    }
    Ok(out)
}

fn series(source: &HttpSource, days: &[NaiveDate]) -> Vec<Series> {
    let entries = if source.for_each.is_empty() {
        vec![BTreeMap::new()]
    } else {
        source.for_each.clone()
    };
    ranges(source, days)
        .into_iter()
        .flat_map(|range| {
            entries
                .iter()
                .cloned()
                .enumerate()
                .map(move |(index, vars)| Series { range, index, vars })
        })
        .collect()
}

/// The URL of a series' first page, with its parameters and query auth.
fn first_url(
    source: &HttpSource,
    s: &Series,
    auth: Option<&(Auth, String)>,
) -> Result<reqwest::Url> {
    page_url(source, s, auth, 0)
}

/// The URL of the page at `offset` (offset pagination; 0 otherwise).
fn page_url(
    source: &HttpSource,
    s: &Series,
    auth: Option<&(Auth, String)>,
    offset: u64,
) -> Result<reqwest::Url> {
    let paging = |t: &str| match &source.pagination {
        Pagination::Offset { limit, .. } => t
            .replace("{offset}", &offset.to_string())
            .replace("{limit}", &limit.to_string()),
        _ => t.to_string(),
    };
    let text = paging(&fill(&source.url, s.range, source.pad_days, &s.vars));
    let mut url = reqwest::Url::parse(&text).map_err(|e| {
        Error::Config(format!("source url {text:?} is not a URL: {e}")).caused_by(e)
    })?;
    let mut templated_paging = source.url.contains("{offset}");
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in &source.params {
            templated_paging |= v.contains("{offset}");
            q.append_pair(k, &paging(&fill(v, s.range, source.pad_days, &s.vars)));
        }
        if let Pagination::Offset {
            limit,
            offset_param,
            limit_param,
        } = &source.pagination
            && !templated_paging
        {
            q.append_pair(offset_param, &offset.to_string());
            q.append_pair(limit_param, &limit.to_string());
        }
        if let Some((Auth::Query { name, .. }, value)) = auth {
            q.append_pair(name, value);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// Fetches and lands every page of the window's request series.
pub struct Fetch<'a> {
    /// The job.
    pub job: &'a Job,
    /// Its source.
    pub source: &'a HttpSource,
    /// Where bodies land.
    pub landing: &'a Landing,
    /// This run.
    pub run_id: &'a str,
    /// The HTTP client (timeouts are per request).
    pub client: reqwest::Client,
}

struct Shared {
    auth: Option<(Auth, String)>,
    pacer: Pacer,
    policy: Policy,
    counter: AtomicU64,
    /// `<run-id>-<nonce>`: the prefix of this process's landed files.
    fetch_id: String,
    report: Mutex<HttpReport>,
    progress: std::sync::Mutex<super::progress::Fetching>,
}

impl Fetch<'_> {
    /// Runs every series (`concurrency` at once) and lands the bodies; each
    /// range gets its manifest as soon as all its series are done, so a run
    /// that fails later still leaves the finished ranges for `--replay`.
    /// Returns the pages to parse.
    pub async fn run(&self, days: &[NaiveDate]) -> (Vec<LandedPage>, HttpReport, Result<()>) {
        let auth = match secret(self.source) {
            Ok(a) => a,
            Err(e) => return (Vec::new(), HttpReport::default(), Err(e)),
        };
        let all = series(self.source, days);
        let total = all.len();
        let per_range = self.source.for_each.len().max(1);
        // Names this process's files apart from an earlier attempt that
        // used the same run id: landed files are never rewritten.
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let shared = Shared {
            auth,
            pacer: Pacer::new(self.source.min_interval),
            policy: Policy::of(self.source),
            counter: AtomicU64::new(0),
            fetch_id: format!("{}-{}", self.run_id, &nonce[..8]),
            report: Mutex::new(HttpReport {
                landing: self.landing.root().to_string(),
                ..HttpReport::default()
            }),
            progress: std::sync::Mutex::new(super::progress::Fetching::new(&self.job.name, total)),
        };
        let skip = self.source.on_entry_error == crate::pipeline::EntryErrors::Skip;
        let mut stream = futures::stream::iter(all)
            .map(|s| {
                let shared = &shared;
                async move {
                    let part = self.series(&s, shared).await;
                    if let Ok(mut p) = shared.progress.lock() {
                        p.series_done();
                    }
                    (s, part)
                }
            })
            .buffer_unordered(self.source.concurrency);
        let mut open: BTreeMap<NaiveDate, Vec<(usize, Option<Part>)>> = BTreeMap::new();
        let mut pages = Vec::new();
        let mut manifests = Vec::new();
        let mut failure = None;
        while let Some((s, done)) = stream.next().await {
            let part = match done {
                Ok(part) => Some(part),
                // A failing entry is skipped: the others go on, and its
                // rows are kept by the commit.
                Err(e) if skip => {
                    self.skipped(&s, e, &shared).await;
                    None
                }
                Err(e) => {
                    // Stops here: the series not started are never sent.
                    failure = Some(e);
                    break;
                }
            };
            let parts = open.entry(s.range.first).or_default();
            parts.push((s.index, part));
            if parts.len() < per_range {
                continue;
            }
            let manifest = self.manifest(s.range, open.remove(&s.range.first).unwrap_or_default());
            match self.landing.put_manifest(&manifest, &shared.fetch_id).await {
                Ok(uri) => manifests.push(uri),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            let folder = self.landing.folder(&self.job.name, s.range.first);
            pages.push((
                s.range.first,
                pages_of(&manifest, &folder, vec![(s.range.first, s.range.last)]),
            ));
        }
        drop(stream);
        if let Ok(mut p) = shared.progress.lock() {
            p.finish();
        }
        let mut report = shared.report.into_inner();
        manifests.sort();
        report.manifests = manifests;
        if let Some(e) = failure {
            return (Vec::new(), report, Err(e));
        }
        tracing::info!(job = %self.job.name, series = total, pages = report.pages, "fetched");
        // Ranges in day order, whatever order they finished in.
        pages.sort_by_key(|(first, _)| *first);
        (
            pages.into_iter().flat_map(|(_, p)| p).collect(),
            report,
            Ok(()),
        )
    }

    /// A failed series of a `for_each` entry, skipped: logged and
    /// reported.
    async fn skipped(&self, s: &Series, e: Error, shared: &Shared) {
        tracing::warn!(job = %self.job.name, entry = ?s.vars, error = %e, "for_each entry failed; skipped");
        shared.report.lock().await.failed_entries.push(FailedEntry {
            entry: s.vars.clone(),
            days: format!("{}..{}", s.range.first, s.range.last),
            error: e.to_string(),
        });
    }

    /// The manifest of a range whose series are all done: the parts that
    /// landed, in entry order (a skipped entry has none).
    fn manifest(&self, range: Range, mut parts: Vec<(usize, Option<Part>)>) -> Manifest {
        parts.sort_by_key(|(i, _)| *i);
        Manifest {
            job: self.job.name.clone(),
            run_id: self.run_id.to_string(),
            api: self.source.api.name().to_string(),
            fetched_at: Utc::now(),
            first_day: range.first,
            last_day: range.last,
            parts: parts.into_iter().filter_map(|(_, p)| p).collect(),
        }
    }

    /// Every page of one series.
    async fn series(&self, s: &Series, shared: &Shared) -> Result<Part> {
        let auth = shared.auth.as_ref();
        let mut url = first_url(self.source, s, auth)?;
        let origin = url.origin();
        let mut pages = Vec::new();
        let mut offset = 0u64;
        let mut total_records = 0u64;
        let mut seen_next: HashSet<String> = HashSet::new();
        let mut last_body: Option<u64> = None;
        loop {
            if pages.len() as u32 >= self.source.max_pages {
                return Err(Error::Source(format!(
                    "{}: more than {} pages for {}..{}; raise source.max_pages if that is expected",
                    shown(&url, auth),
                    self.source.max_pages,
                    s.range.first,
                    s.range.last
                )));
            }
            let got = self.page(&url, s, shared).await?;
            // A server that ignores the paging would be asked forever.
            if got.records > 0 && last_body == Some(got.body_hash) {
                return Err(Error::Source(format!(
                    "{}: the same page came back twice, so paging does not advance; check source.pagination",
                    shown(&url, auth)
                )));
            }
            last_body = Some(got.body_hash);
            let (records, next) = (got.records, got.next);
            total_records += records as u64;
            pages.push(Page {
                file: got.file,
                url: shown(&url, auth),
                records: records as u64,
            });
            if let Some(n) = &next
                && !matches!(
                    self.source.pagination,
                    Pagination::None | Pagination::Offset { .. }
                )
                && !seen_next.insert(n.clone())
            {
                return Err(Error::Source(format!(
                    "{}: the API named the same next page twice ({}); paging does not advance",
                    shown(&url, auth),
                    mask(n, auth.map(|(_, v)| v.as_str()))
                )));
            }
            let next_url = match (&self.source.pagination, next) {
                (Pagination::None, _) => None,
                (Pagination::Offset { limit, .. }, _) => {
                    offset += records as u64;
                    (records as u64 >= *limit)
                        .then(|| page_url(self.source, s, auth, offset))
                        .transpose()?
                }
                (Pagination::Next { .. }, Some(link)) if records > 0 => {
                    let next = url.join(&link).map_err(|e| {
                        Error::Source(format!("the next-page link {link:?} is not a URL: {e}"))
                            .caused_by(e)
                    })?;
                    if next.origin() != origin {
                        return Err(Error::Source(format!(
                            "the next-page link {} leads to another origin (scheme, host or port); floe does not send the source's credentials there",
                            shown(&next, auth)
                        )));
                    }
                    Some(with_query_auth(next, auth))
                }
                (Pagination::Cursor { param, .. }, Some(cursor)) if records > 0 => {
                    let mut next = first_url(self.source, s, auth)?;
                    next.query_pairs_mut().append_pair(param, &cursor);
                    Some(next)
                }
                _ => None,
            };
            match next_url {
                Some(n) => url = n,
                None => break,
            }
        }
        if total_records == 0 {
            shared.report.lock().await.empty_responses += 1;
            tracing::warn!(job = %self.job.name, url = %shown(&url, auth), "the API returned no records");
        }
        Ok(Part {
            vars: s.vars.clone(),
            pages,
        })
    }

    /// One page, retried: lands every body received and returns the one
    /// that answered.
    async fn page(&self, url: &reqwest::Url, s: &Series, shared: &Shared) -> Result<Got> {
        let secret = shared.auth.as_ref().map(|(_, v)| v.as_str());
        let shown = shown(url, shared.auth.as_ref());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            shared.pacer.wait().await;
            let failure = match self.attempt(url, s, shared).await? {
                Ok(done) => return Ok(done),
                Err(f) => f,
            };
            match shared.policy.wait(attempt, &failure) {
                Some(delay) => {
                    let reason = match &failure {
                        Failure::Transient { reason, .. } | Failure::Permanent(reason) => reason,
                    };
                    tracing::warn!(
                        job = %self.job.name,
                        url = %shown,
                        "{}; retrying in {:.1}s (retry {attempt} of {})",
                        mask(reason, secret),
                        delay.as_secs_f64(),
                        shared.policy.retries
                    );
                    shared.report.lock().await.retries += 1;
                    if let Failure::Transient {
                        retry_after: Some(_),
                        ..
                    } = failure
                    {
                        shared.pacer.hold_off(delay).await;
                    }
                    tokio::time::sleep(delay).await;
                }
                None => {
                    let msg = match failure {
                        Failure::Permanent(reason) => format!("GET {shown}: {reason}"),
                        Failure::Transient {
                            reason,
                            retry_after: Some(d),
                        } if d > shared.policy.max_retry_after => format!(
                            "GET {shown}: {reason}; the server asks to wait {}s, longer than source.max_retry_after ({}s)",
                            d.as_secs(),
                            shared.policy.max_retry_after.as_secs()
                        ),
                        Failure::Transient { reason, .. } => format!(
                            "GET {shown}: gave up after {attempt} attempts; the last: {reason}"
                        ),
                    };
                    return Err(Error::Source(mask(&msg, secret)));
                }
            }
        }
    }

    /// One attempt. The outer `Result` is a landing failure (storage),
    /// the inner one how the request went.
    async fn attempt(
        &self,
        url: &reqwest::Url,
        s: &Series,
        shared: &Shared,
    ) -> Result<std::result::Result<Got, Failure>> {
        let req = self.request(url, s, shared);
        shared.report.lock().await.requests += 1;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Err(transient(describe(&e)))),
        };
        let status = resp.status();
        let retry_after = retry::retry_after(resp.headers(), SystemTime::now());
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Ok(Err(transient(format!(
                    "{status}, but the body broke off: {}",
                    describe(&e)
                ))));
            }
        };
        // Every body received is kept as it came, before it is judged.
        let file = self.land(&body, s, shared).await?;
        if let Some(failure) = status_failure(status, retry_after, location, &body) {
            return Ok(Err(failure));
        }
        Ok(self.judge(status, retry_after, &body, file, shared).await)
    }

    /// The GET of `url` for series `s`: its timeout, headers and
    /// credential.
    fn request(&self, url: &reqwest::Url, s: &Series, shared: &Shared) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .get(url.clone())
            .timeout(self.source.timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        for (k, v) in &self.source.headers {
            req = req.header(k, fill(v, s.range, self.source.pad_days, &s.vars));
        }
        match &shared.auth {
            Some((Auth::Bearer { .. }, v)) => req = req.bearer_auth(v),
            Some((Auth::Header { name, .. }, v)) => req = req.header(name, v),
            _ => {}
        }
        req
    }

    /// Lands `body` in the range's folder of the landing zone and counts
    /// it; returns its file name.
    async fn land(&self, body: &[u8], s: &Series, shared: &Shared) -> Result<String> {
        let n = shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let file = Landing::page_name(&shared.fetch_id, n);
        let uri = format!(
            "{}/{file}",
            self.landing.folder(&self.job.name, s.range.first)
        );
        self.landing.put_page(&uri, body).await?;
        {
            let mut r = shared.report.lock().await;
            r.bytes += body.len() as u64;
            r.raw_files.push(uri);
        }
        if let Ok(mut p) = shared.progress.lock() {
            p.page(body.len() as u64);
        }
        Ok(file)
    }

    /// How a successful response's `body` (landed as `file`) went, by what
    /// the source's API says in it.
    async fn judge(
        &self,
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        file: String,
        shared: &Shared,
    ) -> std::result::Result<Got, Failure> {
        match api::inspect(self.source, body) {
            Err(e) => Err(transient(e)),
            Ok(Verdict::Unexpected(msg)) => Err(Failure::Permanent(format!(
                "{status}, but not the answer the source expects: {msg}"
            ))),
            Ok(Verdict::Throttled(msg)) => {
                shared.report.lock().await.error_bodies += 1;
                Err(Failure::Transient {
                    reason: format!("{status} with a rate-limit body: {msg}"),
                    retry_after,
                })
            }
            Ok(Verdict::Failed(msg)) => {
                shared.report.lock().await.error_bodies += 1;
                Err(Failure::Permanent(format!(
                    "{status} with an error body: {msg}"
                )))
            }
            Ok(Verdict::Page { records, next }) => {
                shared.report.lock().await.pages += 1;
                Ok(Got {
                    file,
                    records,
                    next,
                    body_hash: twox_hash::XxHash3_128::oneshot(body) as u64,
                })
            }
        }
    }
}

/// A failure worth another attempt, the server not saying when.
fn transient(reason: String) -> Failure {
    Failure::Transient {
        reason,
        retry_after: None,
    }
}

/// The failure a response's `status` alone tells (429 and 5xx transient,
/// redirects and other 4xx permanent), `None` for a success.
fn status_failure(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    location: Option<String>,
    body: &[u8],
) -> Option<Failure> {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Some(Failure::Transient {
            reason: format!("{status}: {}", api::preview(body)),
            retry_after,
        });
    }
    if status.is_redirection() {
        let to = location.unwrap_or_default();
        return Some(Failure::Permanent(format!(
            "{status}: a redirect to another origin ({to}) is not followed; point source.url at it"
        )));
    }
    if !status.is_success() {
        return Some(Failure::Permanent(format!(
            "{status}: {}",
            api::preview(body)
        )));
    }
    None
}

/// A page that answered.
struct Got {
    /// Its landed file name.
    file: String,
    /// Records in it.
    records: usize,
    /// The next link or cursor it names.
    next: Option<String>,
    /// Hash of the body (to notice paging that does not advance).
    body_hash: u64,
}

/// A connection-level error in words (reqwest's Display hides the cause).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({cause})")
    }
}

fn with_query_auth(mut url: reqwest::Url, auth: Option<&(Auth, String)>) -> reqwest::Url {
    if let Some((Auth::Query { name, .. }, value)) = auth
        && !url.query_pairs().any(|(k, _)| k == name.as_str())
    {
        url.query_pairs_mut().append_pair(name, value);
    }
    url
}

/// The pages of a manifest in `folder`, each keeping the records of
/// `spans` (runs of consecutive days the manifest serves).
pub fn pages_of(m: &Manifest, folder: &str, spans: Vec<(NaiveDate, NaiveDate)>) -> Vec<LandedPage> {
    let mut out = Vec::new();
    for (first, last) in spans {
        for part in &m.parts {
            for p in &part.pages {
                out.push(LandedPage {
                    uri: format!("{folder}/{}", p.file),
                    keep: first..=last,
                    vars: part.vars.clone(),
                });
            }
        }
    }
    out
}

/// For `--replay`: the landed pages of the window, from the newest fetch of
/// each day; fails naming the days nothing landed for.
pub async fn replay(
    job: &Job,
    landing: &Landing,
    days: &[NaiveDate],
) -> Result<(Vec<LandedPage>, HttpReport)> {
    let manifests = landing.manifests(&job.name).await?;
    let chosen = landing::choose(manifests, days).map_err(|missing| {
        let list: Vec<String> = missing.iter().map(NaiveDate::to_string).collect();
        Error::Source(format!(
            "nothing landed in {}/{} for {} day(s): {}; run without --replay to fetch them",
            landing.root(),
            job.name,
            missing.len(),
            list.join(", ")
        ))
    })?;
    let mut report = HttpReport {
        replayed: true,
        landing: landing.root().to_string(),
        ..HttpReport::default()
    };
    let mut pages = Vec::new();
    for (uri, m, served) in chosen {
        let folder = uri.rsplit_once('/').map_or("", |(f, _)| f).to_string();
        report.manifests.push(uri);
        // Consecutive days become one span.
        let mut spans: Vec<(NaiveDate, NaiveDate)> = Vec::new();
        for d in served {
            match spans.last_mut() {
                Some((_, last)) if last.succ_opt() == Some(d) => *last = d,
                _ => spans.push((d, d)),
            }
        }
        report.pages += m.parts.iter().map(|p| p.pages.len() as u64).sum::<u64>();
        pages.extend(pages_of(&m, &folder, spans));
    }
    Ok((pages, report))
}

/// Feeds the records of a landed body (zstd or plain JSON) to `sink`, each
/// with the series' `vars` added.
pub fn read_page(
    bytes: &[u8],
    uri: &str,
    source: &HttpSource,
    vars: &BTreeMap<String, String>,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let plain;
    let body = if bytes.starts_with(&ZSTD_MAGIC) {
        plain = zstd::decode_all(bytes).map_err(|e| {
            Error::Source(format!("{uri}: not a readable zstd body: {e}")).caused_by(e)
        })?;
        &plain[..]
    } else {
        bytes
    };
    // A key present twice is a reject, not the last value silently: the
    // body is then read record by record.
    let doc: Value = match json::from_slice(body) {
        Ok(d) => d,
        Err(e) if json::is_duplicate(&e) => {
            return read_page_records(body, &e, source, vars, sink);
        }
        Err(e) => {
            sink.unreadable(Unreadable::text(
                api::preview(body),
                format!("the landed body is not JSON: {e}"),
                0,
            ));
            return Ok(());
        }
    };
    let rows = api::records(source, &doc)
        .map_err(|e| Error::Source(format!("{uri}: {e}")).caused_by(e))?;
    for (i, fields) in rows.into_iter().enumerate() {
        page_record(fields, i as u64 + 1, vars, sink)?;
    }
    Ok(())
}

/// Record `number` of a page, with the series' `vars` added.
fn page_record(
    mut fields: Map<String, Value>,
    number: u64,
    vars: &BTreeMap<String, String>,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    for (k, v) in vars {
        fields
            .entry(k.clone())
            .or_insert_with(|| Value::String(v.clone()));
    }
    let raw = Value::Object(fields.clone()).to_string();
    sink.record(Record {
        fields,
        raw,
        line: number,
    })
}

/// A body with a key present twice (`dup`), record by record, when its
/// records are an array of objects (`json`, `ckan`): a record with such a
/// key is a reject of its own, with its text as the body has it. A body of
/// another shape, or with the key outside the records, is one reject.
fn read_page_records(
    body: &[u8],
    dup: &serde_json::Error,
    source: &HttpSource,
    vars: &BTreeMap<String, String>,
    sink: &mut dyn RecordSink,
) -> Result<()> {
    let path = match source.api {
        Api::Json => Some(source.records.as_deref().unwrap_or("")),
        Api::Ckan => Some(source.records.as_deref().unwrap_or("result.records")),
        _ => None,
    };
    let text = std::str::from_utf8(body).ok();
    let items = path
        .zip(text)
        .and_then(|(path, text)| json::raw_records(text, path).ok());
    let Some(items) = items else {
        sink.unreadable(Unreadable::text(
            api::preview(body),
            format!("the landed body has {dup}"),
            0,
        ));
        return Ok(());
    };
    for (i, item) in items.iter().enumerate() {
        let number = i as u64 + 1;
        match json::from_str(item.get()) {
            Ok(Value::Object(mut fields)) => {
                if matches!(source.api, Api::Ckan) {
                    // CKAN's own bookkeeping, as in `api::records`.
                    fields.remove("_id");
                    fields.remove("_full_text");
                }
                page_record(fields, number, vars, sink)?;
            }
            Ok(other) => sink.unreadable(Unreadable::text(
                other.to_string(),
                "record is not an object".into(),
                number,
            )),
            Err(e) => sink.unreadable(Unreadable::text(
                item.get().to_string(),
                e.to_string(),
                number,
            )),
        }
    }
    Ok(())
}

/// A client for API sources (per-request timeouts are set per source).
pub fn client() -> Result<reqwest::Client> {
    // Redirects are followed within the same origin only: a header
    // credential must not travel to another host (reqwest drops only
    // Authorization there), nor over plain http.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if same {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(redirects)
        .user_agent(concat!("floe/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Source(format!("cannot build an HTTP client: {e}")).caused_by(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_list_every_day_asked_with_the_padding() {
        let range = Range {
            first: "2024-03-31".parse().expect("date"),
            last: "2024-03-31".parse().expect("date"),
        };
        let filter = r#"{"SETTLEMENT_DATE": [{dates}]}"#;
        assert_eq!(
            fill(filter, range, 1, &BTreeMap::new()),
            r#"{"SETTLEMENT_DATE": ["2024-03-30","2024-03-31","2024-04-01"]}"#
        );
        assert_eq!(
            fill(filter, range, 0, &BTreeMap::new()),
            r#"{"SETTLEMENT_DATE": ["2024-03-31"]}"#
        );
    }

    #[test]
    fn templates_fill_days_padding_and_paging() {
        let mut s = api::tests_support::source(crate::pipeline::Api::Ckan);
        s.url = "http://127.0.0.1:9/api/{site}".into();
        s.params.insert(
            "sql".into(),
            "WHERE d >= '{from}' AND d < '{to_exclusive}' LIMIT {limit} OFFSET {offset}".into(),
        );
        s.pad_days = 1;
        s.pagination = Pagination::Offset {
            limit: 100,
            offset_param: "offset".into(),
            limit_param: "limit".into(),
        };
        let series = Series {
            range: Range {
                first: "2024-03-31".parse().expect("date"),
                last: "2024-03-31".parse().expect("date"),
            },
            index: 0,
            vars: BTreeMap::from([("site".to_string(), "leeds".to_string())]),
        };
        let auth = (
            Auth::Query {
                name: "apikey".into(),
                env: "K".into(),
            },
            "s3cr3t&x".to_string(),
        );
        let url = page_url(&s, &series, Some(&auth), 200).expect("url");
        let pairs: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/api/leeds");
        assert_eq!(
            pairs["sql"],
            "WHERE d >= '2024-03-30' AND d < '2024-04-02' LIMIT 100 OFFSET 200"
        );
        assert!(!pairs.contains_key("offset"), "paging is in the SQL");
        assert_eq!(pairs["apikey"], "s3cr3t&x");
        assert!(!mask(url.as_str(), Some("s3cr3t&x")).contains("s3cr3t"));
        for key in ["av_key/Z9+q=", "ab cd", "k-1.x*"] {
            let mut u = reqwest::Url::parse("http://h/p").expect("url");
            u.query_pairs_mut().append_pair("apikey", key);
            let shown = mask(&format!("GET {u}: failed"), Some(key));
            assert_eq!(shown, "GET http://h/p?apikey=***: failed", "{key:?}");
        }
    }

    #[test]
    fn windows_are_cut_into_ranges() {
        let mut s = api::tests_support::source(crate::pipeline::Api::Json);
        let days: Vec<NaiveDate> = "2024-01-01"
            .parse::<NaiveDate>()
            .expect("date")
            .iter_days()
            .take(5)
            .collect();
        assert_eq!(ranges(&s, &days).len(), 5);
        s.chunk_days = Some(2);
        let r = ranges(&s, &days);
        assert_eq!(r.len(), 3);
        assert_eq!((r[2].first, r[2].last), (days[4], days[4]));
        s.chunk_days = None;
        assert_eq!(ranges(&s, &days).len(), 1);
    }

    /// (record numbers, (number, reason) of the rejects) of a page.
    #[derive(Default)]
    struct Collect(Vec<u64>, Vec<(u64, String)>);

    impl RecordSink for Collect {
        fn record(&mut self, record: Record) -> Result<()> {
            self.0.push(record.line);
            Ok(())
        }
        fn batch(&mut self, _: arrow_array::RecordBatch, _: u64) -> Result<()> {
            Ok(())
        }
        fn unreadable(&mut self, bad: Unreadable) {
            self.1.push((bad.line, bad.reason));
        }
    }

    #[test]
    fn a_key_present_twice_rejects_its_record_or_else_the_page() {
        let read = |api, body: &str| {
            let mut sink = Collect::default();
            let s = api::tests_support::source(api);
            read_page(body.as_bytes(), "u", &s, &BTreeMap::new(), &mut sink).expect("read");
            sink
        };
        let ckan = read(
            Api::Ckan,
            r#"{"success": true, "result": {"records": [{"_id": 1, "a": 1}, {"_id": 2, "a": 2, "a": 3}, {"a": 4}]}}"#,
        );
        assert_eq!(ckan.0, [1, 3]);
        assert_eq!(ckan.1.len(), 1);
        assert_eq!(ckan.1[0].0, 2);
        assert!(ckan.1[0].1.contains("duplicate key \"a\""), "{:?}", ckan.1);
        // Records that are not an array of objects: the page is one reject.
        let meteo = read(
            Api::OpenMeteo,
            r#"{"hourly": {"time": ["2024-01-01T00:00"], "t": [1], "t": [2]}}"#,
        );
        assert!(meteo.0.is_empty());
        assert_eq!(meteo.1.len(), 1);
        assert!(
            meteo.1[0].1.contains("duplicate key \"t\""),
            "{:?}",
            meteo.1
        );
    }
}
