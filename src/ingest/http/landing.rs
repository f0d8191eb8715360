//! The raw landing zone: every response body as received, zstd-compressed
//! and never rewritten, at
//! `<root>/<job>/dt=<first day>/<run-id>-<nonce>-<n>.json.zst` (the nonce
//! keeps a retried run with the same id from reusing names), and per request
//! range a manifest (`<run-id>-<nonce>.manifest.json`) naming the pages that
//! made it up, written once all of them landed. `--replay` reads
//! the manifests, never the API.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use iceberg::io::FileIO;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One landed page of a request series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Page {
    /// The body's file name, in the manifest's folder (so that a landing
    /// zone can be copied or moved whole).
    pub file: String,
    /// The request, credentials masked.
    pub url: String,
    /// Records in the body.
    pub records: u64,
}

/// The pages of one request series (one `for_each` entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// The `for_each` entry (added to every record).
    pub vars: BTreeMap<String, String>,
    /// Its pages, in order.
    pub pages: Vec<Page>,
}

/// What one fetch of a range of days landed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Job name.
    pub job: String,
    /// The run that fetched it.
    pub run_id: String,
    /// Response shape.
    pub api: String,
    /// When the fetch finished.
    pub fetched_at: DateTime<Utc>,
    /// First UTC day the fetch is complete for.
    pub first_day: NaiveDate,
    /// Last UTC day the fetch is complete for.
    pub last_day: NaiveDate,
    /// The request series.
    pub parts: Vec<Part>,
}

/// A landing zone root and the IO to reach it.
#[derive(Debug, Clone)]
pub struct Landing {
    root: String,
    io: FileIO,
    props: HashMap<String, String>,
}

/// `s3://...` and `file://...` stay; an absolute local path becomes a
/// `file://` URI.
fn as_uri(location: &str) -> String {
    let trimmed = location.trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("file://{trimmed}")
    }
}

impl Landing {
    /// The landing zone: `configured` (`[landing] location`), else `raw/`
    /// at the warehouse root, found by taking the namespace and table
    /// folders off the table's location.
    pub fn resolve(
        configured: Option<&str>,
        table_location: &str,
        namespace: &[String],
        io: FileIO,
        props: HashMap<String, String>,
    ) -> Result<Self> {
        let root = match configured {
            Some(c) => as_uri(c),
            None => {
                let mut parts: Vec<&str> =
                    table_location.trim_end_matches('/').split('/').collect();
                parts.pop();
                let mut ok = parts.len() > namespace.len() + 1;
                for level in namespace.iter().rev() {
                    ok &= parts.pop() == Some(level.as_str());
                }
                if !ok {
                    return Err(Error::Config(format!(
                        "cannot tell the warehouse root from the table location {table_location}; set [landing] location = \"s3://bucket/raw\" (or a local folder) in the pipeline file"
                    )));
                }
                format!("{}/raw", parts.join("/"))
            }
        };
        Ok(Self { root, io, props })
    }

    /// The zone's root URI.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The folder of a fetch starting at `day`: its bodies and manifest.
    pub fn folder(&self, job: &str, day: NaiveDate) -> String {
        format!("{}/{job}/dt={day}", self.root)
    }

    /// The file name of page `n` of a fetch (`<run-id>-<nonce>`).
    pub fn page_name(fetch_id: &str, n: u64) -> String {
        format!("{fetch_id}-{n}.json.zst")
    }

    /// Stores a body, compressed; returns the bytes stored.
    pub async fn put_page(&self, uri: &str, body: &[u8]) -> Result<u64> {
        let packed = zstd::encode_all(body, 3)
            .map_err(|e| Error::Storage(format!("compressing {uri}: {e}")).caused_by(e))?;
        let size = packed.len() as u64;
        self.put(uri, packed).await?;
        Ok(size)
    }

    async fn put(&self, uri: &str, bytes: Vec<u8>) -> Result<()> {
        let out = self
            .io
            .new_output(uri)
            .map_err(|e| Error::Storage(format!("{uri}: {e}")).caused_by(e))?;
        out.write(bytes.into())
            .await
            .map_err(|e| Error::Storage(format!("cannot write {uri}: {e}")).caused_by(e))
    }

    /// Records a completed fetch as `<fetch_id>.manifest.json`; returns
    /// its location.
    pub async fn put_manifest(&self, m: &Manifest, fetch_id: &str) -> Result<String> {
        let uri = format!(
            "{}/{fetch_id}.manifest.json",
            self.folder(&m.job, m.first_day)
        );
        let json = serde_json::to_vec_pretty(m)
            .map_err(|e| Error::Storage(format!("encoding {uri}: {e}")).caused_by(e))?;
        self.put(&uri, json).await?;
        Ok(uri)
    }

