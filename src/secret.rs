//! Secrets: one redacting type for every credential floe holds (catalog
//! tokens and client secrets, S3 keys, API keys), and the rule that tells
//! which property values are credentials, so that no `Debug`, log line,
//! report or error shows one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub use floe_catalog::Secret;

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
}
