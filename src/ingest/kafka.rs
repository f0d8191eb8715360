//! Kafka sources: a topic's records delivered into the table exactly once.
//!
//! - **Offsets live in the table.** Every commit of a Kafka job records,
//!   in its snapshot summary ([`KAFKA_OFFSETS_KEY`]), the next offset of
//!   each partition read, in the same snapshot as the rows those records
//!   became (as Iceberg's Kafka Connect sink does). No consumer group is
//!   used: a run starts from the table's offsets, so a run that dies before
//!   its commit is read again by the next one, and one that committed is
//!   never read twice.
//! - **Bounded.** A run takes each partition's end offset (the last stable
//!   offset) when it starts, reads up to it, commits and exits; records
//!   produced meanwhile are the next run's.
//! - **One writer at a time.** The commit requires the table's offsets to
//!   be those the run started from ([`StateGuard`]): a concurrent run that
//!   committed first makes this one fail, committing nothing.
//! - **Bounded memory.** Records stream to one NDJSON file per partition
//!   in a temporary folder and then take the file path (contract, rejects,
//!   `_hash`, expectations, reports). A reject names its record as
//!   `kafka://host:port/topic/<partition>` and its offset as the line.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use super::Unit;
use super::files::SourceFile;
use crate::error::{Error, Result};
use crate::pipeline::KafkaSource;
pub use crate::table::props::KAFKA_OFFSETS_KEY;
use crate::table::snapshot::StateGuard;

/// Bytes asked for per fetch.
const FETCH_BYTES: i32 = 4 * 1024 * 1024;
/// How long the broker may wait to fill a fetch.
const FETCH_WAIT_MS: i32 = 500;
/// Empty fetches in a row below the end offset before a partition's read
/// stops there (only control records, e.g. transaction markers, remain).
const EMPTY_FETCHES: u32 = 3;
/// How long requests to the brokers are retried before the run fails.
const BROKER_DEADLINE: Duration = Duration::from_secs(30);
/// Records between progress log lines.
const PROGRESS_RECORDS: u64 = 1_000_000;

/// Each topic's partitions and the next offset to read in each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offsets(BTreeMap<String, BTreeMap<i32, i64>>);

impl Offsets {
    /// The offsets recorded in a table's summary value (none: a table no
    /// Kafka run committed to).
    ///
    /// # Errors
    /// A value that is not `{"topic": {"partition": offset}}`.
    pub fn parse(value: Option<&str>) -> Result<Self> {
        let Some(text) = value else {
            return Ok(Self::default());
        };
        let bad = |why: String| {
            Error::Storage(format!(
                "the table's {KAFKA_OFFSETS_KEY} is not {{\"topic\": {{\"partition\": offset}}}}: {why}"
            ))
        };
        let raw: BTreeMap<String, BTreeMap<String, i64>> =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut out = BTreeMap::new();
        for (topic, partitions) in raw {
            let mut parsed = BTreeMap::new();
            for (p, offset) in partitions {
                let p: i32 = p
                    .parse()
                    .map_err(|_| bad(format!("partition {p:?} of {topic}")))?;
                if offset < 0 {
                    return Err(bad(format!("offset {offset} of {topic}/{p}")));
                }
                parsed.insert(p, offset);
            }
            out.insert(topic, parsed);
        }
        Ok(Self(out))
    }

    /// The summary value: compact JSON, keys in order (the same offsets
    /// always give the same text).
    pub fn to_json(&self) -> String {
        let raw: BTreeMap<&str, BTreeMap<String, i64>> = self
            .0
            .iter()
            .map(|(t, ps)| {
                (
                    t.as_str(),
                    ps.iter().map(|(p, o)| (p.to_string(), *o)).collect(),
                )
            })
            .collect();
        serde_json::to_string(&raw).unwrap_or_default()
    }

    /// The next offset recorded for `topic`'s `partition`.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(topic)?.get(&partition).copied()
    }

    /// Records `next` as `topic`'s `partition`'s next offset.
    pub fn set(&mut self, topic: &str, partition: i32, next: i64) {
        self.0
            .entry(topic.to_string())
            .or_default()
            .insert(partition, next);
    }
}

