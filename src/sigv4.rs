//! AWS Signature Version 4 for REST catalog requests (AWS S3 Tables and
//! Glue style, and S3-compatible servers that embed an Iceberg catalog).
//! The `iceberg` crate's REST client has no SigV4, so floe signs its own
//! requests: canonical request → string to sign → HMAC chain, as AWS
//! specifies, with the path encoded a second time for every service but
//! `s3` (what botocore, and so pyiceberg, does).

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Credentials and scope for signing.
#[derive(Clone)]
pub struct SigV4 {
    access_key_id: String,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// Signing region, e.g. `us-east-1`.
    pub region: String,
    /// Signing name (service), e.g. `s3tables` or `glue`.
    pub service: String,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("access_key_id", &self.access_key_id)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding of everything but unreserved characters (and `/`
/// when `keep_slash`).
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl SigV4 {
    /// Signs with explicit credentials.
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        region: String,
        service: String,
    ) -> Self {
        Self {
            access_key_id,
            secret_access_key: Secret::new(secret_access_key),
            session_token: session_token.map(Secret::new),
            region,
            service,
        }
    }

    /// Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_SESSION_TOKEN`.
    pub fn from_env(region: String, service: String) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Self::new(id, secret, var("AWS_SESSION_TOKEN"), region, service)),
            _ => Err(Error::Config(
                "[catalog] sigv4 = true needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
            )),
        }
    }

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` (with a session token) and `authorization`.
    /// `headers` are the other headers sent that must be signed (at least
    /// `host`), lower-case names.
    pub fn sign(
        &self,
        method: &str,
        url: &reqwest::Url,
        headers: &[(String, String)],
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Vec<(String, String)> {
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let payload = sha256_hex(body);
        let mut added = vec![
            ("x-amz-date".to_string(), amz_date.clone()),
            ("x-amz-content-sha256".to_string(), payload.clone()),
        ];
        if let Some(t) = &self.session_token {
            added.push(("x-amz-security-token".to_string(), t.expose().to_string()));
        }
        let mut signed: Vec<(String, String)> = headers
            .iter()
            .chain(added.iter())
            .map(|(k, v)| {
                (
                    k.to_ascii_lowercase(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect();
        signed.sort();
        let authorization = self.authorization(method, url, &signed, &payload, &amz_date);
        added.push(("authorization".to_string(), authorization));
        added
    }

    fn authorization(
        &self,
        method: &str,
        url: &reqwest::Url,
        signed: &[(String, String)],
        payload: &str,
        amz_date: &str,
    ) -> String {
        let path = if url.path().is_empty() {
            "/"
        } else {
            url.path()
        };
        // The path as sent is already percent-encoded once; AWS services
        // other than S3 sign it encoded again.
        let canonical_uri = if self.service == "s3" {
            path.to_string()
        } else {
            uri_encode(path, true)
        };
        let mut query: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        query.sort();
        let canonical_query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
        let signed_headers = signed
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(";");
        let canonical_request = format!(
            "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload}"
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical_request.as_bytes())
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_access_key.expose()).as_bytes(),
            date,
        );
        let k_region = hmac(&k_date, &self.region);
        let k_service = hmac(&k_region, &self.service);
        let k_signing = hmac(&k_service, "aws4_request");
        let signature = hex(&hmac(&k_signing, &string_to_sign));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla`.
    #[test]
    fn matches_the_aws_test_suite_vanilla_get() {
        let signer = SigV4::new(
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            None,
            "us-east-1".into(),
            "service".into(),
        );
        let url = reqwest::Url::parse("https://example.amazonaws.com/").expect("url");
        let signed = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let auth = signer.authorization("GET", &url, &signed, &sha256_hex(b""), "20150830T123600Z");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn encodes_paths_twice_except_for_s3() {
        assert_eq!(
            uri_encode("/v1/namespaces/a%1Fb", true),
            "/v1/namespaces/a%251Fb"
        );
        assert_eq!(uri_encode("a b/c", false), "a%20b%2Fc");
    }
}
