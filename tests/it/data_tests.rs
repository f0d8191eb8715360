//! The richer data tests of a model's `[tests]`: `not_null` with a
//! tolerated fraction, `regex`, `expression` and custom `sql`. Each kind
//! passes on a model, then fails after an edit of its declaration: the
//! model is not published (main keeps its snapshot), floe exits 1 and the
//! report lists the test with its count of offending rows. Malformed
//! declarations are refused before anything runs, naming the file.

use std::fmt::Write;

use floe::rest::RestClient;
use floe::transform::{self, ModelReport};

use crate::common::{Env, ingest, request, rows};

const JOB: &str = r#"
[[job]]
name = "readings"
table = "bronze.readings"
source = { path = "data/{date}.ndjson", format = "ndjson" }
event_time = { kind = "offset", column = "t" }
columns = [
  { name = "site_id", type = "string", required = true, from = "site" },
  { name = "value", type = "double", from = "v" },
]
"#;

const DAY: &str = "2024-05-01";

/// Hourly readings for sites A and B (value = the hour), site B's hour 5
/// without a value: 48 rows, one null value (a fraction of 1/48).
async fn setup() -> (Env, RestClient) {
    let env = Env::new().await;
    let mut text = String::new();
    for site in ["A", "B"] {
        for h in 0..24 {
            if site == "B" && h == 5 {
                writeln!(text, r#"{{"t":"{DAY}T{h:02}:00:00Z","site":"{site}"}}"#)
            } else {
                writeln!(
                    text,
                    r#"{{"t":"{DAY}T{h:02}:00:00Z","site":"{site}","v":{h}}}"#
                )
            }
            .expect("fmt");
        }
    }
    env.write(&format!("data/{DAY}.ndjson"), &text);
    let p = env.pipeline(JOB);
    ingest(&p, &request(DAY, DAY, "i1"))
        .await
        .1
        .expect("ingest");
    let client = env.client_with(Default::default()).await;
    (env, client)
}

/// Writes `silver.readings` with `tests` as its `[tests]` body.
fn model(env: &Env, tests: &str) -> std::path::PathBuf {
    env.write(
        "sql/silver/readings.sql",
        &format!(
            "/* floe\nmaterialized = \"table\"\n[tests]\n{tests}\n*/\nSELECT ts_utc, site_id, value FROM bronze.readings\n"
        ),
    )
}

async fn transform(env: &Env, client: &RestClient, run: &str) -> (ModelReport, floe::Result<()>) {
    let req = crate::common::transform_request(&env.path("sql"), run);
    let (reports, outcome) = transform::run(client, &req).await;
    let report = reports
        .into_iter()
        .find(|r| r.model == "silver.readings")
        .unwrap_or_else(|| panic!("no report for silver.readings: {outcome:?}"));
    (report, outcome)
}

async fn main_snapshot(client: &RestClient) -> Option<i64> {
    client
        .load_table(&["silver".to_string()], "readings")
        .await
        .expect("load")
        .and_then(|t| t.metadata.current_snapshot_id())
}

/// `pass` publishes with every test at 0 failures; `fail` (after it)
/// leaves main at the published snapshot, exits 1 and reports `test` with
/// `failures` offending rows. Returns the failure's message.
async fn passes_then_fails(pass: &str, fail: &str, test: &str, failures: u64) -> String {
    let (env, client) = setup().await;
    model(&env, pass);
    let (report, outcome) = transform(&env, &client, "t1").await;
    outcome.unwrap_or_else(|e| panic!("{pass}: {e}"));
    assert_eq!(report.status, "published", "{report:?}");
    assert!(report.tests.iter().all(|t| t.failures == 0), "{report:?}");
    let published = main_snapshot(&client).await;
    assert!(published.is_some());

    model(&env, fail);
    let (report, outcome) = transform(&env, &client, "t2").await;
    let err = outcome.expect_err("the test fails");
    assert_eq!(err.exit_code(), 1, "{err}");
    assert_eq!(report.status, "tests-failed", "{report:?}");
    let outcome = report
        .tests
        .iter()
        .find(|t| t.test == test)
        .unwrap_or_else(|| panic!("no outcome {test}: {:?}", report.tests));
    assert_eq!(outcome.failures, failures, "{outcome:?}");
    assert_eq!(main_snapshot(&client).await, published);
    assert_eq!(rows(&env.scan("silver", "readings").await), 48);
    let text = err.to_string();
    assert!(text.contains(test), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_null_tolerates_a_fraction_of_nulls_per_column() {
    // 1 null in 48 rows (0.0208): tolerated under 0.05, not under 0.01.
    let text = passes_then_fails(
        r#"not_null = ["site_id", { column = "value", max_fraction = 0.05 }]"#,
        r#"not_null = ["site_id", { column = "value", max_fraction = 0.01 }]"#,
        "not_null(value, max_fraction 0.01)",
        1,
    )
    .await;
    assert!(text.contains("null_fraction"), "{text}");
    assert!(text.contains("0.0208"), "the fraction is reported: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_not_null_still_fails_on_one_null() {
    passes_then_fails(
        r#"not_null = ["site_id"]"#,
        r#"not_null = ["site_id", "value"]"#,
        "not_null(value)",
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_fails_on_the_values_that_do_not_match() {
    let text = passes_then_fails(
        "regex = { site_id = '^[AB]$', value = '^[0-9]+[.]0$' }",
        "regex = { site_id = '^A$' }",
        r#"regex(site_id ~ "^A$")"#,
        24,
    )
    .await;
    assert!(text.contains("| B "), "sample rows expected: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expression_fails_where_false_and_lets_null_pass() {
    // The null value of site B passes `value >= 0` (dbt's expression_is_true).
    passes_then_fails(
        r#"expression = ["value >= 0", "value < 24 AND site_id IN ('A', 'B')"]"#,
        r#"expression = ["value >= 0", "value < 20"]"#,
        "expression(value < 20)",
        8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_sql_test_fails_when_its_query_returns_rows() {
    // The passing tests read another table besides {this}.
    let pass = r#"
[[tests.sql]]
name = "every_site_is_in_bronze"
query = """
SELECT * FROM {this} AS t
WHERE NOT EXISTS (SELECT 1 FROM bronze.readings AS b WHERE b.site_id = t.site_id)
"""
[[tests.sql]]
name = "a_full_day_per_site"
query = "SELECT site_id FROM {this} GROUP BY site_id HAVING count(*) <> 24;"
"#;
    let text = passes_then_fails(
        pass,
        r#"sql = { name = "no_value_above_21", query = "SELECT * FROM {this} WHERE value > 21" }"#,
        "sql(no_value_above_21)",
        4,
    )
    .await;
    assert!(text.contains("| 22.0"), "sample rows expected: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_declarations_are_refused_before_anything_runs() {
    let (env, client) = setup().await;
    let cases = [
        ("regex = { site_id = '^[A-Z' }", "not a valid pattern"),
        (r#"expression = ["  "]"#, "empty expression"),
        (
            r#"expression = ["value >= 0) OR (1 = 1"]"#,
            "does not parse",
        ),
        (r#"expression = ["value >="]"#, "does not parse"),
        (
            r#"sql = { name = "x", query = "SELECT * FROM silver.readings" }"#,
            "{this}",
        ),
        (
            r#"sql = { name = "x", query = "SELEC * FROM {this}" }"#,
            "does not parse",
        ),
        (
            r#"sql = { name = "x", query = "SELECT 1 FROM {this}; SELECT 2" }"#,
            "one SELECT",
        ),
        (
            r#"sql = { name = "", query = "SELECT * FROM {this}" }"#,
            "name",
        ),
        (r#"sql = { query = "SELECT * FROM {this}" }"#, "name"),
        (r#"sql = "SELECT 1""#, "list of them"),
        (
            r#"not_null = [{ column = "value", max_fraction = 2 }]"#,
            "between 0 and 1",
        ),
        (
            r#"not_null = [{ column = "value", max_fractions = 0.1 }]"#,
            "max_fractions",
        ),
        ("not_null = [3]", "column name"),
    ];
    for (i, (tests, expected)) in cases.iter().enumerate() {
        let file = model(&env, tests);
        let req = crate::common::transform_request(&env.path("sql"), &format!("t{i}"));
        let (reports, outcome) = transform::run(&client, &req).await;
        let err = outcome.expect_err(tests);
        assert!(reports.is_empty(), "{tests}: refused before any model ran");
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()),
            "{tests}: {text}"
        );
        assert!(
            text.contains(expected),
            "{tests}: expected {expected:?} in {text}"
        );
        assert_eq!(err.exit_code(), 2, "{tests}: {text}");
    }
    assert_eq!(main_snapshot(&client).await, None, "nothing was written");

    // Declarations that parse but do not apply to the result: refused once
    // the query is planned, before it runs or writes.
    for (tests, expected) in [
        (
            r#"expression = ["no_such_column > 0"]"#,
            "expression(no_such_column > 0)",
        ),
        ("regex = { no_such_column = 'a' }", "regex(no_such_column"),
        (
            r#"sql = { name = "x", query = "SELECT nope FROM {this}" }"#,
            "sql(x)",
        ),
        (
            r#"not_null = [{ column = "nope", max_fraction = 0.5 }]"#,
            "not_null(nope, max_fraction 0.5)",
        ),
    ] {
        let file = model(&env, tests);
        let req = crate::common::transform_request(&env.path("sql"), "late");
        let (reports, outcome) = transform::run(&client, &req).await;
        let err = outcome.expect_err(tests);
        let text = err.to_string();
        assert!(
            text.contains(&file.display().to_string()),
            "{tests}: {text}"
        );
        assert!(
            text.contains(expected),
            "{tests}: expected {expected:?} in {text}"
        );
        assert!(text.contains("does not apply"), "{tests}: {text}");
        assert_eq!(err.exit_code(), 2, "{tests}: {text}");
        assert_eq!(reports[0].rows_written, 0, "{tests}: nothing computed");
        assert_eq!(
            main_snapshot(&client).await,
            None,
            "{tests}: nothing written"
        );
    }
}

/// The exit code of a run of `p` over `day`.
async fn outcome_code(p: &floe::pipeline::Pipeline, day: &str) -> u8 {
    ingest(p, &request(day, day, "code"))
        .await
        .1
        .map_or_else(|e| e.exit_code(), |()| 0)
}

/// A job whose `[job.expect]` holds `tests`; the day's file from [`setup`].
fn expecting(env: &Env, tests: &str) -> floe::pipeline::Pipeline {
    env.pipeline(&format!("{JOB}\n[job.expect]\n{tests}\n"))
}

async fn bronze_snapshot(client: &RestClient) -> Option<i64> {
    client
        .load_table(&["bronze".to_string()], "readings")
        .await
        .expect("load")
        .and_then(|t| t.metadata.current_snapshot_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_expect_checks_not_null_regex_and_expression_before_commit() {
    let (env, client) = setup().await;
    let committed = bronze_snapshot(&client).await;
    assert!(committed.is_some());
    let pass = expecting(
        &env,
        r#"not_null = ["site_id", { column = "value", max_fraction = 0.05 }]
regex = { site_id = '^[AB]$' }
expression = ["value >= 0", "value < 24"]"#,
    );
    let (reports, outcome) = ingest(&pass, &request(DAY, DAY, "i2")).await;
    outcome.expect("every test passes");
    let found = reports[0].expect.clone().expect("expect report");
    assert_eq!(found.rows, 48);
    assert_eq!(found.tests.len(), 5, "{found:?}");
    assert_eq!(found.tests[1].failures, 1, "one null value: {found:?}");
    assert!(found.tests.iter().all(|t| t.failures <= t.allowed));
    let committed = bronze_snapshot(&client).await;

    let cases = [
        (
            r#"not_null = [{ column = "value", max_fraction = 0.01 }]"#,
            "not_null(value, max_fraction 0.01): 1 null(s) in 48 rows (a fraction of 0.0208)",
        ),
        (
            r#"not_null = ["value"]"#,
            "not_null(value): 1 offending row(s)",
        ),
        (
            "regex = { site_id = '^A$' }",
            r#"regex(site_id ~ "^A$"): 24 offending row(s)"#,
        ),
        (
            r#"expression = ["value < 20"]"#,
            "expression(value < 20): 8 offending row(s)",
        ),
    ];
    for (i, (tests, expected)) in cases.iter().enumerate() {
        let p = expecting(&env, tests);
        let (_, outcome) = ingest(&p, &request(DAY, DAY, &format!("f{i}"))).await;
        let err = outcome.expect_err(tests);
        assert_eq!(err.exit_code(), 1, "{tests}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{tests}: expected {expected:?} in {text}"
        );
        assert!(text.contains("nothing was committed"), "{text}");
        assert_eq!(bronze_snapshot(&client).await, committed, "{tests}");
    }

    for (tests, expected) in [
        ("regex = { site_id = '(' }", "not a valid pattern"),
        ("regex = { nothing = 'a' }", "not a column of the job"),
        (r#"expression = ["value >="]"#, "does not parse"),
        (
            r#"not_null = [{ column = "value", max_fraction = -1 }]"#,
            "between 0 and 1",
        ),
    ] {
        let text =
            format!("[catalog]\nuri = \"http://127.0.0.1:1\"\n{JOB}\n[job.expect]\n{tests}\n");
        let err = floe::pipeline::parse(&text, &env.path("floe.toml"))
            .map(|_| ())
            .expect_err(tests);
        assert!(err.to_string().contains(expected), "{tests}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_expect_runs_custom_sql_over_the_run_rows_before_commit() {
    let (env, client) = setup().await;
    // The next day: two readings, one of them far above the day before.
    let next = "2024-05-02";
    env.write(
        &format!("data/{next}.ndjson"),
        &format!(
            "{{\"t\":\"{next}T00:00:00Z\",\"site\":\"A\",\"v\":3}}\n{{\"t\":\"{next}T01:00:00Z\",\"site\":\"B\",\"v\":99}}\n"
        ),
    );
    // `{this}` is the run's rows only; the table's own name reads what
    // is committed (the day before), which a test may compare with.
    let pass = expecting(
        &env,
        r#"[[job.expect.sql]]
name = "only_this_run"
query = "SELECT * FROM {this} WHERE ts_utc < '2024-05-02T00:00:00Z'"

[[job.expect.sql]]
name = "known_sites"
query = "SELECT * FROM {this} r WHERE r.site_id NOT IN (SELECT site_id FROM bronze.readings)""#,
    );
    let before = bronze_snapshot(&client).await;
    let (reports, outcome) = ingest(&pass, &request(next, next, "s1")).await;
    outcome.expect("both tests pass");
    let found = reports[0].expect.clone().expect("expect report");
    let names: Vec<(&str, u64)> = found
        .tests
        .iter()
        .map(|t| (t.test.as_str(), t.failures))
        .collect();
    assert_eq!(names, [("sql(only_this_run)", 0), ("sql(known_sites)", 0)]);
    assert_ne!(bronze_snapshot(&client).await, before, "committed");

    // A test over the committed day before: no value more than 10 above
    // the largest of yesterday's. B's 99 fails it; nothing is committed.
    env.write(
        &format!("data/{next}.ndjson"),
        &format!("{{\"t\":\"{next}T01:00:00Z\",\"site\":\"B\",\"v\":199}}\n"),
    );
    let fail = expecting(
        &env,
        r#"sql = { name = "no_jump", query = "SELECT site_id, value FROM {this} WHERE value > 10 + (SELECT max(value) FROM bronze.readings WHERE ts_utc < '2024-05-02T00:00:00Z')" }"#,
    );
    let committed = bronze_snapshot(&client).await;
    let (reports, outcome) = ingest(&fail, &request(next, next, "s2")).await;
    let err = outcome.expect_err("the jump fails");
    assert_eq!(err.exit_code(), 1, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("sql(no_jump): 1 offending row(s)")
            && text.contains("site_id=B, value=199")
            && text.contains("nothing was committed"),
        "{text}"
    );
    assert_eq!(reports[0].rows_written, 0);
    assert_eq!(bronze_snapshot(&client).await, committed);

    // A query that does not apply names the test; a malformed one is
    // refused when the pipeline is read.
    let wrong = expecting(
        &env,
        r#"sql = { name = "typo", query = "SELECT * FROM {this} WHERE no_such > 1" }"#,
    );
    let (_, outcome) = ingest(&wrong, &request(next, next, "s3")).await;
    let text = outcome.expect_err("unknown column").to_string();
    assert!(
        text.contains("sql(typo) could not run") && text.contains("no_such"),
        "{text}"
    );
    assert_eq!(
        outcome_code(&wrong, next).await,
        2,
        "a query that does not plan is a configuration error"
    );
    assert_eq!(bronze_snapshot(&client).await, committed);
    for (tests, expected) in [
        (
            r#"sql = { name = "x", query = "SELECT * FROM bronze.readings" }"#,
            "must read the tested rows as {this}",
        ),
        (
            r#"sql = { name = "x", query = "DELETE FROM {this}" }"#,
            "one SELECT",
        ),
        (
            r#"sql = { name = "x", query = "SELECT * FROM {this} WHERE" }"#,
            "does not parse",
        ),
    ] {
        let text =
            format!("[catalog]\nuri = \"http://127.0.0.1:1\"\n{JOB}\n[job.expect]\n{tests}\n");
        let err = floe::pipeline::parse(&text, &env.path("floe.toml"))
            .map(|_| ())
            .expect_err(tests);
        assert!(err.to_string().contains(expected), "{tests}: {err}");
    }
}
