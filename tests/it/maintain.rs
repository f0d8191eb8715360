//! Maintenance end to end: compaction, the replace producer's safety
//! checks, snapshot expiry and orphan removal, on tables in floe's catalog.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use floe::rest::RestClient;
use floe::table::iceberg::Target;
use floe::table::iceberg::compact::{CompactOptions, compact};
use floe::table::iceberg::expire::{ExpireOptions, expire};
use floe::table::iceberg::filter::Filter;
use floe::table::iceberg::orphans::{OrphanOptions, remove};
use floe::table::iceberg::scan::live_files;
use floe::table::snapshot::{self, Change, ChangeOutcome, Overwrite, Removal};
use floe::table::writer::DayWriters;
use iceberg::spec::{DataFile, NestedField, Operation, PrimitiveType, Schema, SortOrder, Type};

use crate::common::Env;

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// 2024-03-01 in days since the epoch.
const DAY0: i32 = 19_783;

pub(crate) async fn client(env: &Env) -> RestClient {
    env.client_with(Default::default()).await
}

/// Creates `m.<name>`: ts_utc, site, id; partitioned by day(ts_utc).
pub(crate) async fn create(client: &RestClient, name: &str) {
    let schema = Schema::builder()
        .with_fields(vec![
            Arc::new(NestedField::required(
                1,
                "ts_utc",
                Type::Primitive(PrimitiveType::Timestamptz),
            )),
            Arc::new(NestedField::optional(
                2,
                "site",
                Type::Primitive(PrimitiveType::String),
            )),
            Arc::new(NestedField::required(
                3,
                "id",
                Type::Primitive(PrimitiveType::Long),
            )),
        ])
        .build()
        .expect("schema");
    client
        .ensure_namespace(&["m".to_string()])
        .await
        .expect("namespace");
    client
        .create_table(
            &["m".to_string()],
            name,
            &schema,
            &floe::table::schema::day_spec_on(1, "ts_utc"),
            &SortOrder::unsorted_order(),
            &HashMap::new(),
        )
        .await
        .expect("create");
}

/// Rows `ids` on day `day` (offset from DAY0), one per minute.
fn batch(target: &Target, day: i32, ids: std::ops::Range<i64>) -> RecordBatch {
    let schema = floe::table::schema::arrow_schema(target.loaded.metadata.current_schema())
        .expect("arrow schema");
    let base = i64::from(DAY0 + day) * MICROS_PER_DAY;
    let ts: Vec<i64> = ids
        .clone()
        .map(|i| base + (i % 1440) * 60_000_000)
        .collect();
    let sites: Vec<String> = ids.clone().map(|i| format!("S{}", i % 7)).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("+00:00")),
            Arc::new(StringArray::from(sites)),
            Arc::new(Int64Array::from_iter_values(ids)),
        ],
    )
    .expect("batch")
}

/// Writes `batches` as new data files of the table (not committed).
async fn write(target: &Target, batches: Vec<RecordBatch>, run: &str) -> Vec<DataFile> {
    let mut w = DayWriters::new(
        &target.loaded.metadata,
        "ts_utc",
        target.handle.io.clone(),
        run,
        usize::MAX,
        Vec::new(),
    )
    .expect("writers");
    for b in batches {
        w.write(b).await.expect("write");
    }
    w.close().await.expect("close")
}

/// Appends one small file per call.
pub(crate) async fn append(client: &RestClient, name: &str, day: i32, ids: std::ops::Range<i64>) {
    let target = Target::open(client, &format!("m.{name}"))
        .await
        .expect("open");
    let files = write(
        &target,
        vec![batch(&target, day, ids)],
        &uuid::Uuid::new_v4().to_string(),
    )
    .await;
    snapshot::commit_overwrite(
        client,
        &target.handle,
        target.loaded.clone(),
        &Overwrite {
            added: files,
            days: None,
            guarded_days: Default::default(),
            properties: HashMap::new(),
            run_id: uuid::Uuid::new_v4().to_string(),
            guard: None,
        },
    )
    .await
    .expect("append");
}