/// Where a partition's read starts: after the table's offset, or at the
/// earliest offset the broker still holds for a partition never read.
/// Records between the table's offset and the earliest one were deleted
/// (retention) before floe read them, and a table's offset past the end
/// means the topic was recreated: both stop the run rather than skip or
/// re-deliver records.
///
/// # Errors
/// The two cases above, naming the partition and offsets.
pub fn start_offset(
    recorded: Option<i64>,
    (earliest, end): (i64, i64),
    partition: &str,
) -> Result<i64> {
    match recorded {
        None => Ok(earliest),
        Some(next) if next < earliest => Err(Error::Source(format!(
            "{partition}: the table has read up to offset {next}, but the broker's earliest is {earliest}: \
             records {next}..{earliest} were deleted (retention) before floe read them; nothing was committed"
        ))),
        Some(next) if next > end => Err(Error::Source(format!(
            "{partition}: the table has read up to offset {next}, past the partition's end {end} (was the topic \
             recreated?); nothing was committed"
        ))),
        Some(next) => Ok(next),
    }
}

/// A landed partition's line numbers as offsets: each run of consecutive
/// offsets is one entry (its first line and offset), so the map stays
/// small whatever the record count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LineOffsets {
    runs: Vec<(u64, i64)>,
}

impl LineOffsets {
    /// Notes that `line` (1-based) holds the record at `offset`.
    fn push(&mut self, line: u64, offset: i64) {
        if self.offset_of(line) != Some(offset) {
            self.runs.push((line, offset));
        }
    }

    /// The offset of the record at `line`.
    fn offset_of(&self, line: u64) -> Option<i64> {
        let i = self.runs.partition_point(|(l, _)| *l <= line);
        let (first, offset) = *self.runs.get(i.checked_sub(1)?)?;
        Some(offset + i64::try_from(line - first).ok()?)
    }
}

/// Where a landed unit's records came from, when not the file they were
/// landed in: the source's name (its rows' `_source`, its rejects' source
/// and errors) and, for a Kafka partition, its offsets.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `kafka://host:port/topic/<partition>`, or a database source.
    pub uri: String,
    lines: LineOffsets,
}

impl Origin {
    /// A source whose records are numbered by line (a database read).
    pub fn named(uri: String) -> Self {
        Self {
            uri,
            lines: LineOffsets::default(),
        }
    }

    /// The offset of a landed line (a reject's `line`).
    pub fn offset(&self, line: u64) -> u64 {
        self.lines
            .offset_of(line)
            .and_then(|o| u64::try_from(o).ok())
            .unwrap_or(line)
    }
}

/// What a read left: a unit per partition that got records, the folder
/// that holds them (removed when dropped), and the offsets to commit.
pub struct Extract {
    /// One NDJSON unit per partition with records.
    pub units: Vec<Unit>,
    folder: tempfile::TempDir,
    /// Records read.
    pub records: u64,
    /// The offsets the run started from (the table's).
    pub started: Offsets,
    /// The offsets after what was read (to commit).
    pub next: Offsets,
}

impl std::fmt::Debug for Extract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extract")
            .field("records", &self.records)
            .field("folder", &self.folder.path())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Extract {
    /// Whether the run has anything to commit (records, or offsets moved
    /// past records that were control markers).
    pub fn moved(&self) -> bool {
        self.next != self.started
    }

    /// The commit's summary property and guard: the new offsets, landed
    /// only if the table still holds `recorded` (the text it was read from).
    pub fn commit_state(&self, recorded: Option<String>) -> (Vec<(String, String)>, StateGuard) {
        (
            vec![(KAFKA_OFFSETS_KEY.to_string(), self.next.to_json())],
            StateGuard {
                key: KAFKA_OFFSETS_KEY.to_string(),
                expected: recorded,
            },
        )
    }
}

fn broker_error(src: &KafkaSource, what: &str, e: rskafka::client::error::Error) -> Error {
    Error::Source(format!("{}: {what}: {e}", src.uri())).caused_by(e)
}

