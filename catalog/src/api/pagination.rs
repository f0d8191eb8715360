//! Opaque page tokens over sorted listings. A token encodes the last key of
//! the previous page, so pages stay correct when items are added or removed
//! between requests (nothing is skipped or repeated that existed throughout).

use serde::Deserialize;

use crate::error::{ApiError, Result};

/// Largest page a client can ask for.
const MAX_PAGE_SIZE: usize = 10_000;

/// `pageToken` and `pageSize` query parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct PageParams {
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    #[serde(rename = "pageSize")]
    page_size: Option<String>,
}

/// One page of a listing sorted by `key`, and the token of the next page.
pub(crate) fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    params: &PageParams,
) -> Result<(Vec<T>, Option<String>)> {
    let size = match params.page_size.as_deref() {
        None | Some("") => None,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid pageSize {s:?}: expected an integer from 1 to {MAX_PAGE_SIZE}"
                )));
            }
        },
    };
    let after = match params.page_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(decode(token).ok_or_else(|| {
            ApiError::bad_request(
                "Invalid pageToken: use the next-page-token of a previous response",
            )
        })?),
    };
    let mut rest: Vec<T> = match &after {
        Some(after) => items.into_iter().filter(|i| &key(i) > after).collect(),
        None => items,
    };
    match size {
        Some(n) if rest.len() > n => {
            rest.truncate(n);
            let next = rest.last().map(|last| encode(&key(last)));
            Ok((rest, next))
        }
        _ => Ok((rest, None)),
    }
}

fn encode(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(token: Option<&str>, size: Option<&str>) -> PageParams {
        PageParams {
            page_token: token.map(str::to_string),
            page_size: size.map(str::to_string),
        }
    }

    #[test]
    fn walks_every_item_exactly_once() -> Result<()> {
        let items: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
        let mut seen = Vec::new();
        let mut token = None;
        for _ in 0..10 {
            let (page, next) = paginate(
                items.clone(),
                |s| s.clone(),
                &params(token.as_deref(), Some("3")),
            )?;
            seen.extend(page);
            token = next;
            if token.is_none() {
                break;
            }
        }
        assert_eq!(seen, items);
        Ok(())
    }

    #[test]
    fn rejects_bad_sizes_and_tokens() {
        let items = vec!["a".to_string()];
        for (t, s) in [
            (None, Some("0")),
            (None, Some("x")),
            (Some("zz"), None),
            (Some("abc"), None),
        ] {
            assert!(paginate(items.clone(), |s| s.clone(), &params(t, s)).is_err());
        }
    }
}
