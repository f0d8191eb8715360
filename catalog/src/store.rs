//! The pointer store: which namespaces exist and where each table's current
//! metadata file is.
//!
//! The tables are those of Iceberg's JDBC catalog (`iceberg_tables`,
//! `iceberg_namespace_properties`, schema version 1), so a JDBC catalog
//! pointed at the same database sees the same tables. One implementation
//! serves SQLite and PostgreSQL through sqlx's `Any` driver; the SQL is the
//! common subset of both.
//!
//! # The commit contract
//! [`Store::swap_pointers`] is a compare-and-swap: every pointer moves from
//! the metadata location the caller read to the one it wrote, in one
//! database transaction, or none moves. Each `UPDATE` carries the expected
//! old location in its `WHERE` clause, so of two commits built on the same
//! version exactly one matches a row; the other sees zero rows affected and
//! gets [`StoreError::Conflict`]. A crash before the transaction commits
//! leaves every pointer where it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::ident::{Namespace, TableName};

/// The property row that marks a namespace as existing (JDBC catalog
/// convention: a namespace without properties still has this row).
const EXISTS_KEY: &str = "exists";

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The namespace does not exist.
    #[error("namespace does not exist")]
    NamespaceNotFound,
    /// The table does not exist.
    #[error("table does not exist")]
    TableNotFound,
    /// A table or namespace of that name exists already.
    #[error("already exists")]
    AlreadyExists,
    /// The namespace still holds tables or namespaces.
    #[error("namespace is not empty: {0}")]
    NotEmpty(&'static str),
    /// A pointer was not at the expected location: another commit won.
    #[error("the table was changed by a concurrent commit")]
    Conflict,
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// One pointer move of a commit: `table` from `expected` to `new`.
#[derive(Debug, Clone)]
pub struct PointerSwap {
    /// The table.
    pub table: TableName,
    /// The metadata location the commit was built on.
    pub expected: String,
    /// The metadata location written by the commit.
    pub new: String,
}

/// The SQL pointer store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    catalog: String,
}

type StoreResult<T> = Result<T, StoreError>;

impl Store {
    /// Connects to `url` (`sqlite://PATH`, `sqlite::memory:` or
    /// `postgres://...`), creates the tables if missing, and scopes every
    /// row to `catalog_name`.
    pub async fn connect(url: &str, catalog_name: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let in_memory = url.contains(":memory:");
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            // An in-memory SQLite database exists per connection.
            .max_connections(if in_memory { 1 } else { 8 });
        // An in-memory database lives as long as its one connection.
        let options = if in_memory {
            options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            options
        };
        let options = options.after_connect(move |conn, _| {
            Box::pin(async move {
                if is_sqlite {
                    // WAL lets readers run beside the single writer;
                    // the busy timeout makes concurrent writers queue
                    // instead of failing with SQLITE_BUSY.
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    // LIKE must distinguish `A` from `a`, as in PostgreSQL.
                    conn.execute("PRAGMA case_sensitive_like = ON").await?;
                    if !in_memory {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                    }
                }
                Ok(())
            })
        });
        let url = if is_sqlite && !in_memory && !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode=rwc")
        } else {
            url.to_string()
        };
        let pool = options.connect(&url).await?;
        let store = Self {
            pool,
            catalog: catalog_name.to_string(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS iceberg_tables (
                    catalog_name VARCHAR(255) NOT NULL,
                    table_namespace VARCHAR(255) NOT NULL,
                    table_name VARCHAR(255) NOT NULL,
                    metadata_location VARCHAR(1000),
                    previous_metadata_location VARCHAR(1000),
                    iceberg_type VARCHAR(5),
                    PRIMARY KEY (catalog_name, table_namespace, table_name))",
            )
            .await?;
        self.pool
            .execute(
                "CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                    catalog_name VARCHAR(255) NOT NULL,
                    namespace VARCHAR(255) NOT NULL,
                    property_key VARCHAR(255),
                    property_value VARCHAR(1000),
                    PRIMARY KEY (catalog_name, namespace, property_key))",
            )
            .await?;
        Ok(())
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Every namespace, sorted, including those that exist only because a
    /// table lives in them (as the JDBC catalog counts them).
    pub async fn list_namespaces(&self) -> StoreResult<Vec<Namespace>> {
        let rows = sqlx::query(
            "SELECT DISTINCT namespace FROM iceberg_namespace_properties WHERE catalog_name = $1
             UNION SELECT DISTINCT table_namespace FROM iceberg_tables WHERE catalog_name = $1",
        )
        .bind(&self.catalog)
        .fetch_all(&self.pool)
        .await?;
        let mut all = BTreeSet::new();
        for row in rows {
            let value: String = row.try_get(0)?;
            // Rows written by other tools with names this server would not
            // accept are left alone rather than failing the whole listing.
            if let Ok(ns) = Namespace::from_db(&value) {
                all.insert(ns);
            }
        }
        Ok(all.into_iter().collect())
    }