    /// Every manifest of `job`.
    pub async fn manifests(&self, job: &str) -> Result<Vec<(String, Manifest)>> {
        let listed = crate::store::list(&format!("{}/{job}", self.root), &self.props).await?;
        let mut out = Vec::new();
        for f in listed
            .into_iter()
            .filter(|f| f.uri.ends_with(".manifest.json"))
        {
            let bytes = self
                .io
                .new_input(&f.uri)
                .map_err(|e| Error::Storage(format!("{}: {e}", f.uri)).caused_by(e))?
                .read()
                .await
                .map_err(|e| Error::Storage(format!("cannot read {}: {e}", f.uri)).caused_by(e))?;
            let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Source(format!("{} is not a floe landing manifest: {e}", f.uri)).caused_by(e)
            })?;
            out.push((f.uri, m));
        }
        Ok(out)
    }
}

/// For replay: per day of `days`, the newest manifest complete for it.
/// Returns each chosen manifest (location and content) with the days it
/// serves (a later fetch of a narrower range takes those days over), or the
/// days no fetch covers.
#[allow(clippy::type_complexity)]
pub fn choose(
    manifests: Vec<(String, Manifest)>,
    days: &[NaiveDate],
) -> std::result::Result<Vec<(String, Manifest, Vec<NaiveDate>)>, Vec<NaiveDate>> {
    let mut chosen: BTreeMap<usize, Vec<NaiveDate>> = BTreeMap::new();
    let mut missing = Vec::new();
    for day in days {
        let newest = manifests
            .iter()
            .enumerate()
            .filter(|(_, (_, m))| m.first_day <= *day && *day <= m.last_day)
            .max_by(|(_, (_, a)), (_, (_, b))| {
                (a.fetched_at, &a.run_id).cmp(&(b.fetched_at, &b.run_id))
            })
            .map(|(i, _)| i);
        match newest {
            Some(i) => chosen.entry(i).or_default().push(*day),
            None => missing.push(*day),
        }
    }
    if !missing.is_empty() {
        return Err(missing);
    }
    let mut by_index: BTreeMap<usize, (String, Manifest)> =
        manifests.into_iter().enumerate().collect();
    Ok(chosen
        .into_iter()
        .filter_map(|(i, days)| by_index.remove(&i).map(|(uri, m)| (uri, m, days)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(run: &str, at: i64, first: &str, last: &str) -> (String, Manifest) {
        (
            format!("{run}.manifest.json"),
            Manifest {
                job: "j".into(),
                run_id: run.into(),
                api: "json".into(),
                fetched_at: DateTime::from_timestamp(at, 0).expect("time"),
                first_day: first.parse().expect("date"),
                last_day: last.parse().expect("date"),
                parts: Vec::new(),
            },
        )
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn the_newest_fetch_of_each_day_wins() {
        let all = vec![
            manifest("a", 1, "2024-01-01", "2024-01-07"),
            manifest("b", 2, "2024-01-03", "2024-01-03"),
        ];
        let days: Vec<NaiveDate> = day("2024-01-02").iter_days().take(3).collect();
        let chosen = choose(all.clone(), &days).expect("covered");
        let runs: Vec<(&str, Vec<NaiveDate>)> = chosen
            .iter()
            .map(|(_, m, d)| (m.run_id.as_str(), d.clone()))
            .collect();
        assert_eq!(
            runs,
            [
                ("a", vec![day("2024-01-02"), day("2024-01-04")]),
                ("b", vec![day("2024-01-03")])
            ]
        );
        assert_eq!(
            choose(all, &[day("2024-01-08")]).err(),
            Some(vec![day("2024-01-08")])
        );
    }

    #[test]
    fn the_default_root_is_beside_the_namespaces() {
        let io = crate::store::io_with_env(&HashMap::new());
        let l = Landing::resolve(
            None,
            "s3://lake/wh/bronze/demand-0123",
            &["bronze".into()],
            io.clone(),
            HashMap::new(),
        )
        .expect("resolves");
        assert_eq!(l.root(), "s3://lake/wh/raw");
        assert!(
            Landing::resolve(
                None,
                "s3://lake/wh/7f3a/demand",
                &["bronze".into()],
                io.clone(),
                HashMap::new()
            )
            .is_err()
        );
        let l = Landing::resolve(Some("/data/raw/"), "", &[], io, HashMap::new()).expect("set");
        assert_eq!(l.root(), "file:///data/raw");
    }
}
