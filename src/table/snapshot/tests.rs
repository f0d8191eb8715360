//! Unit tests of [`stage`], the manifest rewriting, on hand-built Iceberg
//! metadata over a temporary local folder: a table partitioned by
//! `day(ts_utc)`, seeded with one snapshot of two data manifests written
//! here (days 0 and 1 in the first, day 2 in the second), then staged
//! changes applied the way a catalog applies them.

use iceberg::spec::{
    DataContentType, DataFileBuilder, DataFileFormat, ManifestEntryRef, ManifestStatus,
    NestedField, PrimitiveType, Schema, SortOrder, Struct, TableMetadataBuilder, Type,
    UnboundPartitionSpec,
};

use super::*;
use crate::table::props::WINDOW_KEY;

/// A test's result: `?` on any error.
type TestResult<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// 2024-01-01, in days since 1970-01-01.
const DAY: i32 = 19_723;
/// The seed snapshot's id.
const SEED_ID: i64 = 1;
/// The job and run that made the seed snapshot.
const SEED_JOB: &str = "ingest-a";
const SEED_RUN: &str = "run-0";

/// A table in a temporary folder, its metadata at the seed snapshot.
struct Fixture {
    /// Kept for its lifetime: the folder goes when the fixture does.
    dir: tempfile::TempDir,
    handle: TableHandle,
    loaded: LoadedTable,
}