    /// The properties of a namespace, or `None` when it does not exist.
    pub async fn namespace_properties(
        &self,
        ns: &Namespace,
    ) -> StoreResult<Option<HashMap<String, String>>> {
        let rows = sqlx::query(
            "SELECT property_key, property_value FROM iceberg_namespace_properties
             WHERE catalog_name = $1 AND namespace = $2",
        )
        .bind(&self.catalog)
        .bind(ns.to_db())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(self.has_tables(ns).await?.then(HashMap::new));
        }
        let mut props = HashMap::new();
        for row in rows {
            let key: Option<String> = row.try_get(0)?;
            let value: Option<String> = row.try_get(1)?;
            if let (Some(k), Some(v)) = (key, value)
                && k != EXISTS_KEY
            {
                props.insert(k, v);
            }
        }
        Ok(Some(props))
    }

    async fn has_tables(&self, ns: &Namespace) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2",
        )
        .bind(&self.catalog)
        .bind(ns.to_db())
        .fetch_one(&self.pool)
        .await?;
        Ok(count(&row)? > 0)
    }

    /// Creates a namespace with properties.
    pub async fn create_namespace(
        &self,
        ns: &Namespace,
        props: &HashMap<String, String>,
    ) -> StoreResult<()> {
        if self.namespace_properties(ns).await?.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        let mut tx = self.pool.begin().await?;
        if self.insert_marker(&mut tx, ns).await? == 0 {
            return Err(StoreError::AlreadyExists);
        }
        for (k, v) in props.iter().filter(|(k, _)| k.as_str() != EXISTS_KEY) {
            self.upsert_property(&mut tx, ns, k, v).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts the row that marks `ns` as existing; returns 0 when it was
    /// there already.
    async fn insert_marker(&self, conn: &mut AnyConnection, ns: &Namespace) -> StoreResult<u64> {
        let inserted = sqlx::query(
            "INSERT INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.catalog)
        .bind(ns.to_db())
        .bind(EXISTS_KEY)
        .bind("true")
        .execute(conn)
        .await?;
        Ok(inserted.rows_affected())
    }

    async fn upsert_property(
        &self,
        conn: &mut AnyConnection,
        ns: &Namespace,
        key: &str,
        value: &str,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO iceberg_namespace_properties
             (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (catalog_name, namespace, property_key)
             DO UPDATE SET property_value = excluded.property_value",
        )
        .bind(&self.catalog)
        .bind(ns.to_db())
        .bind(key)
        .bind(value)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Sets and removes namespace properties in one transaction.
    pub async fn update_namespace_properties(
        &self,
        ns: &Namespace,
        updates: &BTreeMap<String, String>,
        removals: &BTreeSet<String>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        // Writing the marker row first takes the write lock before any read
        // (SQLite) and makes a table-only namespace explicit.
        self.insert_marker(&mut tx, ns).await?;
        for key in removals {
            sqlx::query(
                "DELETE FROM iceberg_namespace_properties
                 WHERE catalog_name = $1 AND namespace = $2 AND property_key = $3",
            )
            .bind(&self.catalog)
            .bind(ns.to_db())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        for (k, v) in updates {
            self.upsert_property(&mut tx, ns, k, v).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops an empty namespace. The emptiness checks and the delete are one
    /// statement, so a table created concurrently cannot be orphaned.
    pub async fn drop_namespace(&self, ns: &Namespace) -> StoreResult<()> {
        let db = ns.to_db();
        let child_pattern = format!("{}.%", escape_like(&db));
        let deleted = sqlx::query(
            "DELETE FROM iceberg_namespace_properties
             WHERE catalog_name = $1 AND namespace = $2
               AND NOT EXISTS (SELECT 1 FROM iceberg_tables
                               WHERE catalog_name = $1 AND (table_namespace = $2
                                     OR table_namespace LIKE $3 ESCAPE '!'))
               AND NOT EXISTS (SELECT 1 FROM iceberg_namespace_properties
                               WHERE catalog_name = $1 AND namespace LIKE $3 ESCAPE '!')",
        )
        .bind(&self.catalog)
        .bind(&db)
        .bind(&child_pattern)
        .execute(&self.pool)
        .await?;
        if deleted.rows_affected() > 0 {
            return Ok(());
        }
        if self.has_tables(ns).await? {
            return Err(StoreError::NotEmpty("tables"));
        }
        let all = self.list_namespaces().await?;
        if all.iter().any(|other| other.is_descendant_of(ns)) {
            return Err(StoreError::NotEmpty("namespaces"));
        }
        Err(StoreError::NamespaceNotFound)
    }

    /// Table names in a namespace, sorted.
    pub async fn list_tables(&self, ns: &Namespace) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT table_name FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2
               AND (iceberg_type IS NULL OR iceberg_type = 'TABLE')
",
        )
        .bind(&self.catalog)
        .bind(ns.to_db())
        .fetch_all(&self.pool)
        .await?;
        // Sorted here, byte-wise, because page tokens compare bytes and a
        // database collation may order differently.
        let mut names = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect::<StoreResult<Vec<String>>>()?;
        names.sort();
        Ok(names)
    }

    /// The current metadata location of a table, or `None`.
    pub async fn table_pointer(&self, table: &TableName) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT metadata_location FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
               AND (iceberg_type IS NULL OR iceberg_type = 'TABLE')",
        )
        .bind(&self.catalog)
        .bind(table.namespace.to_db())
        .bind(&table.name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Ok(row.try_get::<Option<String>, _>(0)?),
            None => Ok(None),
        }
    }

    /// Registers a new table whose first metadata file is written. Fails
    /// when the namespace is missing or the name is taken.
    pub async fn create_table(&self, table: &TableName, location: &str) -> StoreResult<()> {
        if self.namespace_properties(&table.namespace).await?.is_none() {
            return Err(StoreError::NamespaceNotFound);
        }
        let inserted = sqlx::query(
            "INSERT INTO iceberg_tables
             (catalog_name, table_namespace, table_name, metadata_location,
              previous_metadata_location, iceberg_type)
             VALUES ($1, $2, $3, $4, NULL, 'TABLE') ON CONFLICT DO NOTHING",
        )
        .bind(&self.catalog)
        .bind(table.namespace.to_db())
        .bind(&table.name)
        .bind(location)
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::AlreadyExists);
        }
        Ok(())
    }

    /// Moves every pointer of a commit atomically (see the module docs).
    pub async fn swap_pointers(&self, swaps: &[PointerSwap]) -> StoreResult<()> {
        // A fixed order keeps two transactions over the same tables from
        // deadlocking in PostgreSQL.
        let mut ordered: Vec<&PointerSwap> = swaps.iter().collect();
        ordered.sort_by_key(|s| (s.table.namespace.to_db(), s.table.name.clone()));
        let mut tx = self.pool.begin().await?;
        for swap in ordered {
            // A swap onto itself (a change with requirements only) keeps the
            // previous location as it was.
            let updated = sqlx::query(
                "UPDATE iceberg_tables
                 SET metadata_location = $1,
                     previous_metadata_location = CASE WHEN $1 = $2
                         THEN previous_metadata_location ELSE $2 END
                 WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5
                   AND metadata_location = $2",
            )
            .bind(&swap.new)
            .bind(&swap.expected)
            .bind(&self.catalog)
            .bind(swap.table.namespace.to_db())
            .bind(&swap.table.name)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                tx.rollback().await?;
                return Err(StoreError::Conflict);
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Renames a table, possibly into another (existing) namespace.
    pub async fn rename_table(&self, from: &TableName, to: &TableName) -> StoreResult<()> {
        if self.table_pointer(from).await?.is_none() {
            return Err(StoreError::TableNotFound);
        }
        if self.namespace_properties(&to.namespace).await?.is_none() {
            return Err(StoreError::NamespaceNotFound);
        }
        if self.table_pointer(to).await?.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        let updated = sqlx::query(
            "UPDATE iceberg_tables SET table_namespace = $1, table_name = $2
             WHERE catalog_name = $3 AND table_namespace = $4 AND table_name = $5",
        )
        .bind(to.namespace.to_db())
        .bind(&to.name)
        .bind(&self.catalog)
        .bind(from.namespace.to_db())
        .bind(&from.name)
        .execute(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::AlreadyExists,
            _ => StoreError::Database(e),
        })?;
        if updated.rows_affected() != 1 {
            return Err(StoreError::TableNotFound);
        }
        Ok(())
    }

    /// Removes a table's pointer and returns the metadata location it had,
    /// in one statement.
    pub async fn drop_table(&self, table: &TableName) -> StoreResult<String> {
        let row = sqlx::query(
            "DELETE FROM iceberg_tables
             WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3
               AND (iceberg_type IS NULL OR iceberg_type = 'TABLE')
             RETURNING metadata_location",
        )
        .bind(&self.catalog)
        .bind(table.namespace.to_db())
        .bind(&table.name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::TableNotFound)?;
        row.try_get::<Option<String>, _>(0)?
            .ok_or(StoreError::TableNotFound)
    }

    /// Whether any table's current metadata lies under `prefix`.
    pub async fn any_pointer_under(&self, prefix: &str) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM iceberg_tables
             WHERE catalog_name = $1 AND metadata_location LIKE $2 ESCAPE '!'",
        )
        .bind(&self.catalog)
        .bind(format!("{}%", escape_like(prefix)))
        .fetch_one(&self.pool)
        .await?;
        Ok(count(&row)? > 0)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn count(row: &AnyRow) -> StoreResult<i64> {
    Ok(row.try_get::<i64, _>(0)?)
}

/// Escapes `%`, `_` and the escape character itself for a LIKE pattern.
fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::from_db(s).expect("valid namespace")
    }

    async fn store() -> Store {
        Store::connect("sqlite::memory:", "test")
            .await
            .expect("in-memory store")
    }

    #[tokio::test]
    async fn namespace_lifecycle() -> Result<(), StoreError> {
        let s = store().await;
        let props = HashMap::from([("owner".to_string(), "me".to_string())]);
        s.create_namespace(&ns("a"), &props).await?;
        assert!(matches!(
            s.create_namespace(&ns("a"), &props).await,
            Err(StoreError::AlreadyExists)
        ));
        s.create_namespace(&ns("a.b_c"), &HashMap::new()).await?;
        assert_eq!(s.namespace_properties(&ns("a")).await?, Some(props));
        assert!(matches!(
            s.drop_namespace(&ns("a")).await,
            Err(StoreError::NotEmpty("namespaces"))
        ));
        // `_` in a LIKE pattern must not match any character.
        s.create_namespace(&ns("a_b"), &HashMap::new()).await?;
        s.drop_namespace(&ns("a_b")).await?;
        s.drop_namespace(&ns("a.b_c")).await?;
        s.drop_namespace(&ns("a")).await?;
        assert!(matches!(
            s.drop_namespace(&ns("a")).await,
            Err(StoreError::NamespaceNotFound)
        ));
        Ok(())
    }

    #[tokio::test]
    async fn pointer_swap_is_compare_and_swap() -> Result<(), StoreError> {
        let s = store().await;
        s.create_namespace(&ns("n"), &HashMap::new()).await?;
        let t = TableName::new(ns("n"), "t").expect("valid");
        s.create_table(&t, "v0").await?;
        assert!(matches!(
            s.drop_namespace(&ns("n")).await,
            Err(StoreError::NotEmpty("tables"))
        ));
        let swap = |expected: &str, new: &str| PointerSwap {
            table: t.clone(),
            expected: expected.into(),
            new: new.into(),
        };
        s.swap_pointers(&[swap("v0", "v1")]).await?;
        assert!(matches!(
            s.swap_pointers(&[swap("v0", "v1b")]).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(s.table_pointer(&t).await?.as_deref(), Some("v1"));
        Ok(())
    }

    #[tokio::test]
    async fn multi_table_swap_is_all_or_nothing() -> Result<(), StoreError> {
        let s = store().await;
        s.create_namespace(&ns("n"), &HashMap::new()).await?;
        let a = TableName::new(ns("n"), "a").expect("valid");
        let b = TableName::new(ns("n"), "b").expect("valid");
        s.create_table(&a, "a0").await?;
        s.create_table(&b, "b0").await?;
        let swaps = [
            PointerSwap {
                table: a.clone(),
                expected: "a0".into(),
                new: "a1".into(),
            },
            PointerSwap {
                table: b.clone(),
                expected: "stale".into(),
                new: "b1".into(),
            },
        ];
        assert!(matches!(
            s.swap_pointers(&swaps).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(s.table_pointer(&a).await?.as_deref(), Some("a0"));
        assert_eq!(s.table_pointer(&b).await?.as_deref(), Some("b0"));
        Ok(())
    }
}
