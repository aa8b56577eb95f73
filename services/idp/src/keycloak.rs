//! A small client for the Keycloak Admin REST API: the admin token, one
//! request at a time, and what a failed request means for a saga step.
//!
//! The admin token comes from `POST {url}/realms/{admin realm}/protocol/openid-connect/token`
//! (client credentials, or the `admin-cli` password grant), is cached and
//! refreshed shortly before `expires_in` runs out; a `401` on an admin call
//! (a token revoked or expired early) drops it and retries the call once
//! with a new one.
//!
//! Callers get every answer back with its status and interpret `201`, `404`
//! and `409` themselves: what they mean depends on the call (a `404` is
//! "already gone" to a delete and a misconfiguration to a create). Answers
//! no caller expects become a [`KeycloakError`], which knows whether it is
//! worth retrying.

use std::time::{Duration, Instant};

use landlord_runtime::StepFailure;
use landlord_runtime::http::{self, ExtraRoots};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

pub type Result<T, E = KeycloakError> = std::result::Result<T, E>;

/// How the worker signs in to Keycloak's admin API.
#[derive(Clone)]
pub enum AdminCredentials {
    /// A confidential client with a service account (the production choice).
    ClientCredentials { client_id: String, client_secret: String },
    /// A user of the admin realm through `admin-cli` (development).
    Password { client_id: String, username: String, password: String },
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ClientCredentials { client_id, .. } => write!(f, "ClientCredentials({client_id}, secret hidden)"),
            Self::Password { client_id, username, .. } => {
                write!(f, "Password({client_id}, {username}, password hidden)")
            }
        }
    }
}

/// Where Keycloak is and how to reach it.
#[derive(Debug, Clone)]
pub struct KeycloakSettings {
    /// Base URL, e.g. `https://sso.example.com` (or `…/auth` for old layouts).
    pub url: Url,
    /// Realm the admin credentials live in (`master`).
    pub admin_realm: String,
    pub credentials: AdminCredentials,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Trust anchors beyond the system's (`LANDLORD_TLS_CA_FILE`).
    pub roots: ExtraRoots,
}

/// A request that did not get an answer its caller can use.
#[derive(Debug, thiserror::Error)]
pub enum KeycloakError {
    #[error("Keycloak is unreachable ({what}): {detail}")]
    Unreachable { what: String, detail: String },
    #[error("Keycloak did not answer in time ({what})")]
    Timeout { what: String },
    #[error("Keycloak answered {status} to {what}: {message}")]
    Status { what: String, status: u16, message: String },
    #[error("unexpected answer from Keycloak to {what}: {problem}")]
    Protocol { what: String, problem: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    /// The object a lifecycle action would change or delete carries
    /// another tenant's marker (or none): nothing was touched.
    #[error("{0}")]
    ConflictingOwner(String),
    /// The object a lifecycle action would change does not exist.
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Secret(#[from] landlord_runtime::secrets::SecretError),
}

impl KeycloakError {
    /// Worth trying again later: the network, timeouts, 5xx, 429 and 401.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 401,
            Self::Protocol { .. }
            | Self::Conflict(_)
            | Self::Refused(_)
            | Self::ConflictingOwner(_)
            | Self::Missing(_) => false,
            Self::Secret(e) => !matches!(e, landlord_runtime::secrets::SecretError::Decrypt(_)),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "keycloak_unreachable",
            Self::Timeout { .. } => "keycloak_timeout",
            Self::Status { status: 429, .. } => "keycloak_throttled",
            Self::Status { status: 401, .. } => "keycloak_unauthorized",
            Self::Status { status: 403, .. } => "keycloak_forbidden",
            Self::Status { status, .. } if *status >= 500 => "keycloak_unavailable",
            Self::Status { .. } => "keycloak_rejected",
            Self::Protocol { .. } => "keycloak_protocol",
            Self::Conflict(_) => "conflict",
            Self::Refused(_) => "refused",
            Self::ConflictingOwner(_) => "conflicting_owner",
            Self::Missing(_) => "not_found",
            Self::Secret(_) => "secret_store",
        }
    }

    /// An answer nobody expected to `what`.
    pub fn unexpected(what: &str, reply: &Reply) -> Self {
        Self::Status { what: what.to_owned(), status: reply.status.as_u16(), message: reply.message() }
    }
}

impl From<KeycloakError> for StepFailure {
    fn from(error: KeycloakError) -> Self {
        let code = error.code();
        if error.retryable() {
            StepFailure::retryable(code, error.to_string())
        } else {
            StepFailure::permanent(code, error.to_string())
        }
    }
}

/// An answer from the admin API.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Value,
}

impl Reply {
    /// Keycloak's error text: `errorMessage` (admin resources), else
    /// `error` and `error_description` (OAuth and not-found answers).
    pub fn message(&self) -> String {
        if let Some(message) = self.body["errorMessage"].as_str() {
            return message.to_owned();
        }
        match (self.body["error"].as_str(), self.body["error_description"].as_str()) {
            (Some(error), Some(description)) => format!("{error}: {description}"),
            (Some(error), None) => error.to_owned(),
            _ => self.status.canonical_reason().unwrap_or("no message").to_owned(),
        }
    }

