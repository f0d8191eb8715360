//! The response shapes of the APIs floe knows: what a body says (data, a
//! rate limit or an error, even with HTTP 200), where its next page is, and
//! its records as flat field maps with the fields a job's columns name.

use serde_json::{Map, Value};

use crate::pipeline::{Api, HttpSource, Pagination};

/// What a body says, before its records are used.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Data: how many records, and where the next page is.
    Page {
        /// Records in the body.
        records: usize,
        /// The next page's link or cursor, when the body names one.
        next: Option<String>,
    },
    /// A rate limit reported in the body: try again later.
    Throttled(String),
    /// An error reported in the body: give up.
    Failed(String),
    /// JSON, but not of the source's shape (no records where they should
    /// be): give up, asking again would not change it.
    Unexpected(String),
}

/// Reads a body: not JSON (a truncated or HTML body) is an `Err`, which
/// the fetcher retries; JSON of another shape is [`Verdict::Unexpected`].
pub fn inspect(source: &HttpSource, body: &[u8]) -> Result<Verdict, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the body is not JSON ({e}; {} bytes: {})",
            body.len(),
            preview(body)
        )
    })?;
    if let Some(v) = soft_error(source.api, &doc) {
        return Ok(v);
    }
    let records = match records(source, &doc) {
        Ok(r) => r.len(),
        Err(e) => return Ok(Verdict::Unexpected(e)),
    };
    let next = match &source.pagination {
        Pagination::Next { path } | Pagination::Cursor { path, .. } => at_path(&doc, path)
            .and_then(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
        _ => None,
    };
    Ok(Verdict::Page { records, next })
}

/// The first bytes of a body, for messages.
pub fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > 200 {
        format!("{flat}…")
    } else {
        flat
    }
}

/// Whether a rate-limit message speaks of a daily quota only (a message
/// that names a per-minute or per-second frequency is a pace to keep).
fn daily_quota(message: &str) -> bool {
    let m = message.to_lowercase();
    let daily = ["per day", "daily", "a day", "per 24 hours"]
        .iter()
        .any(|w| m.contains(w));
    daily && !m.contains("minute") && !m.contains("second")
}

/// Errors and rate limits that arrive as data.
fn soft_error(api: Api, doc: &Value) -> Option<Verdict> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match api {
        Api::AlphaVantage => {
            // Alpha Vantage answers 200 to everything: a rate limit says
            // "Note" (older) or "Information"; a bad call "Error Message".
            if let Some(msg) = doc.get("Error Message") {
                return Some(Verdict::Failed(format!("Alpha Vantage: {}", text(msg))));
            }
            for key in ["Note", "Information"] {
                if let Some(msg) = doc.get(key) {
                    let msg = text(msg);
                    // The daily quota does not come back within a run:
                    // waiting minutes for it would only delay the failure.
                    if daily_quota(&msg) {
                        return Some(Verdict::Failed(format!(
                            "Alpha Vantage: the daily request quota is used up, asking again today will not help: {msg}"
                        )));
                    }
                    return Some(Verdict::Throttled(format!("Alpha Vantage: {msg}")));
                }
            }
            None
        }
        Api::Ckan | Api::OpenElectricity => match doc.get("success") {
            Some(Value::Bool(false)) => {
                let err = doc.get("error").map(text).unwrap_or_default();
                Some(Verdict::Failed(format!(
                    "{} reported an error: {err}",
                    api.name()
                )))
            }
            _ => None,
        },
        Api::OpenMeteo => match (doc.get("error"), doc.get("reason")) {
            (Some(Value::Bool(true)), reason) => Some(Verdict::Failed(format!(
                "Open-Meteo: {}",
                reason.map(text).unwrap_or_default()
            ))),
            _ => None,
        },
        Api::Json => None,
    }
}

/// The value at a dotted path (`result.records`).
pub fn at_path<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|k| !k.is_empty())
        .try_fold(doc, |node, key| match node {
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => node.get(key),
        })
}

