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
    started: Instant,
    line: Line,
}

impl Progress {
    /// Progress over `files` files; drawn only on a terminal.
    pub fn new(job: &str, files: usize) -> Self {
        Self {
            job: job.to_string(),
            files,
            file: 0,
            rows: 0,
            started: Instant::now(),
            line: Line::new(),
        }
    }

    /// A new file starts.
    pub fn next_file(&mut self) {
        self.file += 1;
        self.draw(true);
    }

    /// One more record read.
    pub fn row(&mut self) {
        self.rows += 1;
        if self.rows.is_multiple_of(16_384) {
            self.draw(false);
        }
    }

    fn draw(&mut self, force: bool) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let (job, file, files, rows) = (&self.job, self.file, self.files, self.rows);
        self.line.draw(force, || {
            format!(
                "{job}: file {file}/{files} · {rows} rows · {:.0} rows/s",
                rows as f64 / secs
            )
        });
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        self.line.clear();
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
