//! Which files a job reads for a window, and getting remote ones.
//!
//! A source path is a per-day template (`{date}` is each day of the window
//! as `YYYY-MM-DD`, plus the neighbouring days' files when present), a glob,
//! or one path. Local paths resolve against the pipeline file's folder;
//! `s3://` objects (through the same S3 settings as the tables; a prefix
//! ending in `/` or a glob is listed) and `http(s)://` URLs are fetched to a
//! temporary file, streaming, just before they are read.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use iceberg::io::FileIO;

use crate::error::{Error, Result};

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFile {
    /// A local file.
    Local(PathBuf),
    /// An `s3://` object or `http(s)://` URL.
    Remote(String),
}

impl SourceFile {
    /// A `file://` URI as a local file; anything else as remote.
    pub fn of_uri(uri: &str) -> Self {
        match uri.strip_prefix("file://") {
            Some(path) => SourceFile::Local(PathBuf::from(path)),
            None => SourceFile::Remote(uri.to_string()),
        }
    }

    /// The URI recorded in `_source` and in rejects.
    pub fn uri(&self) -> String {
        match self {
            SourceFile::Local(p) => {
                let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
                format!("file://{}", abs.display())
            }
            // Credentials in the URL are used to fetch it, never recorded.
            SourceFile::Remote(u) => crate::secret::public_url(u),
        }
    }
}

/// Reaches remote sources.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// IO for `s3://` sources.
    pub io: FileIO,
    /// Client for `http(s)://` sources.
    pub http: reqwest::Client,
    /// S3 settings (`s3.endpoint`, credentials, ...) for listing prefixes.
    pub s3_props: std::collections::HashMap<String, String>,
}

fn is_remote(path: &str) -> bool {
    path.starts_with("s3://") || path.starts_with("http://") || path.starts_with("https://")
}

impl Fetcher {
    /// A fetcher with `catalog_props` (S3 settings) and the AWS environment.
    pub fn new(catalog_props: &std::collections::HashMap<String, String>) -> Result<Self> {
        let mut s3_props = catalog_props.clone();
        crate::store::add_env_credentials(&mut s3_props);
        Ok(Self {
            io: crate::store::io_with_env(catalog_props),
            s3_props,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(std::time::Duration::from_secs(600))
                .build()
                .map_err(|e| {
                    Error::Source(format!("cannot build an HTTP client: {e}")).caused_by(e)
                })?,
        })
    }

