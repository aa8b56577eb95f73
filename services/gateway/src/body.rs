//! Request bodies: JSON, and said so. A body is read as JSON only when its
//! `Content-Type` is `application/json` (parameters such as `charset`
//! allowed); anything else is refused with 415 before a byte of it is
//! parsed, so a `text/plain` body is never taken for JSON by accident.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::{Problem, Result};

/// 415 unless the request says its body is `application/json`.
pub fn require_json(headers: &HeaderMap) -> Result<()> {
    let raw = headers.get(header::CONTENT_TYPE);
    let essence = raw.and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or("").trim());
    if essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")) {
        return Ok(());
    }
    let said = match raw {
        None => "no Content-Type".to_owned(),
        Some(value) => format!("Content-Type {:?}", String::from_utf8_lossy(value.as_bytes())),
    };
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        format!("the request body must be JSON sent as Content-Type: application/json; this request has {said}"),
    )
    .with_rule("content_type.json"))
}

/// The body as `T`: 415 unless it is declared JSON, 400 if it does not parse.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T> {
    require_json(headers)?;
    serde_json::from_slice(body)
        .map_err(|error| Problem::bad_request("malformed-body", format!("the request body is not valid: {error}")))
}

/// The body as `T`, or `T::default()` when there is none (an optional
/// body): a body that is there must be declared JSON and parse.
pub fn json_or_default<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &Bytes) -> Result<T> {
    if body.is_empty() { Ok(T::default()) } else { json(headers, body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(content_type: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_json_is_read_as_json() {
        for ok in ["application/json", "Application/JSON", "application/json; charset=utf-8"] {
            assert!(require_json(&with(Some(ok))).is_ok(), "{ok}");
        }
        for refused in [None, Some("text/plain"), Some("application/jsonx"), Some("application/x-www-form-urlencoded")]
        {
            let problem = require_json(&with(refused)).unwrap_err();
            assert_eq!((problem.status, problem.rule.as_deref()), (415, Some("content_type.json")), "{refused:?}");
        }
        let parsed: serde_json::Value = json(&with(Some("application/json")), &Bytes::from_static(b"{}")).unwrap();
        assert_eq!(parsed, serde_json::json!({}));
        assert_eq!(json::<serde_json::Value>(&with(None), &Bytes::from_static(b"{}")).unwrap_err().status, 415);
    }
}
