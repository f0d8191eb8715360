//! The plain arrow-rs peer of `bench/formats.py`: every Parquet file of a
//! folder read and written again as Parquet (zstd level 1, as floe writes),
//! one output file per input, the files spread over one thread per core. No
//! table format, no conversion, no statistics beyond arrow-rs's defaults:
//! the floor an ingest of the same files could reach with the same library.
//!
//!     cargo run --release --example plain_copy -- IN_DIR OUT_DIR

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use arrow_array::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

fn copy(from: &PathBuf, to: &PathBuf) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(from)?)?.build()?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(to)?, reader.schema(), Some(props))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.close()?;
    Ok(rows)
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: plain_copy IN_DIR OUT_DIR");
        std::process::exit(2)
    };
    std::fs::create_dir_all(output)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let queue = Mutex::new(files.into_iter());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut rows = 0;
                    loop {
                        let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                        let Some(from) = next else { break };
                        let name = from.file_name().map(PathBuf::from).unwrap_or_default();
                        rows += copy(&from, &PathBuf::from(output).join(name))?;
                    }
                    Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(rows)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a copy thread panicked".into()))
            })
            .sum::<Result<u64, _>>()
    })?;
    println!("{rows}");
    Ok(())
}