    async fn exists(&self, uri: &str) -> Result<bool> {
        let shown = crate::secret::public_url(uri);
        if uri.starts_with("s3://") {
            return self
                .io
                .exists(uri)
                .await
                .map_err(|e| Error::Source(format!("{shown}: {e}")).caused_by(e));
        }
        let resp = self
            .http
            .head(uri)
            .send()
            .await
            .map_err(|e| Error::Source(format!("{shown}: {}", e.without_url())))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::GONE => Ok(false),
            // Servers that do not answer HEAD: the download will tell.
            reqwest::StatusCode::METHOD_NOT_ALLOWED | reqwest::StatusCode::NOT_IMPLEMENTED => {
                Ok(true)
            }
            s => Err(Error::Source(format!("{shown}: HEAD answered {s}"))),
        }
    }

    /// The `s3://bucket/key` URIs under `prefix` (recursively).
    async fn list_s3(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let op = crate::store::s3_operator(bucket, &self.s3_props)
            .map_err(|e| Error::Source(e.to_string()).caused_by(e))?;
        let entries = op.list_with(prefix).recursive(true).await.map_err(|e| {
            Error::Source(format!("listing s3://{bucket}/{prefix}: {e}")).caused_by(e)
        })?;
        Ok(entries
            .into_iter()
            .filter(|e| !e.path().ends_with('/'))
            .map(|e| format!("s3://{bucket}/{}", e.path()))
            .collect())
    }

    /// A local path to read `file` from: the file itself, or a temporary
    /// copy of a remote one (deleted when the returned guard drops). Runs on
    /// a blocking thread, driving the download through `runtime`.
    pub fn materialize(
        &self,
        file: &SourceFile,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(PathBuf, Option<tempfile::NamedTempFile>)> {
        match file {
            SourceFile::Local(p) => Ok((p.clone(), None)),
            SourceFile::Remote(u) => {
                let mut t = tempfile::NamedTempFile::new().map_err(|e| {
                    Error::Source(format!(
                        "cannot create a temporary file for {}: {e}",
                        crate::secret::public_url(u)
                    ))
                    .caused_by(e)
                })?;
                runtime.block_on(self.fetch(u, t.as_file_mut()))?;
                Ok((t.path().to_path_buf(), Some(t)))
            }
        }
    }

    /// Streams a remote source into `dest`.
    pub async fn fetch(&self, uri: &str, dest: &mut std::fs::File) -> Result<()> {
        let shown = crate::secret::public_url(uri);
        let io = |e: std::io::Error| {
            Error::Source(format!("{shown}: writing a temporary copy: {e}")).caused_by(e)
        };
        if uri.starts_with("s3://") {
            let input = self
                .io
                .new_input(uri)
                .map_err(|e| Error::Source(format!("{shown}: {e}")).caused_by(e))?;
            let size = input
                .metadata()
                .await
                .map_err(|e| Error::Source(format!("{shown}: {e}")).caused_by(e))?
                .size;
            let reader = input
                .reader()
                .await
                .map_err(|e| Error::Source(format!("{shown}: {e}")).caused_by(e))?;
            const CHUNK: u64 = 8 * 1024 * 1024;
            let mut at = 0;
            while at < size {
                let end = (at + CHUNK).min(size);
                let bytes = reader
                    .read(at..end)
                    .await
                    .map_err(|e| Error::Source(format!("{shown}: {e}")).caused_by(e))?;
                dest.write_all(&bytes).map_err(io)?;
                at = end;
            }
            return Ok(());
        }
        let mut resp = self
            .http
            .get(uri)
            .send()
            .await
            .map_err(|e| Error::Source(format!("{shown}: {}", e.without_url())))?;
        if !resp.status().is_success() {
            return Err(Error::Source(format!(
                "{shown}: GET answered {}",
                resp.status()
            )));
        }
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Source(format!("{shown}: {}", e.without_url())))?
        {
            dest.write_all(&chunk).map_err(io)?;
        }
        Ok(())
    }
}

/// The files to read, in order.
pub async fn discover(
    template: &str,
    base_dir: &Path,
    days: &[NaiveDate],
    fetcher: &Fetcher,
) -> Result<Vec<SourceFile>> {
    let places = Places {
        remote: is_remote(template),
        base_dir,
        fetcher,
    };
    if template.contains("{date}") {
        return per_day(template, days, &places).await;
    }
    let is_glob = template.contains(['*', '?', '[']);
    if let Some(rest) = template
        .strip_prefix("s3://")
        .filter(|_| is_glob || template.ends_with('/'))
    {
        return s3_listing(template, rest, is_glob, fetcher).await;
    }
    if places.remote {
        if is_glob {
            return Err(Error::Config(format!(
                "source path {template:?}: http(s) sources cannot be listed; name each file with a {{date}} template"
            )));
        }
        let (found, f) = places.exists(places.locate(template.to_string())).await?;
        return if found {
            Ok(vec![f])
        } else {
            Err(Error::Source(format!("no source file at {template}")))
        };
    }
    local_glob(template, base_dir)
}

/// Where the paths of one template lead.
struct Places<'a> {
    /// The template is an `s3://` or `http(s)://` one.
    remote: bool,
    /// The pipeline file's folder, for relative local paths.
    base_dir: &'a Path,
    /// Reaches remote sources.
    fetcher: &'a Fetcher,
}