/// The records at `node`: the objects of an array, or one object (an
/// answer that is a single record).
fn objects(node: &Value, what: &str) -> Result<Vec<Map<String, Value>>, String> {
    if let Value::Object(one) = node {
        return Ok(vec![one.clone()]);
    }
    let items = node
        .as_array()
        .ok_or_else(|| format!("{what} is neither an array nor an object"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(m) => Ok(m.clone()),
            other => Err(format!("{what}[{i}] is not an object: {other}")),
        })
        .collect()
}

/// The records of a body, in order.
pub fn records(source: &HttpSource, doc: &Value) -> Result<Vec<Map<String, Value>>, String> {
    let configured = |default: &str| -> Result<&Value, String> {
        let path = source.records.as_deref().unwrap_or(default);
        at_path(doc, path).ok_or_else(|| format!("the body has no {path:?}"))
    };
    match source.api {
        Api::Json => {
            let node = match source.records.as_deref() {
                Some(p) => at_path(doc, p).ok_or_else(|| format!("the body has no {p:?}"))?,
                None => doc,
            };
            objects(node, "the records")
        }
        Api::Ckan => {
            let mut rows = objects(configured("result.records")?, "result.records")?;
            // CKAN's own bookkeeping, not source data.
            for r in &mut rows {
                r.remove("_id");
                r.remove("_full_text");
            }
            Ok(rows)
        }
        Api::OpenMeteo => match doc {
            // Several locations at once: one object per location.
            Value::Array(locations) => {
                let mut out = Vec::new();
                for (i, loc) in locations.iter().enumerate() {
                    let mut rows = open_meteo(loc, &source.block)?;
                    for r in &mut rows {
                        r.insert("location_id".into(), Value::from(i));
                    }
                    out.extend(rows);
                }
                Ok(out)
            }
            one => open_meteo(one, &source.block),
        },
        Api::OpenElectricity => open_electricity(doc),
        Api::AlphaVantage => alpha_vantage(doc),
    }
}

/// `{"utc_offset_seconds": 0, "hourly": {"time": [...], "temperature_2m":
/// [...]}}` → one record per time, `time` given its offset (RFC 3339).
fn open_meteo(doc: &Value, block: &str) -> Result<Vec<Map<String, Value>>, String> {
    let arrays = doc
        .get(block)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("the body has no {block:?} block"))?;
    let times = arrays
        .get("time")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{block}.time is missing"))?;
    let offset = doc
        .get("utc_offset_seconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let sign = if offset < 0 { '-' } else { '+' };
    let suffix = format!(
        "{sign}{:02}:{:02}",
        offset.abs() / 3600,
        offset.abs() % 3600 / 60
    );
    for (name, values) in arrays {
        let n = values.as_array().map(Vec::len);
        if n != Some(times.len()) {
            return Err(format!(
                "{block}.{name} has {} values for {} times",
                n.map_or("no".to_string(), |n| n.to_string()),
                times.len()
            ));
        }
    }
    // The answer's location and zone, on every record.
    let mut answer = Map::new();
    for key in Api::OpenMeteo.answer_fields() {
        if let Some(v) = doc.get(*key).filter(|v| !v.is_object() && !v.is_array()) {
            answer.insert((*key).to_string(), v.clone());
        }
    }
    Ok((0..times.len())
        .map(|i| {
            let mut r = answer.clone();
            for (name, values) in arrays {
                let v = values[i].clone();
                let v = match (name.as_str(), v) {
                    // "2024-03-30T00:00" in the zone of the offset.
                    ("time", Value::String(t)) => {
                        let seconds = if t.len() == 16 { ":00" } else { "" };
                        Value::String(format!("{t}{seconds}{suffix}"))
                    }
                    (_, v) => v,
                };
                r.insert(name.clone(), v);
            }
            r
        })
        .collect())
}

