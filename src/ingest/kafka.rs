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

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use super::Unit;
use super::avro;
use super::files::SourceFile;
use crate::error::{Error, Result};
use crate::pipeline::{AvroSchemaSource, KafkaRecords, KafkaSource};
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
    /// Records that could not be landed as text (Avro that does not
    /// decode), by line: their bytes and why.
    unreadable: BTreeMap<u64, (Vec<u8>, String)>,
}

impl Origin {
    /// A source whose records are numbered by line (a database read).
    pub fn named(uri: String) -> Self {
        Self {
            uri,
            lines: LineOffsets::default(),
            unreadable: BTreeMap::new(),
        }
    }

    /// Why the record landed at `line` could not be read, and its bytes,
    /// when landing it already failed.
    pub fn unreadable(&self, line: u64) -> Option<&(Vec<u8>, String)> {
        self.unreadable.get(&line)
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
/// read, into local NDJSON files (see the module docs). With `max_records`,
/// each partition reads at most its share of it (the cap over the
/// partition count, rounded up), so a backlog is taken in bounded runs and
/// no partition waits for another's.
///
/// # Errors
/// Brokers that cannot be reached, a missing topic, offsets the broker no
/// longer holds, a file that cannot be written.
pub async fn extract(
    src: &KafkaSource,
    base_dir: &std::path::Path,
    recorded: Option<&str>,
    max_records: Option<u64>,
) -> Result<Extract> {
    let started = Offsets::parse(recorded)?;
    let mut avro = match &src.records {
        KafkaRecords::Avro(from) => Some(AvroSchemas::open(from, base_dir)?),
        _ => None,
    };
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
    let share = max_records.map(|cap| {
        let n = u64::try_from(partitions.len().max(1)).unwrap_or(1);
        cap.div_ceil(n).max(1)
    });
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
        let landed = land(&pc, src, (from, end, share), &path, avro.as_mut()).await?;
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
                    unreadable: landed.unreadable,
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
    unreadable: BTreeMap<u64, (Vec<u8>, String)>,
}

/// The Avro schemas a run decodes with: a file's, or a registry's by id
/// (each fetched once per run).
struct AvroSchemas {
    file: Option<avro::Schema>,
    registry: Option<Registry>,
}

struct Registry {
    url: String,
    http: reqwest::Client,
    /// Schemas by id; an id the registry does not hold is an error kept
    /// for each record that names it.
    known: HashMap<u32, std::result::Result<Arc<avro::Schema>, String>>,
}

/// How long a schema registry request may take.
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);

impl AvroSchemas {
    fn open(from: &AvroSchemaSource, base_dir: &std::path::Path) -> Result<Self> {
        Ok(match from {
            AvroSchemaSource::File(file) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Config(format!(
                        "key `source.schema`: cannot read {}: {e}",
                        path.display()
                    ))
                    .caused_by(e)
                })?;
                let schema = avro::Schema::parse(&text).map_err(|e| {
                    Error::Config(format!(
                        "key `source.schema`: {} is not an Avro schema: {e}",
                        path.display()
                    ))
                })?;
                Self {
                    file: Some(schema),
                    registry: None,
                }
            }
            AvroSchemaSource::Registry(url) => {
                let http = reqwest::Client::builder()
                    .timeout(REGISTRY_TIMEOUT)
                    .build()
                    .map_err(|e| {
                        Error::Source(format!("cannot make an HTTP client: {e}")).caused_by(e)
                    })?;
                Self {
                    file: None,
                    registry: Some(Registry {
                        url: url.clone(),
                        http,
                        known: HashMap::new(),
                    }),
                }
            }
        })
    }

    /// One record's JSON value, or why it does not decode (a reject). A
    /// registry that cannot be asked fails the run instead: its records
    /// are not bad.
    async fn decode(
        &mut self,
        bytes: &[u8],
        src: &KafkaSource,
    ) -> Result<std::result::Result<serde_json::Value, String>> {
        if let Some(schema) = &self.file {
            return Ok(schema.decode(bytes));
        }
        let Some(registry) = &mut self.registry else {
            return Ok(Err("no Avro schema".into()));
        };
        let Some((id, datum)) = confluent_frame(bytes) else {
            return Ok(Err(
                "not in the schema registry's framing (a zero byte and a 4-byte schema id first)"
                    .into(),
            ));
        };
        let schema = match registry.known.get(&id) {
            Some(known) => known.clone(),
            None => {
                let fetched = registry.fetch(id, src).await?;
                registry.known.insert(id, fetched.clone());
                fetched
            }
        };
        Ok(schema.and_then(|s| s.decode(datum).map_err(|e| format!("schema id {id}: {e}"))))
    }
}