impl Places<'_> {
    /// The file at path `p` (a local one resolved against the base folder).
    fn locate(&self, p: String) -> SourceFile {
        if self.remote {
            return SourceFile::Remote(p);
        }
        let path = PathBuf::from(p);
        SourceFile::Local(if path.is_absolute() {
            path
        } else {
            self.base_dir.join(path)
        })
    }

    /// Whether `f` exists, and `f`.
    async fn exists(&self, f: SourceFile) -> Result<(bool, SourceFile)> {
        match &f {
            SourceFile::Local(p) => Ok((p.is_file(), f)),
            SourceFile::Remote(u) => Ok((self.fetcher.exists(u).await?, f)),
        }
    }
}

/// A `{date}` template: each day's file (all must exist), plus those of
/// the days just before and after the window when present.
async fn per_day(
    template: &str,
    days: &[NaiveDate],
    places: &Places<'_>,
) -> Result<Vec<SourceFile>> {
    let path_of = |day: NaiveDate| {
        places.locate(template.replace("{date}", &day.format("%Y-%m-%d").to_string()))
    };
    let mut files = Vec::new();
    let mut missing = Vec::new();
    // A file per *local* date holds hours of the neighbouring UTC days
    // (Europe/London in summer starts its day at 23:00 UTC). The files of
    // the day before and after the window, when they exist, complete the
    // window's first and last UTC day; rows outside the window are skipped.
    if let Some(before) = days.first().and_then(|d| d.pred_opt()) {
        let (found, f) = places.exists(path_of(before)).await?;
        files.extend(found.then_some(f));
    }
    for day in days {
        let (found, f) = places.exists(path_of(*day)).await?;
        if found {
            files.push(f);
        } else {
            missing.push(f.uri());
        }
    }
    if let Some(after) = days.last().and_then(|d| d.succ_opt()) {
        let (found, f) = places.exists(path_of(after)).await?;
        files.extend(found.then_some(f));
    }
    if !missing.is_empty() {
        // Overwriting a day with nothing would delete it: refuse instead.
        return Err(Error::Source(format!(
            "missing source files for {} day(s) of the window: {}",
            missing.len(),
            missing.join(", ")
        )));
    }
    Ok(files)
}

/// An `s3://` prefix (ending in '/') takes every object under it; a glob
/// takes those under its literal part that match it ('*' stops at '/').
/// `rest` is the template after `s3://`.
async fn s3_listing(
    template: &str,
    rest: &str,
    is_glob: bool,
    fetcher: &Fetcher,
) -> Result<Vec<SourceFile>> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    let literal = key.find(['*', '?', '[']).map_or(key, |i| &key[..i]);
    let prefix = &literal[..literal.rfind('/').map_or(0, |i| i + 1)];
    let pattern = glob::Pattern::new(key).map_err(|e| {
        Error::Config(format!("source path {template:?} is not a valid glob: {e}")).caused_by(e)
    })?;
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut found: Vec<String> = fetcher
        .list_s3(bucket, prefix)
        .await?
        .into_iter()
        .filter(|uri| {
            let k = uri
                .strip_prefix(&format!("s3://{bucket}/"))
                .unwrap_or_default();
            !is_glob || pattern.matches_with(k, options)
        })
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::Source(format!("no source objects match {template}")));
    }
    Ok(found.into_iter().map(SourceFile::Remote).collect())
}

/// A local path or glob, relative to `base_dir`: the files it matches.
fn local_glob(template: &str, base_dir: &Path) -> Result<Vec<SourceFile>> {
    let pattern = base_dir.join(template);
    let pattern_text = pattern.to_string_lossy().to_string();
    let mut files: Vec<PathBuf> = glob::glob(&pattern_text)
        .map_err(|e| {
            Error::Config(format!("source path {template:?} is not a valid glob: {e}")).caused_by(e)
        })?
        .filter_map(|entry| entry.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Source(format!(
            "no source files match {pattern_text}"
        )));
    }
    Ok(files.into_iter().map(SourceFile::Local).collect())
}
