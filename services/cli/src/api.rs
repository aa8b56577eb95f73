//! The gateway's HTTP API as the CLI uses it: JSON in and out, problems
//! (RFC 9457) turned into [`ApiError`]s that know their exit status.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The process's exit status, as documented in `--help` and docs/cli.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Failed = 1,
    Usage = 2,
    NotFound = 3,
    Auth = 4,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status.
    #[error("{status}: {detail}{}", rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Problem { status: u16, detail: String, rule: Option<String> },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: the answer is not the JSON expected: {message}")]
    Decode { url: String, message: String },
    #[error("no API URL: give --url, set LANDLORD_URL, or choose a context (`landlord context set`)")]
    NoUrl,
}

impl ApiError {
    pub fn exit(&self) -> Exit {
        match self {
            ApiError::Problem { status: 404, .. } => Exit::NotFound,
            ApiError::Problem { status: 401 | 403, .. } => Exit::Auth,
            ApiError::NoUrl => Exit::Usage,
            _ => Exit::Failed,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Problem { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// Percent-encodes a query value or path segment (RFC 3986 unreserved kept).
pub fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Api {
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        // LANDLORD_TLS_CA_FILE: extra trust anchors, as for the services.
        let roots = landlord_runtime::http::ExtraRoots::from_env(&landlord_runtime::Env::process())
            .map_err(|e| ApiError::Transport { url: url.to_owned(), message: e.to_string() })?;
        let client = landlord_runtime::http::client_builder(&roots)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ApiError::Transport { url: url.to_owned(), message: e.to_string() })?;
        Ok(Self { client, base: url.trim_end_matches('/').to_owned(), token })
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.send(Method::GET, path, None, None).await.map(|(_, body)| body)
    }

    /// Sends `body` (JSON) with an `Idempotency-Key` when given; the status
    /// and the JSON answer (null when empty) of a success.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport =
            |e: reqwest::Error| ApiError::Transport { url: url.clone(), message: landlord_runtime::http::describe(&e) };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                Err(_) if !status.is_success() => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                Err(e) => return Err(ApiError::Decode { url, message: e.to_string() }),
            }
        };
        if status.is_success() {
            return Ok((status, value));
        }
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        let rule = value.get("rule").and_then(Value::as_str).map(str::to_owned);
        Err(ApiError::Problem { status: status.as_u16(), detail, rule })
    }

    /// Every tenant summary the API lists for `status` and `plan`, up to `limit`.
    pub async fn tenants(&self, status: Option<&str>, plan: Option<&str>, limit: usize) -> Result<Vec<Value>> {
        let mut query = Vec::new();
        if let Some(status) = status {
            query.push(format!("status={}", encode(status)));
        }
        if let Some(plan) = plan {
            query.push(format!("plan={}", encode(plan)));
        }
        self.pages("/v1/tenants", &query, limit).await
    }

    /// The `items` of every page of `path` (a `{items, next_cursor}` list),
    /// up to `limit`.
    pub async fn pages(&self, path: &str, query: &[String], limit: usize) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_query = query.to_vec();
            page_query.push(format!("limit={}", limit.saturating_sub(items.len()).clamp(1, 200)));
            if let Some(cursor) = &cursor {
                page_query.push(format!("cursor={}", encode(cursor)));
            }
            let page = self.get(&format!("{path}?{}", page_query.join("&"))).await?;
            if let Some(page_items) = page.get("items").and_then(Value::as_array) {
                items.extend(page_items.iter().cloned());
            }
            cursor = page.get("next_cursor").and_then(Value::as_str).map(str::to_owned);
            if cursor.is_none() || items.len() >= limit {
                items.truncate(limit);
                return Ok(items);
            }
        }
    }

    /// `GET /v1/tenants/{key_or_id}`.
    pub async fn tenant(&self, key_or_id: &str) -> Result<Value> {
        self.get(&format!("/v1/tenants/{}", encode(key_or_id))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_exit_codes() {
        let problem = |status| ApiError::Problem { status, detail: String::new(), rule: None };
        assert_eq!(problem(404).exit(), Exit::NotFound);
        assert_eq!(problem(401).exit(), Exit::Auth);
        assert_eq!(problem(403).exit(), Exit::Auth);
        assert_eq!(problem(409).exit(), Exit::Failed);
        assert_eq!(problem(422).exit(), Exit::Failed);
        assert_eq!(ApiError::NoUrl.exit(), Exit::Usage);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(encode("ACTIVE"), "ACTIVE");
    }
}
