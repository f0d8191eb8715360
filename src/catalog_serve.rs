//! `floe catalog serve`: resolves flags into a [`CatalogConfig`] and runs
//! the server until a signal.

use std::path::Path;
use std::time::Duration;

use floe_catalog::{AuthConfig, CatalogConfig, S3Options, Secret};

use crate::cli::ServeArgs;
use crate::error::{Error, Result};

/// Turns a warehouse flag into a URL: local paths become absolute
/// `file://` URLs (the folder is created), URLs pass through.
pub fn warehouse_url(value: &str) -> Result<String> {
    if value.contains("://") {
        return Ok(value.to_string());
    }
    let path = Path::new(value);
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        context: format!("cannot create warehouse folder {value}"),
        source,
    })?;
    let abs = std::fs::canonicalize(path).map_err(|source| Error::Io {
        context: format!("cannot resolve warehouse folder {value}"),
        source,
    })?;
    let abs = abs
        .to_str()
        .ok_or_else(|| Error::Config(format!("warehouse path {value:?} is not valid UTF-8")))?;
    Ok(format!("file://{abs}"))
}

/// Builds the server configuration from flags and the AWS environment.
pub fn resolve(args: &ServeArgs) -> Result<CatalogConfig> {
    let warehouse = warehouse_url(&args.warehouse)?;
    let db_url = match &args.db {
        Some(db) => db.clone(),
        None => CatalogConfig::default_db_url(&warehouse).ok_or_else(|| {
            Error::Config(format!(
                "--db is required for the warehouse {warehouse}: give sqlite:///path/catalog.db or a postgres:// URL"
            ))
        })?,
    };
    if !(db_url.starts_with("sqlite:")
        || db_url.starts_with("postgres://")
        || db_url.starts_with("postgresql://"))
    {
        return Err(Error::Config(format!(
            "unsupported --db {:?}: use sqlite://PATH or postgres://...",
            redact_url(&db_url)
        )));
    }
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
        retry: crate::store::current_retry(),
        ..S3Options::default()
    }
    .with_env_credentials();
    let s3 = S3Options {
        region: s3.region.clone().or_else(|| Some("us-east-1".to_string())),
        ..s3
    };
    let auth = AuthConfig {
        token: args
            .token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        client: match (&args.client_id, &args.client_secret) {
            (Some(id), Some(secret)) => Some((id.clone(), Secret::new(secret.clone()))),
            _ => None,
        },
        token_ttl: Duration::from_secs(args.token_ttl_secs.max(1)),
    };
    if !args.listen.ip().is_loopback() && !auth.enabled() {
        if !args.insecure_no_auth {
            return Err(Error::Config(format!(
                "--listen {} reaches beyond this machine and there is no --token or --client-id: anyone who can reach it could change every table. Add authentication, or pass --insecure-no-auth if the network is private (a compose network)",
                args.listen
            )));
        }
        tracing::warn!(
            listen = %args.listen,
            "listening beyond loopback without authentication (--insecure-no-auth)"
        );
    }
    Ok(CatalogConfig {
        listen: args.listen,
        warehouse,
        name: args.name.clone(),
        db_url,
        s3,
        vend_credentials: args.vend_credentials,
        auth,
        max_body_bytes: args.max_body_bytes,
        limits: floe_catalog::ConnectionLimits {
            max_connections: args.max_connections.max(1),
            read_timeout: args.read_timeout,
        },
    })
}

/// Hides a password in a database URL for messages.
fn redact_url(url: &str) -> String {
    // Query strings may carry `password=`; the user part ends at the last `@`.
    let url = url.split('?').next().unwrap_or_default();
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: &ServeArgs) -> Result<()> {
    let config = resolve(args)?;
    let warehouse = config.warehouse.clone();
    let db = redact_url(&config.db_url);
    let running = floe_catalog::spawn(config).await?;
    tracing::info!(uri = %running.uri(), %warehouse, %db, "catalog ready");
    if let Some(path) = &args.ready_file {
        std::fs::write(path, running.addr().to_string()).map_err(|source| Error::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })?;
    }
    wait_for_signal().await?;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    let io = |source| Error::Io {
        context: "cannot install signal handler".into(),
        source,
    };
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(io)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(io)?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite:///x.db"), "sqlite:///x.db");
        assert_eq!(redact_url("postgres://u:p@ss@h/db"), "postgres://***@h/db");
        assert_eq!(redact_url("postgres://h/db?password=x"), "postgres://h/db");
    }

    #[test]
    fn serving_beyond_loopback_needs_auth_or_an_explicit_flag() {
        use clap::Parser;
        let dir = tempfile::tempdir().expect("tempdir");
        let warehouse = dir.path().display().to_string();
        let serve = |extra: &[&str]| {
            let mut argv = vec![
                "floe",
                "catalog",
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--warehouse",
                warehouse.as_str(),
            ];
            argv.extend_from_slice(extra);
            let cli = crate::cli::Cli::try_parse_from(argv).expect("flags parse");
            let crate::cli::Command::Catalog(crate::cli::CatalogCommand::Serve(args)) = cli.command
            else {
                panic!("not serve");
            };
            resolve(&args)
        };
        let err = serve(&[]).expect_err("refused").to_string();
        assert!(err.contains("--insecure-no-auth"), "{err}");
        assert!(serve(&["--token", "t0ken-for-test"]).is_ok());
        assert!(serve(&["--insecure-no-auth"]).is_ok());
    }
}
