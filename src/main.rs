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

#[tokio::main]
async fn main() -> ExitCode {
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
