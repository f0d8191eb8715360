//! Secrets: one redacting type for every credential floe holds (catalog
//! tokens and client secrets, S3 keys, API keys), and the rule that tells
//! which property values are credentials, so that no `Debug`, log line,
//! report or error shows one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use floe_catalog::{Secret, redact, remember_secret};

/// Environment variables that hold credentials floe or its dependencies
/// read by themselves.
const SECRET_ENV: [&str; 4] = [
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "FLOE_CATALOG_TOKEN",
    "FLOE_CATALOG_CREDENTIAL",
];

/// Remembers the credentials of the environment (and the secret half of a
/// `client_id:secret` credential) so that no log line shows them.
pub fn remember_environment() {
    for name in SECRET_ENV {
        if let Ok(value) = std::env::var(name) {
            remember_secret(&value);
            if let Some((_, secret)) = value.split_once(':') {
                remember_secret(secret);
            }
        }
    }
}

/// Remembers the values of `props` whose keys name a credential.
pub fn remember_properties<'a>(props: impl IntoIterator<Item = (&'a String, &'a String)>) {
    for (k, v) in props {
        if is_secret_key(k) {
            remember_secret(v);
        }
    }
}

/// Standard error for the log subscriber, with every credential hidden
/// (see [`redact`]): whatever a dependency prints at whatever level.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

/// One log write through [`RedactingStderr`].
#[derive(Debug)]
pub struct RedactingWriter(std::io::Stderr);

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(std::io::stderr())
    }
}

/// Whether a property or parameter named `key` holds a credential
/// (`s3.secret-access-key`, `s3.session-token`, `token`, `password`,
/// `credential`, `apikey`, ...). Access key ids are not secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "secret",
        "token",
        "password",
        "passwd",
        "credential",
        "apikey",
        "api-key",
        "api_key",
        "signature",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Query parameters that carry a credential in URLs besides those
/// [`is_secret_key`] recognises.
const SECRET_QUERY_NAMES: [&str; 6] = ["key", "sig", "code", "x-amz-credential", "auth", "access"];

/// `url` as it may be recorded (`_source`, reports) and shown: without a
/// user name or password and without query parameters that carry a
/// credential. What is dropped is remembered as a secret (see
/// [`redact`]). Anything that is not a URL is returned as it is.
pub fn public_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_string();
    };
    let mut changed = false;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        if let Some(p) = parsed.password() {
            remember_secret(p);
        }
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        changed = true;
    }
    if parsed.query().is_some() {
        let secret = |k: &str| {
            is_secret_key(k) || SECRET_QUERY_NAMES.contains(&k.to_ascii_lowercase().as_str())
        };
        let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        if pairs.iter().any(|(k, _)| secret(k)) {
            for (_, v) in pairs.iter().filter(|(k, _)| secret(k)) {
                remember_secret(v);
            }
            let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| !secret(k)).collect();
            parsed.set_query(None);
            if !kept.is_empty() {
                parsed
                    .query_pairs_mut()
                    .extend_pairs(kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            changed = true;
        }
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_string()
    }
}

/// A property map that prints with its credentials as `***`.
pub struct Redacted<'a, M>(pub &'a M);

fn entries<'a>(
    f: &mut fmt::Formatter<'_>,
    items: impl Iterator<Item = (&'a String, &'a String)>,
) -> fmt::Result {
    let mut map = f.debug_map();
    for (k, v) in items {
        if is_secret_key(k) {
            map.entry(k, &"***");
        } else {
            map.entry(k, v);
        }
    }
    map.finish()
}

impl fmt::Debug for Redacted<'_, HashMap<String, String>> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<(&String, &String)> = self.0.iter().collect();
        items.sort();
        entries(f, items.into_iter())
    }
}

impl fmt::Debug for Redacted<'_, BTreeMap<String, String>> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        entries(f, self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_recognised_and_hidden() {
        for k in [
            "s3.secret-access-key",
            "s3.session-token",
            "token",
            "apikey",
            "X-Api-Key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["s3.access-key-id", "s3.endpoint", "warehouse", "prefix"] {
            assert!(!is_secret_key(k), "{k}");
        }
        let m = HashMap::from([
            ("s3.secret-access-key".to_string(), "hunter2".to_string()),
            ("s3.endpoint".to_string(), "http://x".to_string()),
        ]);
        let shown = format!("{:?}", Redacted(&m));
        assert!(
            !shown.contains("hunter2") && shown.contains("http://x"),
            "{shown}"
        );
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }

    #[test]
    fn recorded_urls_lose_their_credentials() {
        assert_eq!(
            public_url("https://user:pa55-w0rd-x@host.example/f.csv?apikey=k3y-value-1&day=2"),
            "https://host.example/f.csv?day=2"
        );
        assert!(!redact("GET https://host/f.csv?apikey=k3y-value-1").contains("k3y-value-1"));
        assert_eq!(public_url("s3://bucket/a/b.csv"), "s3://bucket/a/b.csv");
        assert_eq!(public_url("/local/path.csv"), "/local/path.csv");
    }

    #[test]
    fn logs_lose_remembered_secrets_and_dependency_credentials() {
        let _ = Secret::new("remembered-77d1");
        let line = "auth remembered-77d1 StaticCredentialProvider { access_key_id: \"AKID\", secret_access_key: \"never-told-0a9f\", session_token: Some(\"tok-55e2\") }";
        let shown = redact(line);
        for secret in ["remembered-77d1", "never-told-0a9f", "tok-55e2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("access_key_id: \"AKID\""), "{shown}");
    }
}