impl Fixture {
    /// An empty v2 table partitioned by `day(ts_utc)`.
    fn empty() -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let location = format!("{}/t", dir.path().display());
        std::fs::create_dir_all(format!("{location}/metadata"))?;
        let schema = Schema::builder()
            .with_fields(vec![
                NestedField::required(1, "id", Type::Primitive(PrimitiveType::Long)).into(),
                NestedField::required(2, "ts_utc", Type::Primitive(PrimitiveType::Timestamptz))
                    .into(),
            ])
            .build()?;
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(2, "ts_utc_day", Transform::Day)?
            .build();
        let metadata = TableMetadataBuilder::new(
            schema,
            spec,
            SortOrder::unsorted_order(),
            location,
            FormatVersion::V2,
            HashMap::new(),
        )?
        .build()?
        .metadata;
        Ok(Self {
            dir,
            handle: TableHandle {
                namespace: vec!["ns".to_string()],
                name: "t".to_string(),
                io: FileIO::new_with_fs(),
            },
            loaded: LoadedTable {
                metadata_location: None,
                metadata,
                config: HashMap::new(),
                refs: HashMap::new(),
            },
        })
    }

    /// The table with the seed snapshot: `seed-0` (day 0, 10 rows) and
    /// `seed-1` (day 1, 20 rows) in one manifest, `seed-2` (day 2, 30
    /// rows) in another.
    async fn seeded() -> TestResult<Self> {
        let mut fx = Self::empty()?;
        let manifests = [
            vec![fx.file("seed-0", DAY, 10)?, fx.file("seed-1", DAY + 1, 20)?],
            vec![fx.file("seed-2", DAY + 2, 30)?],
        ];
        let mut written = Vec::new();
        for (i, files) in manifests.iter().enumerate() {
            let path = format!("{}/seed-m{i}.avro", fx.metadata_dir());
            written.push(fx.write_seed_manifest(&path, files).await?);
        }
        let list_path = format!("{}/snap-{SEED_ID}-seed.avro", fx.metadata_dir());
        let out = fx.handle.io.new_output(&list_path)?.writer().await?;
        let mut list = ManifestListWriter::v2(out, SEED_ID, None, 1);
        list.add_manifests(written.into_iter())?;
        list.close().await?;
        let snapshot = Snapshot::builder()
            .with_snapshot_id(SEED_ID)
            .with_sequence_number(1)
            .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
            .with_manifest_list(list_path)
            .with_summary(Summary {
                operation: Operation::Append,
                additional_properties: HashMap::from([
                    (JOB_KEY.to_string(), SEED_JOB.to_string()),
                    (RUN_ID_KEY.to_string(), SEED_RUN.to_string()),
                    ("total-data-files".to_string(), "3".to_string()),
                    ("total-records".to_string(), "60".to_string()),
                ]),
            })
            .with_schema_id(fx.loaded.metadata.current_schema_id())
            .build();
        fx.apply(vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: "main".to_string(),
                reference: SnapshotReference::new(
                    SEED_ID,
                    SnapshotRetention::branch(None, None, None),
                ),
            },
        ])?;
        Ok(fx)
    }

    fn metadata_dir(&self) -> String {
        format!("{}/metadata", self.loaded.metadata.location())
    }

    /// A data file of `day` holding `rows` rows (never read: only its
    /// manifest entry matters here).
    fn file(&self, name: &str, day: i32, rows: u64) -> TestResult<DataFile> {
        Ok(DataFileBuilder::default()
            .content(DataContentType::Data)
            .file_path(format!(
                "{}/data/{name}.parquet",
                self.loaded.metadata.location()
            ))
            .file_format(DataFileFormat::Parquet)
            .partition(Struct::from_iter([Some(Literal::int(day))]))
            .partition_spec_id(self.loaded.metadata.default_partition_spec_id())
            .record_count(rows)
            .file_size_in_bytes(rows * 100)
            .build()?)
    }

    /// Writes a manifest of the seed snapshot adding `files`.
    async fn write_seed_manifest(
        &self,
        path: &str,
        files: &[DataFile],
    ) -> TestResult<ManifestFile> {
        let metadata = &self.loaded.metadata;
        let mut writer = ManifestWriterBuilder::new(
            self.handle.io.new_output(path)?,
            Some(SEED_ID),
            metadata.current_schema().clone(),
            metadata.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for file in files {
            writer.add_file(file.clone(), 1)?;
        }
        Ok(writer.write_manifest_file().await?)
    }

    /// Applies `updates` to the metadata, as the catalog would.
    fn apply(&mut self, updates: Vec<TableUpdate>) -> TestResult {
        let mut builder =
            TableMetadataBuilder::new_from_metadata(self.loaded.metadata.clone(), None);
        for update in updates {
            builder = update.apply(builder)?;
        }
        self.loaded.metadata = builder.build()?.metadata;
        Ok(())
    }

    /// Commits a staged change: checks its requirements against the
    /// metadata it was staged on, then applies its updates.
    fn commit(&mut self, staged: Staged) -> TestResult {
        for requirement in &staged.requirements {
            requirement.check(Some(&self.loaded.metadata))?;
        }
        self.apply(staged.updates)
    }

    /// Stages `change`, expecting a commit.
    async fn stage_ready(&self, change: &Change) -> TestResult<Staged> {
        match stage(&self.handle, &self.loaded, change).await? {
            Stage::Ready(staged) => Ok(staged),
            Stage::Stale(paths) => Err(format!("unexpectedly stale: {paths:?}").into()),
        }
    }

    /// The entries of the current snapshot's manifests, with the path of
    /// the manifest holding each.
    async fn entries(&self) -> TestResult<Vec<(String, ManifestEntryRef)>> {
        let table = self.handle.table(&self.loaded)?;
        let snapshot = self
            .loaded
            .metadata
            .current_snapshot()
            .ok_or("the table has no current snapshot")?;
        let list = table.manifest_list_reader(snapshot).load().await?;
        let mut out = Vec::new();
        for manifest in list.entries() {
            let loaded = manifest.load_manifest(&self.handle.io).await?;
            for entry in loaded.entries() {
                out.push((manifest.manifest_path.clone(), entry.clone()));
            }
        }
        Ok(out)
    }

    /// File names in the table's metadata folder.
    fn metadata_files(&self) -> TestResult<BTreeSet<String>> {
        let dir = self.dir.path().join("t/metadata");
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            names.insert(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

/// A change that adds `added` (default spec) and removes `removal`.
fn change(fx: &Fixture, added: Vec<DataFile>, removal: Removal) -> Change {
    Change {
        added: BTreeMap::from([(fx.loaded.metadata.default_partition_spec_id(), added)]),
        removal,
        operation: Operation::Overwrite,
        properties: HashMap::from([(JOB_KEY.to_string(), "ingest-b".to_string())]),
        run_id: "run-1".to_string(),
        guarded_days: BTreeSet::new(),
        branch: None,
        guard: None,
    }
}

/// The file name (without folder and extension) of a data file path.
fn name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".parquet").to_string()
}

/// Names of the files whose entries have `status`.
fn with_status(entries: &[(String, ManifestEntryRef)], status: ManifestStatus) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|(_, e)| e.status() == status)
        .map(|(_, e)| name(e.data_file().file_path()))
        .collect()
}

/// Names of the live (added or existing) files.
fn live(entries: &[(String, ManifestEntryRef)]) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|(_, e)| e.is_alive())
        .map(|(_, e)| name(e.data_file().file_path()))
        .collect()
}

