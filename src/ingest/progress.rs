//! One-line progress displays on a terminal (stderr): a file job's files and
//! rows read, an API job's requests and responses. Silent when stderr is not
//! a terminal (cron, CI), where the log lines and the run report say the same.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often.
const EVERY: Duration = Duration::from_millis(250);

/// The redrawn line itself.
#[derive(Debug)]
struct Line {
    last: Option<Instant>,
    enabled: bool,
}

impl Line {
    fn new() -> Self {
        Self {
            last: None,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Redraws with `text` unless it was drawn less than [`EVERY`] ago
    /// (`force`: draw anyway).
    fn draw(&mut self, force: bool, text: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if !force && self.last.is_some_and(|l| now - l < EVERY) {
            return;
        }
        self.last = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.enabled {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// Progress of one job's read.
#[derive(Debug)]
pub struct Progress {
    job: String,
    files: usize,
    file: usize,
    rows: u64,
    /// Bytes of the files read so far, and of all of them when every
    /// size is known up front (local files).
    bytes_done: u64,
    bytes_total: Option<u64>,
    /// Seconds from the start to when the last file was read to its end.
    done_at: f64,
    started: Instant,
    line: Line,
}

impl Progress {
    /// Progress over `files` files of `bytes_total` bytes in all (when
    /// known); drawn only on a terminal.
    pub fn new(job: &str, files: usize, bytes_total: Option<u64>) -> Self {
        Self {
            job: job.to_string(),
            files,
            file: 0,
            rows: 0,
            bytes_done: 0,
            bytes_total,
            done_at: 0.0,
            started: Instant::now(),
            line: Line::new(),
        }
    }

    /// A new file starts.
    pub fn next_file(&mut self) {
        self.file += 1;
        self.draw(true);
    }

    /// A file of `bytes` bytes was read to its end.
    pub fn file_done(&mut self, bytes: u64) {
        self.bytes_done += bytes;
        self.done_at = self.started.elapsed().as_secs_f64();
        self.draw(true);
    }

    /// `n` more records read (a columnar batch).
    pub fn rows(&mut self, n: u64) {
        let before = self.rows / 16_384;
        self.rows += n;
        if self.rows / 16_384 != before {
            self.draw(false);
        }
    }

    fn draw(&mut self, force: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let text = status(
            &self.job,
            (self.file, self.files, self.rows),
            (secs, self.done_at),
            (self.bytes_done, self.bytes_total),
        );
        self.line.draw(force, || text);
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        self.line.clear();
    }
}

/// The progress line: files, rows and their rate, and with the total size
/// known, bytes and the time left: the bytes left at the rate the files
/// read by `done_at` went, less the time since.
fn status(
    job: &str,
    (file, files, rows): (usize, usize, u64),
    (secs, done_at): (f64, f64),
    (done, total): (u64, Option<u64>),
) -> String {
    let secs = secs.max(1e-3);
    let mut text = format!(
        "{job}: file {file}/{files} · {rows} rows · {:.0} rows/s",
        rows as f64 / secs
    );
    if let Some(total) = total.filter(|t| *t > 0) {
        let mb = |b: u64| b as f64 / 1e6;
        text.push_str(&format!(" · {:.1}/{:.1} MB", mb(done), mb(total)));
        if done > 0 && done < total {
            let left = done_at * (total - done) as f64 / done as f64 - (secs - done_at);
            text.push_str(&format!(" · ETA {}", short_duration(left)));
        }
    }
    text
}

/// `95.2` seconds as `1m35s`.
fn short_duration(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// Progress of an API job's requests, drawn like [`Progress`].
#[derive(Debug)]
pub struct Fetching {
    job: String,
    series: usize,
    done: usize,
    pages: u64,
    bytes: u64,
    line: Line,
}

impl Fetching {
    /// Progress over `series` request series; drawn only on a terminal.
    pub fn new(job: &str, series: usize) -> Self {
        Self {
            job: job.to_string(),
            series,
            done: 0,
            pages: 0,
            bytes: 0,
            line: Line::new(),
        }
    }

    /// A body of `bytes` arrived.
    pub fn page(&mut self, bytes: u64) {
        self.pages += 1;
        self.bytes += bytes;
        self.draw(false);
    }

    /// A request series is complete.
    pub fn series_done(&mut self) {
        self.done += 1;
        self.draw(true);
    }

    fn draw(&mut self, force: bool) {
        let (job, done, series, pages) = (&self.job, self.done, self.series, self.pages);
        let mb = self.bytes as f64 / 1e6;
        self.line.draw(force, || {
            format!("{job}: requests {done}/{series} · {pages} responses · {mb:.1} MB")
        });
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_rows_and_says_the_time_left_when_the_size_is_known() {
        assert_eq!(
            status("demand", (1, 4, 20_000), (2.0, 0.0), (0, None)),
            "demand: file 1/4 · 20000 rows · 10000 rows/s"
        );
        // A quarter of 40 MB read in 10 s: 30 s left then, 25 s five seconds on.
        let at = |secs| {
            status(
                "demand",
                (2, 4, 1_000_000),
                (secs, 10.0),
                (10_000_000, Some(40_000_000)),
            )
        };
        assert_eq!(
            at(10.0),
            "demand: file 2/4 · 1000000 rows · 100000 rows/s · 10.0/40.0 MB · ETA 30s"
        );
        assert!(at(15.0).ends_with("ETA 25s"), "{}", at(15.0));
        // Slower than the estimate: never a negative time.
        assert!(at(50.0).ends_with("ETA 0s"), "{}", at(50.0));
        assert_eq!(short_duration(95.2), "1m35s");
        assert_eq!(short_duration(7300.0), "2h01m");
    }

    #[test]
    fn batches_count_like_rows() {
        let mut p = Progress::new("j", 1, None);
        p.rows(100_000);
        p.rows(1);
        assert_eq!(p.rows, 100_001);
    }
}