/// Reads every partition of `src`'s topic from the offsets in `recorded`
/// (the table's summary value) up to its end offset at the start of the
/// read, into local NDJSON files (see the module docs).
///
/// # Errors
/// Brokers that cannot be reached, a missing topic, offsets the broker no
/// longer holds, a file that cannot be written.
pub async fn extract(src: &KafkaSource, recorded: Option<&str>) -> Result<Extract> {
    let started = Offsets::parse(recorded)?;
    let client = ClientBuilder::new(src.brokers.clone())
        .client_id("floe")
        .backoff_config(rskafka::BackoffConfig {
            deadline: Some(BROKER_DEADLINE),
            ..Default::default()
        })
        .build()
        .await
        .map_err(|e| broker_error(src, "cannot connect", e))?;
    let partitions = partitions(&client, src).await?;
    let folder = tempfile::Builder::new()
        .prefix("floe-kafka-")
        .tempdir()
        .map_err(|e| Error::Source(format!("cannot make a temporary folder: {e}")).caused_by(e))?;
    let mut next = started.clone();
    let mut units = Vec::new();
    let mut records = 0;
    for p in partitions {
        let uri = format!("{}/{p}", src.uri());
        let pc = client
            .partition_client(src.topic.clone(), p, UnknownTopicHandling::Error)
            .await
            .map_err(|e| broker_error(src, &format!("partition {p}"), e))?;
        let earliest = offset(&pc, OffsetAt::Earliest, src).await?;
        let end = offset(&pc, OffsetAt::Latest, src).await?;
        let from = start_offset(started.get(&src.topic, p), (earliest, end), &uri)?;
        if from >= end {
            next.set(&src.topic, p, from);
            continue;
        }
        let path = folder.path().join(format!("partition-{p}.ndjson"));
        let landed = land(&pc, src, (from, end), &path).await?;
        tracing::info!(source = %uri, from, end, records = landed.records, "read");
        next.set(&src.topic, p, landed.next);
        records += landed.records;
        if landed.records > 0 {
            units.push(Unit {
                file: SourceFile::Local(path),
                keep: i32::MIN..=i32::MAX,
                vars: None,
                origin: Some(Arc::new(Origin {
                    uri,
                    lines: landed.lines,
                })),
            });
        }
    }
    Ok(Extract {
        units,
        folder,
        records,
        started,
        next,
    })
}

/// The topic's partitions, in order.
async fn partitions(client: &Client, src: &KafkaSource) -> Result<Vec<i32>> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| broker_error(src, "cannot list the topics", e))?;
    let topic = topics
        .into_iter()
        .find(|t| t.name == src.topic)
        .ok_or_else(|| {
            Error::Source(format!(
                "{}: the topic {} does not exist on the brokers",
                src.uri(),
                src.topic
            ))
        })?;
    Ok(topic.partitions.into_iter().collect())
}

async fn offset(pc: &PartitionClient, at: OffsetAt, src: &KafkaSource) -> Result<i64> {
    pc.get_offset(at)
        .await
        .map_err(|e| broker_error(src, &format!("partition {}: offsets", pc.partition()), e))
}

/// What one partition's read landed.
struct Landed {
    records: u64,
    next: i64,
    lines: LineOffsets,
}