    /// The id at the end of a `201`'s `Location` header.
    pub fn created_id(&self, what: &str) -> Result<String> {
        self.location
            .as_deref()
            .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| KeycloakError::Protocol { what: what.to_owned(), problem: "201 without a Location".into() })
    }
}

#[derive(Debug)]
struct Token {
    value: String,
    refresh_at: Instant,
}

/// The admin API client; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Keycloak {
    http: reqwest::Client,
    settings: KeycloakSettings,
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Keycloak {
    pub fn new(settings: KeycloakSettings) -> Result<Self> {
        let http = http::client_builder(&settings.roots)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| KeycloakError::Protocol { what: "building the HTTP client".into(), problem: e.to_string() })?;
        Ok(Self { http, settings, token: tokio::sync::Mutex::new(None) })
    }

    /// `{url}/admin/realms/{segments…}?{query}`, each segment encoded.
    pub fn admin_url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.settings.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["admin", "realms"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends an admin request with a valid token; on `401` gets a new token
    /// and sends it once more. `what` names the call in errors.
    pub async fn send(&self, method: Method, url: Url, body: Option<Body<'_>>, what: &str) -> Result<Reply> {
        let mut retried = false;
        loop {
            let token = self.token(what).await?;
            let mut request = self.http.request(method.clone(), url.clone()).bearer_auth(&token);
            request = match &body {
                Some(Body::Json(value)) => request.json(value),
                // Keycloak reads some bodies (an organization member's id) as the bare string.
                Some(Body::Text(text)) => {
                    request.header(reqwest::header::CONTENT_TYPE, "application/json").body(text.to_string())
                }
                None => request,
            };
            let reply = self.execute(request, what).await?;
            if reply.status == StatusCode::UNAUTHORIZED && !retried {
                tracing::debug!(what, "admin token refused; fetching a new one");
                self.forget(&token).await;
                retried = true;
                continue;
            }
            return Ok(reply);
        }
    }

    async fn execute(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Reply> {
        let response = request.send().await.map_err(|e| transport(what, &e))?;
        let status = response.status();
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| transport(what, &e))?;
        // Error pages from proxies are not JSON; keep them as text.
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                let text = String::from_utf8_lossy(&bytes);
                serde_json::json!({ "errorMessage": text.chars().take(200).collect::<String>() })
            })
        };
        Ok(Reply { status, location, body })
    }

    async fn forget(&self, token: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }

    /// The cached token, or a new one when it is missing or about to expire.
    async fn token(&self, what: &str) -> Result<String> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(token.value.clone());
        }
        let fresh = self.fetch_token(what).await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    async fn fetch_token(&self, what: &str) -> Result<Token> {
        let what = format!("the admin token (for {what})");
        let mut url = self.settings.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["realms", &self.settings.admin_realm, "protocol", "openid-connect", "token"]);
        }
        let form = match &self.settings.credentials {
            AdminCredentials::ClientCredentials { client_id, client_secret } => form_encode(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", client_secret),
            ]),
            AdminCredentials::Password { client_id, username, password } => form_encode(&[
                ("grant_type", "password"),
                ("client_id", client_id),
                ("username", username),
                ("password", password),
            ]),
        };
        let started = Instant::now();
        let request =
            self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(form);
        let reply = self.execute(request, &what).await?;
        if reply.status != StatusCode::OK {
            return Err(KeycloakError::unexpected(&what, &reply));
        }
        let value = reply.body["access_token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
            KeycloakError::Protocol { what: what.clone(), problem: "no access_token in the answer".into() }
        })?;
        let lifetime = Duration::from_secs(reply.body["expires_in"].as_u64().unwrap_or(60));
        // Refresh before it runs out: a quarter of its life early, at most 30s.
        let margin = (lifetime / 4).min(Duration::from_secs(30));
        tracing::debug!(expires_in = lifetime.as_secs(), "got an admin token");
        Ok(Token { value: value.to_owned(), refresh_at: started + lifetime - margin })
    }
}

/// A request body.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Json(&'a Value),
    Text(&'a str),
}

fn transport(what: &str, error: &reqwest::Error) -> KeycloakError {
    if error.is_timeout() {
        return KeycloakError::Timeout { what: what.to_owned() };
    }
    KeycloakError::Unreachable { what: what.to_owned(), detail: http::describe(error) }
}

/// `application/x-www-form-urlencoded`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut scratch = Url::parse("http://form.invalid/").unwrap_or_else(|_| unreachable!("a constant URL parses"));
    scratch.query_pairs_mut().extend_pairs(pairs);
    scratch.query().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_know_whether_a_retry_can_help() {
        let status = |status| KeycloakError::Status { what: "x".into(), status, message: String::new() };
        for retryable in [500, 502, 503, 429, 401] {
            assert!(status(retryable).retryable(), "{retryable}");
        }
        for permanent in [400, 403, 405, 422] {
            assert!(!status(permanent).retryable(), "{permanent}");
        }
        assert!(KeycloakError::Timeout { what: "x".into() }.retryable());
        assert!(!KeycloakError::Conflict("taken".into()).retryable());
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(form_encode(&[("a", "b c"), ("p", "&=+")]), "a=b+c&p=%26%3D%2B");
    }
}
