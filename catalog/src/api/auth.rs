//! Bearer-token authentication and the OAuth2 client-credentials token
//! endpoint that pyiceberg (`credential="id:secret"`), Spark and Trino use.
//!
//! Issued tokens are random, held in memory with their expiry, and compared
//! in constant time; a restart invalidates them and clients fetch new ones.
//! Tokens and secrets are never logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Form, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::{AppState, State};
use crate::error::ApiError;

/// Upper bound on live issued tokens; past it the oldest are dropped.
const MAX_LIVE_TOKENS: usize = 100_000;

/// Wrong secrets a client id may send in a row before it is slowed down
/// (a typo or two costs nothing).
const FREE_FAILURES: u32 = 3;
/// Wrong secrets one address may send in a row, whatever client ids they
/// name, before it is slowed down (several clients may share an address).
const FREE_ADDRESS_FAILURES: u32 = 10;
/// The first wait after those, doubling per further failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Client ids whose failures are tracked at once; past it the oldest go.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Issues and checks OAuth2 access tokens.
#[derive(Debug, Default)]
pub(crate) struct TokenIssuer {
    live: Mutex<HashMap<String, Instant>>,
    /// Per client id: wrong secrets in a row, and until when its requests
    /// are refused without being checked.
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl TokenIssuer {
    fn issue(&self, ttl: Duration) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|_, expiry| *expiry > now);
        if live.len() >= MAX_LIVE_TOKENS {
            let mut by_expiry: Vec<(String, Instant)> = live.drain().collect();
            by_expiry.sort_by_key(|(_, e)| *e);
            live.extend(by_expiry.into_iter().skip(MAX_LIVE_TOKENS / 2));
        }
        live.insert(token.clone(), now + ttl);
        token
    }

    /// How long the longest of `who` (a client id's and an address's
    /// keys, see [`Guesser`]) must still wait after its failures (none:
    /// the attempt may be checked now).
    fn blocked_for(&self, who: &[Guesser]) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        who.iter()
            .filter_map(|g| failures.get(&g.key))
            .filter_map(|(_, until)| until.checked_duration_since(now))
            .max()
    }

    /// Counts a wrong secret for each of `who`; past its free failures in
    /// a row, its next attempts wait, doubling up to [`MAX_BACKOFF`].
    fn failed(&self, who: &[Guesser]) {
        for g in who {
            self.failed_one(&g.key, g.free);
        }
    }

    fn failed_one(&self, key: &str, free: u32) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(key) {
            let mut by_time: Vec<(String, (u32, Instant))> = failures.drain().collect();
            by_time.sort_by_key(|(_, (_, until))| *until);
            failures.extend(by_time.into_iter().skip(MAX_TRACKED_CLIENTS / 2));
        }
        let now = Instant::now();
        let entry = failures.entry(key.to_string()).or_insert((0, now));
        entry.0 += 1;
        if entry.0 > free {
            let doublings = (entry.0 - free - 1).min(16);
            let wait = FIRST_BACKOFF
                .saturating_mul(1 << doublings)
                .min(MAX_BACKOFF);
            entry.1 = now + wait;
        }
    }

    /// Forgets the failures of `who` (its secret was right).
    fn succeeded(&self, who: &[Guesser]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for g in who {
            failures.remove(&g.key);
        }
    }

    fn is_live(&self, token: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        // A map lookup hashes the candidate, which leaks nothing useful:
        // tokens are 256 random bits.
        live.get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }
}

/// Who is guessing: a client id, or the address the attempts come from
/// (whatever ids they name), with the failures each may have for free.
#[derive(Debug, Clone)]
struct Guesser {
    key: String,
    free: u32,
}

impl Guesser {
    fn all(client_id: &str, addr: Option<std::net::SocketAddr>) -> Vec<Guesser> {
        let mut who = vec![Guesser {
            key: format!("client:{client_id}"),
            free: FREE_FAILURES,
        }];
        if let Some(addr) = addr {
            who.push(Guesser {
                key: format!("address:{}", addr.ip()),
                free: FREE_ADDRESS_FAILURES,
            });
        }
        who
    }
}