/// Streams the records `from..end` of one partition to `path`, one line
/// each: the value, its line breaks made spaces (a JSON object holds none
/// outside its strings), and `null` for a record without a value (a
/// tombstone) or with only white space, so that each is a reject rather
/// than a skipped blank line.
async fn land(
    pc: &PartitionClient,
    src: &KafkaSource,
    (from, end): (i64, i64),
    path: &std::path::Path,
) -> Result<Landed> {
    let io = |e: std::io::Error| {
        Error::Source(format!("cannot write {}: {e}", path.display())).caused_by(e)
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut landed = Landed {
        records: 0,
        next: from,
        lines: LineOffsets::default(),
    };
    let mut empty = 0;
    while landed.next < end && empty < EMPTY_FETCHES {
        let (batch, _high_watermark) = pc
            .fetch_records(landed.next, 1..FETCH_BYTES, FETCH_WAIT_MS)
            .await
            .map_err(|e| {
                broker_error(
                    src,
                    &format!("partition {}: fetch at {}", pc.partition(), landed.next),
                    e,
                )
            })?;
        let mut got = false;
        for r in batch {
            if r.offset < landed.next || r.offset >= end {
                continue;
            }
            got = true;
            let value = r.record.value.unwrap_or_default();
            if value.iter().all(u8::is_ascii_whitespace) {
                out.write_all(b"null").map_err(io)?;
            } else {
                let flat: Vec<u8> = value
                    .into_iter()
                    .map(|b| if b == b'\n' { b' ' } else { b })
                    .collect();
                out.write_all(&flat).map_err(io)?;
            }
            out.write_all(b"\n").map_err(io)?;
            landed.records += 1;
            landed.lines.push(landed.records, r.offset);
            landed.next = r.offset + 1;
            if landed.records.is_multiple_of(PROGRESS_RECORDS) {
                tracing::info!(source = %src.uri(), partition = pc.partition(), records = landed.records, "reading");
            }
        }
        empty = if got { 0 } else { empty + 1 };
    }
    out.flush().map_err(io)?;
    Ok(landed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_in_a_stable_form() -> Result<()> {
        let mut o = Offsets::default();
        o.set("readings", 1, 7);
        o.set("readings", 0, 12);
        o.set("alerts", 10, 0);
        let text = o.to_json();
        assert_eq!(text, r#"{"alerts":{"10":0},"readings":{"0":12,"1":7}}"#);
        assert_eq!(Offsets::parse(Some(&text))?, o);
        assert_eq!(Offsets::parse(None)?, Offsets::default());
        Ok(())
    }

    #[test]
    fn bad_offsets_are_an_error_not_a_restart() {
        for bad in [
            "",
            "[]",
            r#"{"t": {"x": 1}}"#,
            r#"{"t": {"0": -1}}"#,
            r#"{"t": {"0": "1"}}"#,
        ] {
            assert!(Offsets::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_run_resumes_after_the_tables_offsets() -> Result<()> {
        let p = "kafka://b:9092/t/0";
        // Never read: from the earliest the broker holds.
        assert_eq!(start_offset(None, (5, 9), p)?, 5);
        // Read before: exactly where the last commit stopped.
        assert_eq!(start_offset(Some(7), (5, 9), p)?, 7);
        assert_eq!(start_offset(Some(9), (5, 9), p)?, 9);
        // Records deleted before they were read, or a recreated topic:
        // never skipped or read twice silently.
        assert!(start_offset(Some(3), (5, 9), p).is_err());
        assert!(start_offset(Some(10), (5, 9), p).is_err());
        Ok(())
    }

    #[test]
    fn an_unchanged_read_moves_nothing() -> Result<()> {
        let started = Offsets::parse(Some(r#"{"t":{"0":3}}"#))?;
        let extract = Extract {
            units: Vec::new(),
            folder: tempfile::tempdir().map_err(|e| Error::Source(e.to_string()))?,
            records: 0,
            started: started.clone(),
            next: started,
        };
        assert!(!extract.moved());
        let (props, guard) = extract.commit_state(Some(r#"{"t":{"0":3}}"#.into()));
        assert_eq!(props[0].0, KAFKA_OFFSETS_KEY);
        assert_eq!(guard.expected.as_deref(), Some(r#"{"t":{"0":3}}"#));
        Ok(())
    }

    #[test]
    fn lines_map_to_offsets_across_gaps() {
        let mut l = LineOffsets::default();
        for (line, offset) in [(1, 10), (2, 11), (3, 12), (4, 20), (5, 21), (6, 40)] {
            l.push(line, offset);
        }
        assert_eq!(l.runs.len(), 3);
        let got: Vec<Option<i64>> = (1..=6).map(|n| l.offset_of(n)).collect();
        assert_eq!(
            got,
            [Some(10), Some(11), Some(12), Some(20), Some(21), Some(40)]
        );
        assert_eq!(l.offset_of(0), None);
    }
}