impl Registry {
    /// `GET /schemas/ids/{id}`: the schema, or (404) why every record
    /// naming the id is a reject.
    async fn fetch(
        &self,
        id: u32,
        src: &KafkaSource,
    ) -> Result<std::result::Result<Arc<avro::Schema>, String>> {
        let url = format!("{}/schemas/ids/{id}", self.url);
        let failed = |what: String| {
            Error::Source(format!(
                "{}: schema registry {}: {what}; nothing was committed",
                src.uri(),
                self.url
            ))
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| failed(format!("cannot fetch schema id {id}: {e}")).caused_by(e))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(Err(format!("schema id {id} is not in the registry")));
        }
        if !response.status().is_success() {
            return Err(failed(format!(
                "schema id {id}: HTTP {}",
                response.status()
            )));
        }
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| failed(format!("schema id {id}: not JSON: {e}")).caused_by(e))?;
        let kind = body
            .get("schemaType")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("AVRO");
        if kind != "AVRO" {
            return Ok(Err(format!(
                "schema id {id} is a {kind} schema; floe reads Avro"
            )));
        }
        let text = body
            .get("schema")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| failed(format!("schema id {id}: no \"schema\" in the answer")))?;
        Ok(avro::Schema::parse(text)
            .map(Arc::new)
            .map_err(|e| format!("schema id {id} is not an Avro schema: {e}")))
    }
}

/// Confluent's framing: a zero byte, the schema id (4 bytes, big-endian),
/// then the datum.
fn confluent_frame(bytes: &[u8]) -> Option<(u32, &[u8])> {
    match bytes {
        [0, a, b, c, d, datum @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), datum)),
        _ => None,
    }
}

/// How a Kafka job's landed files are read: NDJSON, or CSV with the
/// header floe wrote.
pub fn landed_format(src: &KafkaSource) -> crate::pipeline::SourceConfig {
    let (format, delimiter, quote) = match &src.records {
        KafkaRecords::Json | KafkaRecords::Avro(_) => (crate::pipeline::Format::Ndjson, ',', '"'),
        KafkaRecords::Csv {
            delimiter, quote, ..
        } => (crate::pipeline::Format::Csv, *delimiter, *quote),
    };
    crate::pipeline::SourceConfig {
        path: String::new(),
        format,
        delimiter,
        quote,
        records: None,
    }
}

/// Turns records into the lines of a landed file, counting lines so that
/// each record's first line maps to its offset.
struct Lines {
    records: KafkaRecords,
    /// `timestamp_field` as it is written: a JSON string, or a CSV field.
    stamp: Option<String>,
    /// The line the next record starts on.
    next: u64,
}

impl Lines {
    fn new(src: &KafkaSource) -> Self {
        let stamp = src
            .timestamp_field
            .as_ref()
            .and_then(|f| match &src.records {
                KafkaRecords::Json => Some(serde_json::Value::from(f.as_str()).to_string()),
                KafkaRecords::Csv {
                    delimiter, quote, ..
                } => Some(csv_field(f, *delimiter, *quote)),
                // Decoded records get the field as a value.
                KafkaRecords::Avro(_) => None,
            });
        Self {
            records: src.records.clone(),
            stamp,
            next: 1,
        }
    }

