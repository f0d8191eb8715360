//! The baseline of `bench/transform.py`: the same SQL models run by the
//! same DataFusion, over the same data as plain Parquet files, results
//! written as plain Parquet (zstd), no table format, no catalog, no tests.
//!
//!     cargo run --release --example plain_parquet -- \
//!         --bronze DIR --table bronze.observations --out DIR MODEL.sql...
//!
//! `--bronze` holds the input Parquet files, registered as `--table`; each
//! model (`<layer>/<name>.sql`, in run order) is written to
//! `OUT/<layer>/<name>/` and registered as `<layer>.<name>` for the next.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

fn usage() -> ! {
    eprintln!("usage: plain_parquet --bronze DIR --table NS.NAME --out DIR MODEL.sql...");
    std::process::exit(2)
}

fn ensure_schema(ctx: &SessionContext, name: &str) {
    if let Some(catalog) = ctx.catalog("datafusion")
        && catalog.schema(name).is_none()
    {
        let _ = catalog.register_schema(name, Arc::new(MemorySchemaProvider::new()));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut bronze, mut table, mut out, mut models) = (None, None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bronze" => bronze = args.next().map(PathBuf::from),
            "--table" => table = args.next(),
            "--out" => out = args.next().map(PathBuf::from),
            _ if a.ends_with(".sql") => models.push(PathBuf::from(a)),
            _ => usage(),
        }
    }
    let (Some(bronze), Some(table), Some(out)) = (bronze, table, out) else {
        usage()
    };
    let ctx = SessionContext::new();
    let register = |name: String, dir: PathBuf| {
        let ctx = ctx.clone();
        async move {
            if let Some((ns, _)) = name.split_once('.') {
                ensure_schema(&ctx, ns);
            }
            ctx.register_parquet(
                name.as_str(),
                &format!("{}/", dir.display()),
                ParquetReadOptions::default(),
            )
            .await
        }
    };
    register(table, bronze).await?;
    let mut options = TableParquetOptions::default();
    options.global.compression = Some("zstd(1)".to_string());
    for model in models {
        let started = Instant::now();
        let layer = model
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or("default")
            .to_string();
        let name = model
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        let sql = std::fs::read_to_string(&model)?;
        let dir = out.join(&layer).join(&name);
        std::fs::create_dir_all(&dir)?;
        let batches = ctx
            .sql(&sql)
            .await?
            .write_parquet(
                &format!("{}/", dir.display()),
                DataFrameWriteOptions::new(),
                Some(options.clone()),
            )
            .await?;
        let rows: u64 = batches
            .iter()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.value(0))
            })
            .sum();
        register(format!("{layer}.{name}"), dir).await?;
        println!(
            "{layer}.{name}: {rows} rows in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