/// `{"data": [{"network_code", "metric", "unit", "interval", "results":
/// [{"name", "columns": {...}, "data": [[time, value], ...]}]}]}` → one
/// record per point, with the series' labels and grouping columns.
fn open_electricity(doc: &Value) -> Result<Vec<Map<String, Value>>, String> {
    let series = doc
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the body has no \"data\" array")?;
    let mut out = Vec::new();
    for s in series {
        let mut labels = Map::new();
        for key in ["network_code", "metric", "unit", "interval"] {
            if let Some(v) = s.get(key) {
                labels.insert(key.into(), v.clone());
            }
        }
        let results = s
            .get("results")
            .and_then(Value::as_array)
            .ok_or("a data entry has no \"results\" array")?;
        for result in results {
            let mut base = labels.clone();
            if let Some(name) = result.get("name") {
                base.insert("name".into(), name.clone());
            }
            if let Some(Value::Object(cols)) = result.get("columns") {
                base.extend(cols.clone());
            }
            let points = result
                .get("data")
                .and_then(Value::as_array)
                .ok_or("a result has no \"data\" array")?;
            for p in points {
                let pair = p
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or_else(|| format!("a data point is not a [time, value] pair: {p}"))?;
                let mut r = base.clone();
                r.insert("time".into(), pair[0].clone());
                r.insert("value".into(), pair[1].clone());
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// `{"Meta Data": {"2. Symbol": "IBM"}, "Weekly Adjusted Time Series":
/// {"2024-05-03": {"1. open": "..."}}}` → one record per date, the field
/// names without their numbers (`adjusted_close`, `dividend_amount`); a
/// company overview (`{"Symbol": "IBM", "Name": ...}`) → one record.
fn alpha_vantage(doc: &Value) -> Result<Vec<Map<String, Value>>, String> {
    let obj = doc.as_object().ok_or("the body is not an object")?;
    let Some((_, series)) = obj
        .iter()
        .find(|(k, v)| k.contains("Time Series") && v.is_object())
    else {
        // A company overview (`function=OVERVIEW`): the body is the record.
        if obj.contains_key("Symbol") {
            return Ok(vec![obj.clone()]);
        }
        return Err(
            "the body has no \"... Time Series ...\" object (nor an overview's Symbol)".into(),
        );
    };
    let symbol = doc
        .get("Meta Data")
        .and_then(Value::as_object)
        .and_then(|m| m.iter().find(|(k, _)| k.ends_with("Symbol")))
        .map(|(_, v)| v.clone());
    let clean = |k: &str| {
        let k = k.split_once(". ").map_or(k, |(_, rest)| rest);
        k.trim().to_lowercase().replace([' ', '-'], "_")
    };
    let mut out = Vec::new();
    for (date, fields) in series.as_object().into_iter().flatten() {
        let mut r = Map::new();
        if let Some(s) = &symbol {
            r.insert("symbol".into(), s.clone());
        }
        r.insert("date".into(), Value::String(date.clone()));
        let fields = fields
            .as_object()
            .ok_or_else(|| format!("the entry for {date} is not an object"))?;
        for (k, v) in fields {
            r.insert(clean(k), v.clone());
        }
        out.push(r);
    }
    Ok(out)
}

/// A source of `api` with defaults, for tests.
#[cfg(test)]
pub mod tests_support {
    use crate::pipeline::{Api, HttpSource, Pagination};
    use std::time::Duration;

    /// An HTTP source of `api` with small defaults.
    pub fn source(api: Api) -> HttpSource {
        HttpSource {
            api,
            url: "http://127.0.0.1/".into(),
            params: Default::default(),
            headers: Default::default(),
            auth: None,
            records: None,
            block: "hourly".into(),
            pagination: Pagination::None,
            chunk_days: Some(1),
            pad_days: 0,
            for_each: Vec::new(),
            for_each_from: None,
            on_entry_error: crate::pipeline::EntryErrors::Fail,
            concurrency: 1,
            min_interval: None,
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_retry_after: Duration::from_secs(1),
            max_pages: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::source;
    use super::*;

    #[test]
    fn open_meteo_zips_the_arrays_and_keeps_the_offset() {
        let body = br#"{"utc_offset_seconds": 3600, "hourly": {"time": ["2024-03-31T00:00", "2024-03-31T01:00"], "temperature_2m": [5.5, null]}}"#;
        let doc: Value = serde_json::from_slice(body).expect("json");
        let rows = records(&source(Api::OpenMeteo), &doc).expect("records");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["time"], "2024-03-31T00:00:00+01:00");
        assert_eq!(rows[1]["temperature_2m"], Value::Null);
        let bad = br#"{"hourly": {"time": ["2024-03-31T00:00"], "temperature_2m": []}}"#;
        let doc: Value = serde_json::from_slice(bad).expect("json");
        assert!(records(&source(Api::OpenMeteo), &doc).is_err());
    }

    #[test]
    fn alpha_vantage_error_bodies_are_recognised() {
        let s = source(Api::AlphaVantage);
        let note = br#"{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute"}"#;
        assert!(matches!(inspect(&s, note), Ok(Verdict::Throttled(_))));
        let info = br#"{"Information": "rate limit"}"#;
        assert!(matches!(inspect(&s, info), Ok(Verdict::Throttled(_))));
        let old_note = br#"{"Note": "Our standard API call frequency is 5 calls per minute and 500 calls per day."}"#;
        assert!(matches!(inspect(&s, old_note), Ok(Verdict::Throttled(_))));
        // The daily quota used up: no waiting, the message says why.
        let quota = br#"{"Information": "Thank you for using Alpha Vantage! Our standard API rate limit is 25 requests per day."}"#;
        assert!(
            matches!(inspect(&s, quota), Ok(Verdict::Failed(m)) if m.contains("daily request quota") && m.contains("25 requests per day"))
        );
        let bad = br#"{"Error Message": "Invalid API call."}"#;
        assert!(
            matches!(inspect(&s, bad), Ok(Verdict::Failed(m)) if m.contains("Invalid API call"))
        );
        let data = br#"{"Meta Data": {"2. Symbol": "IBM"}, "Weekly Adjusted Time Series": {"2024-05-03": {"1. open": "1.0", "5. adjusted close": "2.0"}}}"#;
        let doc: Value = serde_json::from_slice(data).expect("json");
        let rows = records(&s, &doc).expect("records");
        assert_eq!(rows[0]["symbol"], "IBM");
        assert_eq!(rows[0]["adjusted_close"], "2.0");
        assert_eq!(rows[0]["date"], "2024-05-03");
        let overview = br#"{"Symbol": "IBM", "Name": "International Business Machines", "Sector": "TECHNOLOGY"}"#;
        let doc: Value = serde_json::from_slice(overview).expect("json");
        let rows = records(&s, &doc).expect("an overview is one record");
        assert_eq!(
            (rows.len(), &rows[0]["Name"]),
            (1, &Value::from("International Business Machines"))
        );
        assert!(records(&s, &serde_json::json!({"Other": 1})).is_err());
    }

    #[test]
    fn truncated_bodies_are_errors_and_next_links_are_found() {
        let mut s = source(Api::Ckan);
        assert!(inspect(&s, br#"{"success": true, "result": {"reco"#).is_err());
        s.pagination = Pagination::Next {
            path: "result._links.next".into(),
        };
        let body = br#"{"success": true, "result": {"records": [{"_id": 1, "ND": 5}], "_links": {"next": "/api?offset=1"}}}"#;
        assert_eq!(
            inspect(&s, body),
            Ok(Verdict::Page {
                records: 1,
                next: Some("/api?offset=1".into())
            })
        );
        let failed = br#"{"success": false, "error": {"message": "Not found"}}"#;
        assert!(matches!(inspect(&s, failed), Ok(Verdict::Failed(m)) if m.contains("Not found")));
    }
}