    /// The file's first line: CSV's header (the timestamp field first, then
    /// `fields`); nothing for JSON.
    fn header(&mut self) -> Option<String> {
        let KafkaRecords::Csv {
            fields,
            delimiter,
            quote,
        } = &self.records
        else {
            return None;
        };
        let names: Vec<String> = self
            .stamp
            .iter()
            .cloned()
            .chain(fields.iter().map(|f| csv_field(f, *delimiter, *quote)))
            .collect();
        self.next += 1;
        Some(names.join(&delimiter.to_string()))
    }

    /// A record's text (no final line break) and the line it starts on.
    /// JSON: the value with its line breaks made spaces (a JSON object
    /// holds none outside its strings), `null` for a record without a value
    /// (a tombstone) or only white space, so each is a reject rather than a
    /// skipped blank line. CSV: the row without its final line break, an
    /// empty one as one empty quoted field (a reject unless the row has one
    /// field).
    fn record(
        &mut self,
        value: Option<Vec<u8>>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> (Vec<u8>, u64) {
        let value = value.unwrap_or_default();
        let stamp = || at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let text = match &self.records {
            KafkaRecords::Json | KafkaRecords::Avro(_)
                if value.iter().all(u8::is_ascii_whitespace) =>
            {
                b"null".to_vec()
            }
            KafkaRecords::Json | KafkaRecords::Avro(_) => {
                let flat: Vec<u8> = value
                    .into_iter()
                    .map(|b| if b == b'\n' { b' ' } else { b })
                    .collect();
                match &self.stamp {
                    Some(name) => with_timestamp(flat, name, &stamp()),
                    None => flat,
                }
            }
            KafkaRecords::Csv {
                delimiter, quote, ..
            } => {
                let mut row = value;
                if row.last() == Some(&b'\n') {
                    row.pop();
                    if row.last() == Some(&b'\r') {
                        row.pop();
                    }
                }
                if row.is_empty() {
                    row = vec![*quote as u8; 2];
                }
                match &self.stamp {
                    Some(_) => {
                        let mut with = stamp().into_bytes();
                        with.push(*delimiter as u8);
                        with.extend_from_slice(&row);
                        with
                    }
                    None => row,
                }
            }
        };
        let line = self.next;
        let breaks = text.iter().filter(|b| **b == b'\n').count();
        self.next += 1 + u64::try_from(breaks).unwrap_or(0);
        (text, line)
    }
}

/// `name` as a CSV field: quoted when it holds the delimiter, the quote or
/// a line break.
fn csv_field(name: &str, delimiter: char, quote: char) -> String {
    if name.contains([delimiter, quote, '\n', '\r']) {
        let q = quote.to_string();
        format!("{q}{}{q}", name.replace(quote, &format!("{q}{q}")))
    } else {
        name.to_string()
    }
}

/// Streams the records `from..end` of one partition (at most `limit` of
/// them) to `path`, one per line ([`Lines`]), with the record's timestamp
/// added as `src.timestamp_field`.
async fn land(
    pc: &PartitionClient,
    src: &KafkaSource,
    (from, end, limit): (i64, i64, Option<u64>),
    path: &std::path::Path,
    mut avro: Option<&mut AvroSchemas>,
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
        unreadable: BTreeMap::new(),
    };
    let mut lines = Lines::new(src);
    if let Some(header) = lines.header() {
        out.write_all(header.as_bytes()).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    let mut empty = 0;
    let limit = limit.unwrap_or(u64::MAX);
    while landed.next < end && empty < EMPTY_FETCHES && landed.records < limit {
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
            if r.offset < landed.next || r.offset >= end || landed.records >= limit {
                continue;
            }
            got = true;
            let value = r.record.value;
            let (text, line) = match avro.as_deref_mut() {
                Some(schemas) => {
                    let bytes = value.unwrap_or_default();
                    match schemas.decode(&bytes, src).await? {
                        Ok(mut record) => {
                            if let (Some(name), Some(o)) =
                                (&src.timestamp_field, record.as_object_mut())
                                && !o.contains_key(name)
                            {
                                let at = r
                                    .record
                                    .timestamp
                                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                                o.insert(name.clone(), serde_json::Value::String(at));
                            }
                            lines.record(Some(record.to_string().into_bytes()), r.record.timestamp)
                        }
                        Err(why) => {
                            let (text, line) = lines.record(None, r.record.timestamp);
                            landed.unreadable.insert(line, (bytes, why));
                            (text, line)
                        }
                    }
                }
                None => lines.record(value, r.record.timestamp),
            };
            out.write_all(&text).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
            landed.records += 1;
            landed.lines.push(line, r.offset);
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

/// `object` (a JSON object's text) with `"name": "<timestamp>"` as its
/// first field; anything else as it was (it is a reject either way). A
/// record that has a field of that name keeps its own value (the later
/// key wins).
fn with_timestamp(object: Vec<u8>, name: &str, stamp: &str) -> Vec<u8> {
    let Some(open) = object.iter().position(|b| !b.is_ascii_whitespace()) else {
        return object;
    };
    if object[open] != b'{' {
        return object;
    }
    let rest = &object[open + 1..];
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'}');
    let mut out = Vec::with_capacity(object.len() + name.len() + stamp.len() + 6);
    out.push(b'{');
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    out.push(b'"');
    out.extend_from_slice(stamp.as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
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
    fn the_kafka_timestamp_joins_each_object() -> Result<()> {
        let name = serde_json::Value::from("kafka_ts").to_string();
        let stamp = "2024-05-01T00:00:00.123Z";
        let got =
            |v: &str| String::from_utf8_lossy(&with_timestamp(v.into(), &name, stamp)).into_owned();
        assert_eq!(
            got(r#" {"id": 1}"#),
            r#"{"kafka_ts":"2024-05-01T00:00:00.123Z","id": 1}"#
        );
        assert_eq!(got("{ }"), r#"{"kafka_ts":"2024-05-01T00:00:00.123Z" }"#);
        // Not an object: left for the contract to reject as it came.
        assert_eq!(got("[1, 2]"), "[1, 2]");
        assert_eq!(got("42"), "42");
        // The record's own field of that name wins (the later key).
        let v: serde_json::Value = serde_json::from_str(&got(r#"{"kafka_ts": "mine"}"#))
            .map_err(|e| Error::Source(e.to_string()))?;
        assert_eq!(v["kafka_ts"], "mine");
        Ok(())
    }

    fn kafka(records: KafkaRecords, timestamp_field: Option<&str>) -> KafkaSource {
        KafkaSource {
            brokers: vec!["127.0.0.1:9092".into()],
            topic: "t".into(),
            timestamp_field: timestamp_field.map(str::to_string),
            records,
        }
    }

    #[test]
    fn csv_records_land_under_a_header_with_their_first_lines_counted() {
        let src = kafka(
            KafkaRecords::Csv {
                fields: vec!["meter".into(), "kwh, total".into()],
                delimiter: ',',
                quote: '"',
            },
            Some("kafka_ts"),
        );
        let at = chrono::DateTime::from_timestamp_millis(1_714_521_600_123).unwrap_or_default();
        let mut lines = Lines::new(&src);
        assert_eq!(
            lines.header().as_deref(),
            Some("kafka_ts,meter,\"kwh, total\"")
        );
        let text = |(t, l): (Vec<u8>, u64)| (String::from_utf8_lossy(&t).into_owned(), l);
        assert_eq!(
            text(lines.record(Some(b"m1,1.5\r\n".to_vec()), at)),
            ("2024-05-01T00:00:00.123Z,m1,1.5".to_string(), 2)
        );
        // A quoted field over two lines: the next record starts two lines on.
        assert_eq!(text(lines.record(Some(b"\"a\nb\",2".to_vec()), at)).1, 3);
        assert_eq!(
            text(lines.record(None, at)),
            ("2024-05-01T00:00:00.123Z,\"\"".to_string(), 5)
        );
        let mut json = Lines::new(&kafka(KafkaRecords::Json, None));
        assert_eq!(json.header(), None);
        assert_eq!(
            text(json.record(Some(b"  ".to_vec()), at)),
            ("null".into(), 1)
        );
        assert_eq!(
            text(json.record(Some(b"{\"a\":\n1}".to_vec()), at)),
            ("{\"a\": 1}".into(), 2)
        );
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
