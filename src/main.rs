//! The `floe` binary: parse, set up logging, run, map errors to exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use floe::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_env("FLOE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(floe::secret::RedactingStderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Keeps freed memory in the process for the next batch. By default
/// glibc returns a freed buffer of over 128 KiB to the kernel (and trims
/// the heap's free top), so every batch's columns, every Parquet page and
/// every zstd context came back as fresh pages the kernel had to zero:
/// about a fifth of a Parquet ingest's CPU time, most of it system time
/// (BENCHMARKS.md, "By input format"). Peak memory stays the same: the
/// same buffers are reused instead of unmapped and faulted in again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // Blocks up to 32 MiB (glibc's ceiling for this parameter) come from
    // the heap; up to 128 MiB of free heap top stays mapped.
    // SAFETY: mallopt only sets the allocator's parameters and is called
    // before any other thread exists; a refused value (0) leaves glibc's
    // default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    keep_freed_memory();
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    // Before anything logs: credentials of the environment are hidden
    // from every log line (those of flags and files as they are read).
    floe::secret::remember_environment();
    let cli = Cli::parse();
    if let Command::Catalog(floe::cli::CatalogCommand::Serve(args)) = &cli.command {
        for secret in [&args.token, &args.client_secret].into_iter().flatten() {
            floe::secret::remember_secret(secret);
        }
    }
    // The catalog's request log is the point of `catalog serve`; inside an
    // ingest run (embedded catalog) it would drown the run's own lines.
    let default_filter = match cli.command {
        Command::Catalog(_) => "info",
        // delta-rs's kernel logs an error for every table it opens that
        // does not exist yet, which a first run's create is about to do.
        _ => {
            "info,floe_catalog=warn,deltalake_core=warn,buoyant_kernel=warn,buoyant_kernel::log_segment=off,buoyant_kernel::snapshot::builder=off"
        }
    };
    init_logging(cli.log_format, default_filter);
    match floe::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = err.to_string();
            eprintln!("floe: error: {}", floe::secret::redact(&message));
            // The chain of causes, each once: a cause whose text the
            // message (or an earlier cause) already shows is not repeated.
            let mut shown = message;
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {}", floe::secret::redact(&text));
                    shown.push_str(&text);
                }
                source = cause.source();
            }
            ExitCode::from(err.exit_code())
        }
    }
}