/// Every id in the table, sorted.
pub(crate) async fn ids(env: &Env, name: &str) -> Vec<i64> {
    let mut out: Vec<i64> = env
        .scan("m", name)
        .await
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("id").expect("id");
            let a = c.as_any().downcast_ref::<Int64Array>().expect("longs");
            a.values().to_vec()
        })
        .collect();
    out.sort_unstable();
    out
}

/// Live data files per partition day.
async fn files_per_day(client: &RestClient, name: &str) -> BTreeMap<i32, usize> {
    let target = Target::open(client, &format!("m.{name}"))
        .await
        .expect("open");
    let Some(current) = target.loaded.metadata.current_snapshot() else {
        return BTreeMap::new();
    };
    let table = target.handle.table(&target.loaded).expect("table");
    let mut out = BTreeMap::new();
    for f in live_files(&table, &target.handle.io, current, false)
        .await
        .expect("live")
    {
        *out.entry(snapshot::file_day(&f.file).expect("day") - DAY0)
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_rewrites_small_files_into_one_per_partition_with_the_same_rows() {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    for i in 0..12i64 {
        append(&client, "t", (i % 3) as i32, i * 50..i * 50 + 50).await;
    }
    let before = ids(&env, "t").await;
    assert_eq!(before, (0..600).collect::<Vec<_>>());
    assert_eq!(
        files_per_day(&client, "t").await,
        BTreeMap::from([(0, 4), (1, 4), (2, 4)])
    );

    let mut target = Target::open(&client, "m.t").await.expect("open");
    let opts = CompactOptions {
        min_input_files: 2,
        ..CompactOptions::default()
    };
    let report = compact(&client, &mut target, &opts).await.expect("compact");
    assert_eq!(report.status, "compacted");
    assert_eq!((report.files_before, report.files_after), (12, 3));
    assert_eq!(report.rows, 600);
    assert_eq!(report.snapshots.len(), 1);

    assert_eq!(ids(&env, "t").await, before);
    assert_eq!(
        files_per_day(&client, "t").await,
        BTreeMap::from([(0, 1), (1, 1), (2, 1)])
    );
    let target = Target::open(&client, "m.t").await.expect("open");
    let current = target.loaded.metadata.current_snapshot().expect("snapshot");
    assert_eq!(current.summary().operation, Operation::Replace);
    assert_eq!(
        current.summary().additional_properties["deleted-data-files"],
        "12"
    );
    assert_eq!(
        current.summary().additional_properties["total-records"],
        "600"
    );

    // Nothing left to do: a second run commits nothing.
    let mut target = Target::open(&client, "m.t").await.expect("open");
    let again = compact(&client, &mut target, &opts).await.expect("compact");
    assert_eq!(again.status, "nothing-to-do");
    assert!(again.snapshots.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_honours_the_day_filter_and_min_input_files() {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    for i in 0..9i64 {
        append(&client, "t", (i % 3) as i32, i * 10..i * 10 + 10).await;
    }
    append(&client, "t", 3, 1000..1010).await;
    let day1: chrono::NaiveDate = "2024-03-02".parse().expect("date");
    let mut target = Target::open(&client, "m.t").await.expect("open");
    let report = compact(
        &client,
        &mut target,
        &CompactOptions {
            min_input_files: 2,
            filter: Filter::days(day1, day1),
            ..CompactOptions::default()
        },
    )
    .await
    .expect("compact");
    assert_eq!(report.partitions_compacted, 1);
    assert_eq!(
        files_per_day(&client, "t").await,
        BTreeMap::from([(0, 3), (1, 1), (2, 3), (3, 1)])
    );
    // Three small files are below the default minimum of five.
    let mut target = Target::open(&client, "m.t").await.expect("open");
    let report = compact(&client, &mut target, &CompactOptions::default())
        .await
        .expect("compact");
    assert_eq!(report.status, "nothing-to-do");
}

/// A compaction planned by hand: the head's live files, and new files
/// written to replace them.
struct Planned {
    target: Target,
    since: i64,
    inputs: HashSet<String>,
    rewritten: Vec<DataFile>,
}

/// `m.t` with three small files on day 0 (ids 0..30), and a compaction of
/// them planned but not committed.
async fn planned_compaction() -> (Env, RestClient, Planned) {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    for i in 0..3i64 {
        append(&client, "t", 0, i * 10..i * 10 + 10).await;
    }
    let target = Target::open(&client, "m.t").await.expect("open");
    let current = target
        .loaded
        .metadata
        .current_snapshot()
        .expect("snapshot")
        .clone();
    let table = target.handle.table(&target.loaded).expect("table");
    let inputs = live_files(&table, &target.handle.io, &current, false)
        .await
        .expect("live")
        .iter()
        .map(|f| f.file.file_path().to_string())
        .collect();
    let rewritten = write(&target, vec![batch(&target, 0, 0..30)], "rewrite").await;
    let planned = Planned {
        target,
        since: current.sequence_number(),
        inputs,
        rewritten,
    };
    (env, client, planned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_never_removes_files_a_concurrent_overwrite_already_replaced() {
    // "Plan" a compaction: read the live files and rewrite them.
    let (env, client, planned) = planned_compaction().await;
    let Planned {
        since,
        inputs,
        rewritten,
        ..
    } = planned;

    // Meanwhile, an ingest run replaces day 0 with new rows.
    let other = Target::open(&client, "m.t").await.expect("open");
    let fresh = write(&other, vec![batch(&other, 0, 500..505)], "ingest").await;
    snapshot::commit_overwrite(
        &client,
        &other.handle,
        other.loaded.clone(),
        &Overwrite {
            added: fresh,
            days: Some(std::collections::BTreeSet::from([DAY0])),
            guarded_days: Default::default(),
            properties: HashMap::new(),
            run_id: "ingest-run".into(),
            guard: None,
        },
    )
    .await
    .expect("overwrite");

    // The compaction's commit must not go through: it would bring back
    // rows the overwrite removed.
    let change = Change {
        added: BTreeMap::from([(0, rewritten)]),
        removal: Removal::Files {
            paths: inputs.clone(),
            since,
        },
        operation: Operation::Replace,
        properties: HashMap::new(),
        run_id: "compact-run".into(),
        guarded_days: Default::default(),
        branch: None,
        guard: None,
    };
    let head = Target::open(&client, "m.t").await.expect("open");
    let outcome = snapshot::commit_change(&client, &head.handle, head.loaded.clone(), &change)
        .await
        .expect("commit");
    let ChangeOutcome::Stale(stale) = outcome else {
        panic!("the replace was committed over a concurrent overwrite: {outcome:?}");
    };
    assert_eq!(stale.into_iter().collect::<HashSet<_>>(), inputs);
    assert_eq!(ids(&env, "t").await, (500..505).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replace_keeps_files_a_concurrent_append_added() {
    let (env, client, planned) = planned_compaction().await;
    let Planned {
        target: planned,
        since,
        inputs,
        rewritten,
    } = planned;
    // A concurrent append to the same partition.
    append(&client, "t", 0, 100..110).await;
    let change = Change {
        added: BTreeMap::from([(0, rewritten)]),
        removal: Removal::Files {
            paths: inputs,
            since,
        },
        operation: Operation::Replace,
        properties: HashMap::new(),
        run_id: "compact-run".into(),
        guarded_days: Default::default(),
        branch: None,
        guard: None,
    };
    // Built from the planning snapshot: the producer reloads on conflict.
    let outcome =
        snapshot::commit_change(&client, &planned.handle, planned.loaded.clone(), &change)
            .await
            .expect("commit");
    let ChangeOutcome::Committed(report) = outcome else {
        panic!("the replace was refused: {outcome:?}");
    };
    assert!(report.attempts >= 2, "the stale head must have conflicted");
    let mut expected: Vec<i64> = (0..30).chain(100..110).collect();
    expected.sort_unstable();
    assert_eq!(ids(&env, "t").await, expected);
    assert_eq!(files_per_day(&client, "t").await, BTreeMap::from([(0, 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_only_what_no_retained_snapshot_references() {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    for i in 0..4i64 {
        append(&client, "t", (i % 2) as i32, i * 10..i * 10 + 10).await;
    }
    // Replace day 0: its two files are now referenced by old snapshots only.
    let target = Target::open(&client, "m.t").await.expect("open");
    let fresh = write(&target, vec![batch(&target, 0, 700..703)], "ow").await;
    snapshot::commit_overwrite(
        &client,
        &target.handle,
        target.loaded.clone(),
        &Overwrite {
            added: fresh,
            days: Some(std::collections::BTreeSet::from([DAY0])),
            guarded_days: Default::default(),
            properties: HashMap::from([("floe.job".to_string(), "j".to_string())]),
            run_id: "run-1".into(),
            guard: None,
        },
    )
    .await
    .expect("overwrite");
    append(&client, "t", 1, 900..901).await;
    let rows = ids(&env, "t").await;
    let mut target = Target::open(&client, "m.t").await.expect("open");
    assert_eq!(target.loaded.metadata.snapshots().len(), 6);

    let dry = expire(
        &client,
        &mut target,
        &ExpireOptions {
            older_than: Duration::ZERO,
            retain_last: 1,
            dry_run: true,
        },
    )
    .await
    .expect("dry run");
    // Kept: the current snapshot alone; it carries job j's run record
    // forward, so the overwrite that made it may go.
    assert_eq!(dry.expired.len(), 5);
    assert_eq!(dry.data_files_deleted, 2);
    let mut target = Target::open(&client, "m.t").await.expect("open");
    assert_eq!(
        target.loaded.metadata.snapshots().len(),
        6,
        "a dry run changes nothing"
    );

    let report = expire(
        &client,
        &mut target,
        &ExpireOptions {
            older_than: Duration::ZERO,
            retain_last: 1,
            dry_run: false,
        },
    )
    .await
    .expect("expire");
    assert_eq!(report.expired, dry.expired);
    assert_eq!(report.data_files_deleted, 2);
    assert_eq!(report.delete_failures, 0);
    let target = Target::open(&client, "m.t").await.expect("open");
    assert_eq!(target.loaded.metadata.snapshots().len(), 1);
    let current = target.loaded.metadata.current_snapshot().expect("current");
    assert_eq!(
        current.summary().additional_properties["floe.last-run.j"],
        "run-1"
    );
    assert_eq!(
        snapshot::landed_snapshot(&target.loaded.metadata, "run-1"),
        Some(current.snapshot_id()),
        "the job's latest run record must survive"
    );
    assert_eq!(ids(&env, "t").await, rows);
    // Every file of every retained snapshot still exists.
    let table = target.handle.table(&target.loaded).expect("table");
    for s in target.loaded.metadata.snapshots() {
        for f in live_files(&table, &target.handle.io, s, false)
            .await
            .expect("live")
        {
            assert!(
                target
                    .handle
                    .io
                    .exists(f.file.file_path())
                    .await
                    .expect("exists"),
                "{} of a retained snapshot was deleted",
                f.file.file_path()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_older_than_the_window_are_deleted_and_newer_ones_kept() {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    append(&client, "t", 0, 0..10).await;
    let target = Target::open(&client, "m.t").await.expect("open");
    let data_dir = std::path::PathBuf::from(
        target
            .loaded
            .metadata
            .location()
            .trim_start_matches("file://"),
    )
    .join("data");
    let old = data_dir.join("killed-run-00001.parquet");
    let young = data_dir.join("running-00001.parquet");
    std::fs::write(&old, b"left by a killed run").expect("write");
    std::fs::write(&young, b"being written").expect("write");
    std::fs::File::options()
        .write(true)
        .open(&old)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(4 * 86_400))
        .expect("mtime");
    let opts = |dry_run| OrphanOptions {
        older_than: Duration::from_secs(3 * 86_400),
        dry_run,
    };
    let dry = remove(&client, &target, &opts(true))
        .await
        .expect("dry run");
    assert_eq!(dry.orphans.len(), 1, "{:?}", dry.orphans);
    assert!(old.exists());
    let report = remove(&client, &target, &opts(false))
        .await
        .expect("remove");
    assert_eq!(report.orphans, dry.orphans);
    assert_eq!(report.recent_unreferenced, 1);
    assert!(!old.exists());
    assert!(young.exists());
    assert_eq!(ids(&env, "t").await, (0..10).collect::<Vec<_>>());
}

/// A window overwrite of `day` from `stale` (the table as its run opened
/// it), replacing the day with `ids`.
async fn overwrite_day(
    client: &RestClient,
    stale: &Target,
    day: i32,
    ids: std::ops::Range<i64>,
    run: &str,
) -> floe::Result<snapshot::CommitReport> {
    let files = write(stale, vec![batch(stale, day, ids)], run).await;
    snapshot::commit_overwrite(
        client,
        &stale.handle,
        stale.loaded.clone(),
        &Overwrite {
            added: files,
            days: Some(std::collections::BTreeSet::from([DAY0 + day])),
            guarded_days: Default::default(),
            properties: HashMap::new(),
            run_id: run.into(),
            guard: None,
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwrite_never_drops_rows_a_concurrent_writer_added_to_its_days() {
    let env = Env::new().await;
    let client = client(&env).await;
    create(&client, "t").await;
    // Two first runs of other days, from the empty table: both land.
    let first_a = Target::open(&client, "m.t").await.expect("open");
    let first_b = Target::open(&client, "m.t").await.expect("open");
    overwrite_day(&client, &first_a, 0, 0..10, "first-a")
        .await
        .expect("first run of day 0");
    overwrite_day(&client, &first_b, 1, 10..20, "first-b")
        .await
        .expect("a first run of another day lands beside it");
    // Two runs open the table; meanwhile another engine appends to day 0.
    let run_a = Target::open(&client, "m.t").await.expect("open");
    let run_b = Target::open(&client, "m.t").await.expect("open");
    append(&client, "t", 0, 900..903).await;

    // Replacing day 0 would drop the acknowledged append: refused, loudly.
    let err = overwrite_day(&client, &run_a, 0, 100..105, "a")
        .await
        .expect_err("an overlapping overwrite must not land");
    let text = err.to_string();
    assert!(
        matches!(err, floe::Error::CommitConflict(_))
            && text.contains("another writer changed 2024-03-01 of m.t")
            && text.contains("nothing was committed"),
        "{text}"
    );
    // Day 1 was not touched by the other writer: its overwrite lands and
    // keeps the append.
    overwrite_day(&client, &run_b, 1, 200..205, "b")
        .await
        .expect("a disjoint overwrite lands");
    let mut expected: Vec<i64> = (0..10).chain(200..205).chain(900..903).collect();
    expected.sort_unstable();
    assert_eq!(ids(&env, "t").await, expected);

    // A compaction in between changes no row: an overwrite opened before
    // it still lands.
    let run_c = Target::open(&client, "m.t").await.expect("open");
    let mut head = Target::open(&client, "m.t").await.expect("open");
    let opts = CompactOptions {
        min_input_files: 2,
        ..CompactOptions::default()
    };
    let report = compact(&client, &mut head, &opts).await.expect("compact");
    assert_eq!(report.status, "compacted", "day 0 has two files to merge");
    overwrite_day(&client, &run_c, 0, 300..302, "c")
        .await
        .expect("lands after a compaction");
    let mut expected: Vec<i64> = (200..205).chain(300..302).collect();
    expected.sort_unstable();
    assert_eq!(ids(&env, "t").await, expected);
}