/// The entry of the file named `file`.
fn entry<'a>(
    entries: &'a [(String, ManifestEntryRef)],
    file: &str,
) -> TestResult<&'a (String, ManifestEntryRef)> {
    entries
        .iter()
        .find(|(_, e)| name(e.data_file().file_path()) == file)
        .ok_or_else(|| format!("no entry for {file}").into())
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

#[tokio::test]
async fn a_days_overwrite_removes_exactly_the_files_of_those_days() -> TestResult {
    let mut fx = Fixture::seeded().await?;
    let seed_entries = fx.entries().await?;
    let new = fx.file("new-1", DAY + 1, 5)?;
    let staged = fx
        .stage_ready(&change(
            &fx,
            vec![new],
            Removal::Days(BTreeSet::from([DAY + 1])),
        ))
        .await?;
    assert_eq!((staged.deleted_files, staged.deleted_rows), (1, 20));
    assert!(staged.emptied_days.is_empty(), "day 1 got a file back");
    fx.commit(staged)?;

    let entries = fx.entries().await?;
    assert_eq!(live(&entries), names(&["seed-0", "seed-2", "new-1"]));
    assert_eq!(
        with_status(&entries, ManifestStatus::Deleted),
        names(&["seed-1"])
    );
    // The file kept from the rewritten manifest keeps its origin.
    let (_, kept) = entry(&entries, "seed-0")?;
    assert_eq!(kept.status(), ManifestStatus::Existing);
    assert_eq!(kept.snapshot_id(), Some(SEED_ID));
    assert_eq!(kept.sequence_number(), Some(1));
    // The manifest without the day is reused as it was.
    let (reused, untouched) = entry(&entries, "seed-2")?;
    assert_eq!(untouched.status(), ManifestStatus::Added);
    assert_eq!(
        Some(reused),
        entry(&seed_entries, "seed-2").ok().map(|(p, _)| p)
    );
    Ok(())
}

#[tokio::test]
async fn removing_everything_removes_every_live_file() -> TestResult {
    let mut fx = Fixture::seeded().await?;
    let staged = fx
        .stage_ready(&change(&fx, Vec::new(), Removal::Everything))
        .await?;
    assert_eq!((staged.deleted_files, staged.deleted_rows), (3, 60));
    assert_eq!(staged.emptied_days, vec![DAY, DAY + 1, DAY + 2]);
    fx.commit(staged)?;

    let entries = fx.entries().await?;
    assert!(live(&entries).is_empty(), "{:?}", live(&entries));
    assert_eq!(
        with_status(&entries, ManifestStatus::Deleted),
        names(&["seed-0", "seed-1", "seed-2"])
    );
    Ok(())
}

#[tokio::test]
async fn a_guarded_day_that_would_be_emptied_is_refused_by_name() -> TestResult {
    let fx = Fixture::seeded().await?;
    let before = fx.metadata_files()?;
    let mut overwrite = change(
        &fx,
        vec![fx.file("new-1", DAY + 1, 5)?],
        Removal::Days(BTreeSet::from([DAY, DAY + 1])),
    );
    overwrite.guarded_days = BTreeSet::from([DAY, DAY + 1]);
    match stage(&fx.handle, &fx.loaded, &overwrite).await {
        // Day 0 loses its file; day 1 gets one back.
        Err(Error::WouldEmpty(days)) => assert_eq!(days, "2024-01-01"),
        Err(e) => return Err(format!("expected WouldEmpty, got {e}").into()),
        Ok(_) => return Err("a guarded day was emptied".into()),
    }
    assert_eq!(fx.metadata_files()?, before, "a refused change left files");

    // Unguarded, the same change goes through and reports the day.
    overwrite.guarded_days.clear();
    let staged = fx.stage_ready(&overwrite).await?;
    assert_eq!(staged.emptied_days, vec![DAY]);
    Ok(())
}

#[tokio::test]
async fn added_files_appear_in_the_new_snapshot_with_their_partition() -> TestResult {
    let mut fx = Fixture::empty()?;
    let mut append = change(
        &fx,
        vec![fx.file("a", DAY, 1)?, fx.file("b", DAY + 5, 2)?],
        Removal::Nothing,
    );
    append.operation = Operation::Append;
    let staged = fx.stage_ready(&append).await?;
    let id = staged.snapshot_id;
    assert!(matches!(
        &staged.requirements[..],
        [
            TableRequirement::UuidMatch { .. },
            TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id: None },
        ] if r#ref == "main"
    ));
    fx.commit(staged)?;

    let entries = fx.entries().await?;
    assert_eq!(
        with_status(&entries, ManifestStatus::Added),
        names(&["a", "b"])
    );
    for (file, day) in [("a", DAY), ("b", DAY + 5)] {
        let (_, e) = entry(&entries, file)?;
        assert_eq!(file_day(e.data_file()), Some(day), "{file}");
        assert_eq!(e.snapshot_id(), Some(id));
        assert_eq!(e.sequence_number(), Some(1));
    }
    Ok(())
}