fn eq_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Rejects requests without a valid bearer token when auth is configured.
pub(crate) async fn require_token(
    AxState(state): AxState<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let auth = &state.config.auth;
    let open_path = matches!(req.uri().path(), "/v1/oauth/tokens" | "/healthz");
    if !auth.enabled() || open_path {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()) else {
        return ApiError::unauthorized(
            "Missing bearer token: send 'Authorization: Bearer <token>' (or get one at /v1/oauth/tokens)",
        )
        .into_response();
    };
    let static_ok = auth
        .token
        .as_ref()
        .is_some_and(|t| eq_secret(t.expose(), token));
    if static_ok || state.tokens.is_live(token) {
        next.run(req).await
    } else {
        ApiError::unauthorized("Invalid or expired bearer token").into_response()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The OAuth2 token request (RFC 6749 §4.4).
#[derive(Deserialize)]
pub(crate) struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    subject_token: Option<String>,
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

/// `POST /v1/oauth/tokens`: exchanges client credentials for a token.
pub(crate) async fn issue_token(
    AxState(state): State,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::guard::Peer>>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some((expected_id, expected_secret)) = &state.config.auth.client else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "This catalog has no OAuth2 clients configured",
        );
    };
    let Ok(Form(req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Expected an application/x-www-form-urlencoded token request",
        );
    };
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        // Iceberg Java refreshes its token by exchanging the live one.
        Some(TOKEN_EXCHANGE) => {
            let subject = req.subject_token.as_deref().unwrap_or_default();
            let static_ok = state
                .config
                .auth
                .token
                .as_ref()
                .is_some_and(|t| eq_secret(t.expose(), subject));
            if !(static_ok || state.tokens.is_live(subject)) {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_grant",
                    "The subject token is unknown or expired",
                );
            }
            return token_response(&state);
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Supported grants: client_credentials and token-exchange",
            );
        }
    }
    let (id, secret) = match (req.client_id, req.client_secret) {
        (Some(id), Some(secret)) => (id, secret),
        _ => match basic_credentials(&headers) {
            Some(pair) => pair,
            None => {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "Missing client_id and client_secret",
                );
            }
        },
    };
    // A client id (or an address) that keeps sending wrong secrets waits
    // before its next attempt is even checked: guessing costs time, not
    // just requests.
    let who = Guesser::all(&id, peer.map(|p| ((p.0).0).0));
    if let Some(wait) = state.tokens.blocked_for(&who) {
        let secs = wait.as_secs() + 1;
        let mut response = oauth_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow_down",
            &format!(
                "Too many wrong secrets for this client or from this address; try again in {secs} s"
            ),
        );
        if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        return response;
    }
    if !(eq_secret(&id, expected_id) & eq_secret(&secret, expected_secret.expose())) {
        tracing::warn!(client_id = %id, "rejected OAuth2 client credentials");
        state.tokens.failed(&who);
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Unknown client or wrong secret",
        );
    }
    state.tokens.succeeded(&who);
    token_response(&state)
}

fn token_response(state: &AppState) -> Response {
    let ttl = state.config.auth.token_ttl;
    let token = state.tokens.issue(ttl);
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl.as_secs(),
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_expire() {
        let issuer = TokenIssuer::default();
        let live = issuer.issue(Duration::from_secs(60));
        let dead = issuer.issue(Duration::ZERO);
        assert!(issuer.is_live(&live));
        assert!(!issuer.is_live(&dead));
        assert!(!issuer.is_live("guess"));
    }

    #[test]
    fn decodes_basic_credentials() {
        let mut headers = HeaderMap::new();
        // "client:s%3Acret" → the secret contains a colon, form-encoded.
        headers.insert(
            header::AUTHORIZATION,
            "Basic Y2xpZW50OnMlM0FjcmV0".parse().expect("header"),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("client".to_string(), "s:cret".to_string()))
        );
    }
}
