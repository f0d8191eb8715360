//! Parallel writing: Parquet encoding is most of a write's work, so rows
//! go to one [`DayWriters`] set per core (a lane), each on its own task.
//! A day always goes to the same lane, so every file still holds one day
//! and a day's files come from one writer set; an unpartitioned table's
//! batches change lanes every [`ROWS_PER_TURN`] rows (so a small table is
//! one file, a large one is encoded on every core).

use std::future::Future;

use arrow_array::RecordBatch;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::writer::{DayWriters, split_by_day};
use crate::error::{Error, Result};

/// Most lanes (one per core up to this).
const MAX_LANES: usize = 4;
/// Batches queued per lane.
const LANE_DEPTH: usize = 4;
/// Rows an unpartitioned table's lane takes before the next one's turn.
const ROWS_PER_TURN: usize = 1 << 20;

/// How many lanes this machine gets.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_LANES))
}

/// What a lane writes with: one table format's per-day file writers.
pub trait LaneWriter: Send + 'static {
    /// What a closed file is described by (a data file, an `add` action).
    type File: Send + 'static;
    /// Writes a batch's rows into their days' files.
    fn write(&mut self, batch: RecordBatch) -> impl Future<Output = Result<()>> + Send;
    /// Closes every open file and returns all the files written.
    fn close(self) -> impl Future<Output = Result<Vec<Self::File>>> + Send;
}

impl LaneWriter for DayWriters {
    type File = iceberg::spec::DataFile;

    fn write(&mut self, batch: RecordBatch) -> impl Future<Output = Result<()>> + Send {
        DayWriters::write(self, batch)
    }

    fn close(self) -> impl Future<Output = Result<Vec<Self::File>>> + Send {
        DayWriters::close(self)
    }
}

/// Writer lanes fed with batches; closing returns every file written.
pub struct Lanes<W: LaneWriter> {
    tx: Vec<mpsc::Sender<RecordBatch>>,
    tasks: Vec<JoinHandle<Result<Vec<W::File>>>>,
    /// Days route by this column; none: round-robin.
    time_column: Option<String>,
    /// Rows sent (unpartitioned tables pick their lane by it).
    rows: usize,
    stopped: bool,
}

impl<W: LaneWriter> Lanes<W> {
    /// Starts `count()` lanes, lane `i` writing with `make(i, lanes)` (which
    /// should name its files apart and share the memory budget, see
    /// [`DayWriters::sharing`]).
    ///
    /// # Errors
    /// When a writer set cannot be built.
    pub fn start(
        time_column: Option<&str>,
        make: impl Fn(usize, usize) -> Result<W>,
    ) -> Result<Self> {
        let lanes = count();
        let mut tx = Vec::with_capacity(lanes);
        let mut tasks = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let mut writers = make(lane, lanes)?;
            let (sender, mut rx) = mpsc::channel::<RecordBatch>(LANE_DEPTH);
            tx.push(sender);
            tasks.push(tokio::spawn(async move {
                while let Some(batch) = rx.recv().await {
                    // On an error, whatever was written stays unreferenced
                    // until orphan removal; the write fails.
                    writers.write(batch).await?;
                }
                writers.close().await
            }));
        }
        Ok(Self {
            tx,
            tasks,
            time_column: time_column.map(str::to_string),
            rows: 0,
            stopped: false,
        })
    }

    /// Queues a batch; false once a lane has stopped on an error (the error
    /// comes from [`Self::close`]).
    ///
    /// # Errors
    /// When the batch has no usable time column (null or missing).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<bool> {
        if self.stopped {
            return Ok(false);
        }
        let lanes = self.tx.len();
        let parts = match &self.time_column {
            Some(column) => split_by_day(&batch, column)?
                .into_iter()
                .map(|(day, part)| (day.rem_euclid(lanes as i32) as usize, part))
                .collect(),
            None => {
                let lane = (self.rows / ROWS_PER_TURN) % lanes;
                self.rows += batch.num_rows();
                vec![(lane, batch)]
            }
        };
        for (lane, part) in parts {
            if self.tx[lane].send(part).await.is_err() {
                self.stopped = true;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Flushes every lane. Returns the files written, and the first error
    /// (the files are returned even then, for the caller to delete).
    pub async fn close(self) -> (Vec<W::File>, Option<Error>) {
        drop(self.tx);
        let mut files = Vec::new();
        let mut error = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(f)) => files.extend(f),
                Ok(Err(e)) => {
                    error.get_or_insert(e);
                }
                Err(e) => {
                    error.get_or_insert(
                        Error::Storage(format!("a writer task failed: {e}")).caused_by(e),
                    );
                }
            }
        }
        (files, error)
    }
}