#[tokio::test]
async fn the_summary_records_the_run_and_the_counts() -> TestResult {
    let mut fx = Fixture::seeded().await?;
    let mut overwrite = change(
        &fx,
        vec![fx.file("new-1", DAY + 1, 5)?],
        Removal::Days(BTreeSet::from([DAY + 1])),
    );
    overwrite
        .properties
        .insert(WINDOW_KEY.to_string(), "w".to_string());
    let staged = fx.stage_ready(&overwrite).await?;
    fx.commit(staged)?;

    let snapshot = fx.loaded.metadata.current_snapshot().ok_or("no snapshot")?;
    assert_eq!(snapshot.parent_snapshot_id(), Some(SEED_ID));
    let summary = snapshot.summary();
    assert_eq!(summary.operation, Operation::Overwrite);
    let props = &summary.additional_properties;
    let prop = |k: &str| props.get(k).map(String::as_str);
    assert_eq!(prop(RUN_ID_KEY), Some("run-1"));
    assert_eq!(prop(JOB_KEY), Some("ingest-b"));
    assert_eq!(prop(WINDOW_KEY), Some("w"));
    assert_eq!(prop("floe.last-run.ingest-b"), Some("run-1"));
    // The seed's run record is carried forward.
    assert_eq!(prop("floe.last-run.ingest-a"), Some(SEED_RUN));
    assert_eq!(prop("added-data-files"), Some("1"));
    assert_eq!(prop("added-records"), Some("5"));
    assert_eq!(prop("deleted-data-files"), Some("1"));
    assert_eq!(prop("deleted-records"), Some("20"));
    assert_eq!(prop("total-data-files"), Some("3"));
    assert_eq!(prop("total-records"), Some("45"));
    assert_eq!(
        landed_snapshot(&fx.loaded.metadata, "run-1"),
        Some(snapshot.snapshot_id())
    );
    Ok(())
}

#[tokio::test]
async fn a_files_removal_with_a_vanished_input_is_stale() -> TestResult {
    let fx = Fixture::seeded().await?;
    let location = fx.loaded.metadata.location().to_string();
    let paths = ["seed-1", "gone"].map(|n| format!("{location}/data/{n}.parquet"));
    let mut compaction = change(
        &fx,
        vec![fx.file("compacted", DAY + 1, 20)?],
        Removal::Files {
            paths: paths.iter().cloned().collect(),
            since: 1,
        },
    );
    compaction.operation = Operation::Replace;
    match stage(&fx.handle, &fx.loaded, &compaction).await? {
        Stage::Stale(stale) => assert_eq!(stale, vec![paths[1].clone()]),
        Stage::Ready(_) => return Err("a vanished input was replaced".into()),
    }
    // With only live inputs it goes through, removing exactly them.
    compaction.removal = Removal::Files {
        paths: HashSet::from([paths[0].clone()]),
        since: 1,
    };
    let staged = fx.stage_ready(&compaction).await?;
    assert_eq!((staged.deleted_files, staged.deleted_rows), (1, 20));
    Ok(())
}

#[tokio::test]
async fn a_branch_stage_leaves_main_where_it_is() -> TestResult {
    let fx = Fixture::seeded().await?;
    let mut audit = change(&fx, vec![fx.file("new-0", DAY, 1)?], Removal::Nothing);
    audit.branch = Some("audit".to_string());
    let staged = fx.stage_ready(&audit).await?;
    assert!(staged.requirements.iter().any(|r| matches!(
        r,
        TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id: None } if r#ref == "audit"
    )));
    assert!(staged.updates.iter().any(|u| matches!(
        u,
        TableUpdate::SetSnapshotRef { ref_name, .. } if ref_name == "audit"
    )));
    assert!(staged.updates.iter().any(|u| matches!(
        u,
        TableUpdate::AddSnapshot { snapshot } if snapshot.parent_snapshot_id() == Some(SEED_ID)
    )));
    Ok(())
}
