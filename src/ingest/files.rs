//! Which files a job reads for a window: a per-day template (`{date}` is
//! each day of the window as `YYYY-MM-DD`, plus the neighbouring days' files
//! when present), a glob, or one path; relative paths resolve against the
//! pipeline file's folder.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// The files to read, in order, and their URIs for `_source`.
pub fn discover(template: &str, base_dir: &Path, days: &[NaiveDate]) -> Result<Vec<PathBuf>> {
    if template.contains("://") {
        return Err(Error::Config(format!(
            "source path {template:?}: floe reads local files in this version; s3:// and http(s):// sources are not supported yet"
        )));
    }
    let resolve = |p: String| -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            base_dir.join(path)
        }
    };
    if template.contains("{date}") {
        let mut files = Vec::new();
        let mut missing = Vec::new();
        let path_of = |day: NaiveDate| {
            resolve(template.replace("{date}", &day.format("%Y-%m-%d").to_string()))
        };
        // A file per *local* date holds hours of the neighbouring UTC days
        // (Europe/London in summer starts its day at 23:00 UTC). The files of
        // the day before and after the window, when they exist, complete the
        // window's first and last UTC day; rows outside the window are skipped.
        if let Some(before) = days.first().and_then(|d| d.pred_opt()) {
            files.extend(Some(path_of(before)).filter(|p| p.is_file()));
        }
        for day in days {
            let path = path_of(*day);
            if path.is_file() {
                files.push(path);
            } else {
                missing.push(path.display().to_string());
            }
        }
        if let Some(after) = days.last().and_then(|d| d.succ_opt()) {
            files.extend(Some(path_of(after)).filter(|p| p.is_file()));
        }
        if !missing.is_empty() {
            // Overwriting a day with nothing would delete it: refuse instead.
            return Err(Error::Source(format!(
                "missing source files for {} day(s) of the window: {}",
                missing.len(),
                missing.join(", ")
            )));
        }
        return Ok(files);
    }
    let pattern = resolve(template.to_string());
    let pattern_text = pattern.to_string_lossy().to_string();
    let mut files: Vec<PathBuf> = glob::glob(&pattern_text)
        .map_err(|e| Error::Config(format!("source path {template:?} is not a valid glob: {e}")))?
        .filter_map(|entry| entry.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Source(format!(
            "no source files match {pattern_text}"
        )));
    }
    Ok(files)
}

/// The `_source` URI of a local file.
pub fn uri_of(path: &Path) -> String {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", abs.display())
}
