//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every refusal names what was wrong: `type` is a stable URN per kind of
//! problem, `detail` is a sentence for people, and validation problems carry
//! the rule that was broken in `rule`.
//!
//! That holds for answers the handlers never see too: axum's own refusals
//! (a body over the size limit, a method the route does not have, a path
//! segment that is not UTF-8, …) are plain text or empty, and
//! [`every_error_is_a_problem`], the outermost layer, rewrites any error
//! answer that is not already `application/problem+json` into one, keeping
//! its status and headers such as `Allow`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;

pub type Result<T, E = Problem> = std::result::Result<T, E>;

/// A problem, boxed: it travels in every handler's `Err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(Box<Details>);

impl std::ops::Deref for Problem {
    type Target = Details;

    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

/// The members of `application/problem+json`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "Problem")]
pub struct Details {
    /// A stable URN per kind of problem, e.g. `urn:landlord:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status code, repeated.
    pub status: u16,
    /// What was wrong, in a sentence for people.
    pub detail: String,
    /// The broken rule, for validation problems (e.g. `tenant_key.too_short`).
    #[serde(skip_serializing_if = "Option::is_none")]
    // Left out when there is none, never null.
    #[schemars(with = "String")]
    pub rule: Option<String>,
    /// For a 409 because another operation is at work on the tenant: that
    /// operation (`suspend`, `offboard`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub operation: Option<String>,
    /// For a 409 because another operation is at work on the tenant: its saga.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub saga_id: Option<uuid::Uuid>,
    /// For 401s: sent back as `WWW-Authenticate` too.
    #[serde(skip)]
    pub authenticate: Option<String>,
    /// For 429s: seconds until a retry can succeed.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(Details {
            kind: format!("urn:landlord:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            rule: None,
            operation: None,
            saga_id: None,
            authenticate: None,
            retry_after: None,
        }))
    }

    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    pub fn bad_request(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, detail)
    }

    /// A request that parsed but broke a rule.
    pub fn invalid(rule: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail).with_rule(rule)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn conflict(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    /// 401: who the caller is could not be established.
    pub fn unauthenticated(kind: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let mut problem = Self::new(StatusCode::UNAUTHORIZED, kind, detail.clone());
        let description = detail.replace('"', "'");
        problem.authenticate = Some(format!("Bearer error=\"invalid_token\", error_description=\"{description}\""));
        problem
    }

    /// 403: the caller is known but may not do this.
    pub fn forbidden(kind: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, kind, detail)
    }

    /// A dependency failed; the details go to the log, not to the caller.
    pub fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, what, "request failed");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("{what} is unavailable; try again"))
    }
}

impl From<sqlx::Error> for Problem {
    fn from(error: sqlx::Error) -> Self {
        Self::unavailable("the control-plane database", &error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(value) = self.authenticate.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// The largest error body of axum's that is read back to become a
/// problem's detail (its rejections are one sentence).
const REWRITTEN_BODY_LIMIT: usize = 4096;

/// Layer: an error answer that is not problem+json becomes one. `body_limit`
/// is the configured body size limit, named in 413s.
pub async fn every_error_is_a_problem(State(body_limit): State<usize>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    let said = axum::body::to_bytes(body, REWRITTEN_BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let problem = problem_for(status, &method, &allow, &said, body_limit);
    let mut rewritten = problem.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

/// The problem an error answer of axum's stands for.
fn problem_for(status: StatusCode, method: &Method, allow: &str, said: &str, body_limit: usize) -> Problem {
    let said_or = |fallback: &str| if said.is_empty() { fallback.to_owned() } else { said.to_owned() };
    match status {
        StatusCode::NOT_FOUND => Problem::not_found(said_or("no such endpoint")),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "method-not-allowed",
            format!("{method} is not allowed here; this endpoint accepts: {allow}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            "body-too-large",
            format!("the request body is larger than the limit of {body_limit} bytes"),
        )
        .with_rule("body.too_large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            Problem::new(status, "unsupported-media-type", said_or("unsupported media type"))
                .with_rule("content_type.json")
        }
        // A 5xx says nothing of its cause to the caller (the log does).
        _ if status.is_server_error() => {
            tracing::error!(status = status.as_u16(), said, "error answer without a problem");
            Problem::new(status, "internal", "the request could not be served; try again")
        }
        _ => {
            let title = status.canonical_reason().unwrap_or("error").to_ascii_lowercase().replace(' ', "-");
            Problem::new(status, &title, said_or(status.canonical_reason().unwrap_or("refused")))
        }
    }
}
