//! The endpoint registry: `POST/GET /v1/webhook-endpoints`,
//! `GET/PATCH/DELETE /v1/webhook-endpoints/{id}`,
//! `POST /v1/webhook-endpoints/{id}/secret/rotate`. Registering, updating,
//! rotating and deleting need `tenants:write`, reading `tenants:read`.
//!
//! An endpoint's URL is `https://`; `http://` only to a loopback address
//! (a sidecar, a test), since a delivery in clear text across a network
//! could be read and replayed within the signature's tolerance. Credentials
//! in the URL are refused: every reader of the registry would see them.
//! The signing secret is generated here and answered once, on
//! registration or rotation; it is never shown again.
//!
//! A rotation works as Svix's does: the new secret signs every delivery
//! from then on, and the one it replaces signs them too, next to it in the
//! same header, for [`SECRET_ROTATION_GRACE`]; a receiver that verifies
//! with either secret accepts them meanwhile, so it can switch secrets
//! without refusing a delivery. Only the last replaced secret is kept: a
//! second rotation within the window ends the older one's at once.

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use landlord_contract::EventKind;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{Caller, READ, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;
use crate::svix::SigningSecret;

/// The event-type wildcard: every lifecycle event.
pub const EVERY_EVENT: &str = "*";

/// How long the secret a rotation replaces keeps signing deliveries next
/// to the new one: Svix's 24 hours, time for receivers to take up the new
/// secret.
pub const SECRET_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 200;

/// The body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where events are POSTed: `https://…`, or `http://` to a loopback
    /// address.
    #[schemars(length(max = 2048), extend("format" = "uri"))]
    pub url: String,
    /// The event names to send (`activated`, `step_failed`, …), or `["*"]`
    /// for every lifecycle event.
    #[schemars(length(min = 1))]
    pub event_types: Vec<String>,
    /// For people: what the endpoint is for.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub description: String,
}

/// The body of `PATCH /v1/webhook-endpoints/{id}`: what changes; a field
/// left out (or null) stays as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "WebhookEndpointUpdate")]
pub struct EndpointUpdate {
    /// Where events are POSTed from now on (pending deliveries too), under
    /// the rule of registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), extend("format" = "uri"))]
    pub url: Option<String>,
    /// The event names to send from now on, or `["*"]`; deliveries already
    /// made are sent whatever their type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub event_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub description: Option<String>,
    /// `false`: no deliveries are made for it and pending ones wait;
    /// `true`: events are delivered again (those consumed meanwhile are
    /// not) and pending ones resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The answer of a rotation: the new secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "RotatedWebhookSecret")]
pub struct RotatedSecret {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub id: Uuid,
    /// `whsec_<base64>`: signs every delivery from now on. Not shown again.
    pub secret: String,
    /// Until then deliveries are signed with the previous secret too.
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub previous_secret_until: OffsetDateTime,
}

/// How many of an endpoint's deliveries are in each state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// A registered endpoint (its secret is not shown after registration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "WebhookEndpoint")]
pub struct EndpointView {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub id: Uuid,
    pub url: String,
    /// Event names, or `["*"]`.
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    /// After a rotation: until when deliveries are signed with the
    /// previous secret too; null when only the current one signs.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub previous_secret_until: Option<OffsetDateTime>,
    /// Deliveries kept (finished ones for `LANDLORD_WEBHOOK_RETENTION`), by status.
    pub deliveries: DeliveryCounts,
}

/// The 201 answer of a registration: the endpoint and its signing secret,
/// shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "CreatedWebhookEndpoint")]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_<base64>`: verify deliveries with it as with any Svix
    /// signing secret. Not shown again.
    pub secret: String,
}

/// `GET /v1/webhook-endpoints`, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "WebhookEndpoints")]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
}

/// `url` if an endpoint may have it.
pub fn check_url(raw: &str) -> Result<String> {
    let raw = raw.trim();
    let invalid = |rule: &str, why: &str| Problem::invalid(rule, format!("url {raw:?} {why}"));
    if raw.len() > MAX_URL {
        return Err(invalid("webhook_endpoint.url_too_long", &format!("is longer than {MAX_URL} bytes")));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| invalid("webhook_endpoint.url", &format!("is not a URL: {e}")))?;
    let Some(host) = url.host_str() else {
        return Err(invalid("webhook_endpoint.url", "has no host"));
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "webhook_endpoint.url_credentials",
            "carries credentials; every reader of the registry would see them (the signature authenticates deliveries)",
        ));
    }
    // An IPv6 host is written in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(invalid("webhook_endpoint.https", "must be https:// (http:// only to a loopback address)"));
        }
        _ => return Err(invalid("webhook_endpoint.https", "must be an https:// URL")),
    }
    Ok(url.to_string())
}

/// The event types an endpoint may want: known event names, each once, or
/// the wildcard alone.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>> {
    if types.is_empty() {
        return Err(Problem::invalid(
            "webhook_endpoint.event_types_empty",
            "event_types names no event; name some, or [\"*\"] for all",
        ));
    }
    if types.iter().any(|t| t == EVERY_EVENT) {
        if types.len() > 1 {
            return Err(Problem::invalid(
                "webhook_endpoint.event_types_wildcard",
                "\"*\" already means every event; give it alone",
            ));
        }
        return Ok(vec![EVERY_EVENT.to_owned()]);
    }
    let mut checked: Vec<String> = Vec::with_capacity(types.len());
    for name in types {
        if EventKind::from_name(name).is_none() {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            return Err(Problem::invalid(
                "webhook_endpoint.event_type",
                format!("event type {name:?} is not one of: {}, or \"*\"", known.join(", ")),
            ));
        }
        if !checked.contains(name) {
            checked.push(name.clone());
        }
    }
    Ok(checked)
}

/// A description as kept: trimmed, short, without control characters.
fn check_description(raw: &str) -> Result<String> {
    let description = raw.trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION || description.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "webhook_endpoint.description",
            format!("description must be at most {MAX_DESCRIPTION} characters, without control characters"),
        ));
    }
    Ok(description)
}

/// The id in a path: an endpoint can only be found by a UUID.
pub(super) fn endpoint_id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| Problem::not_found(format!("no webhook endpoint {raw:?}")))
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    description: String,
    enabled: bool,
    created_at: OffsetDateTime,
    previous_secret_until: Option<OffsetDateTime>,
    pending: i64,
    delivered: i64,
    failed: i64,
}

impl From<EndpointRow> for EndpointView {
    fn from(row: EndpointRow) -> Self {
        Self {
            id: row.id,
            url: row.url,
            event_types: row.event_types,
            description: row.description,
            enabled: row.enabled,
            created_at: row.created_at,
            previous_secret_until: row.previous_secret_until,
            deliveries: DeliveryCounts { pending: row.pending, delivered: row.delivered, failed: row.failed },
        }
    }
}

/// Endpoints with their delivery counts; `$1` one endpoint, or null for all.
const SELECT: &str = "
    SELECT e.id, e.url, e.event_types, e.description, e.enabled, e.created_at,
           CASE WHEN e.previous_secret_until > now() THEN e.previous_secret_until END AS previous_secret_until,
           count(d.id) FILTER (WHERE d.status = 'pending') AS pending,
           count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered,
           count(d.id) FILTER (WHERE d.status = 'failed') AS failed
    FROM outbound_endpoints e LEFT JOIN outbound_deliveries d ON d.endpoint_id = e.id
    WHERE $1::uuid IS NULL OR e.id = $1
    GROUP BY e.id
    ORDER BY e.created_at, e.id";

/// `POST /v1/webhook-endpoints` `{url, event_types, description?}`: 201
/// with the secret.
pub async fn create(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Bytes) -> Result<Response> {
    caller.require(WRITE)?;
    let body: NewEndpoint = crate::body::json(&headers, &body)?;
    let url = check_url(&body.url)?;
    let event_types = check_event_types(&body.event_types)?;
    let description = check_description(&body.description)?;
    let secret = new_secret()?;
    let id = Uuid::now_v7();
    let created_at: OffsetDateTime = sqlx::query_scalar(
        "INSERT INTO outbound_endpoints (id, url, event_types, description, secret)
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(id)
    .bind(&url)
    .bind(&event_types)
    .bind(&description)
    .bind(&secret)
    .fetch_one(&app.pool)
    .await?;
    tracing::info!(endpoint = %id, %url, ?event_types, by = %caller.subject, "webhook endpoint registered");
    let endpoint = EndpointView {
        id,
        url,
        event_types,
        description,
        enabled: true,
        created_at,
        previous_secret_until: None,
        deliveries: DeliveryCounts::default(),
    };
    let mut response = (StatusCode::CREATED, Json(CreatedEndpoint { endpoint, secret })).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/webhook-endpoints/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/webhook-endpoints`.
pub async fn list(State(app): State<App>, caller: Caller) -> Result<Json<EndpointList>> {
    caller.require(READ)?;
    let rows: Vec<EndpointRow> = sqlx::query_as(SELECT).bind(None::<Uuid>).fetch_all(&app.pool).await?;
    Ok(Json(EndpointList { items: rows.into_iter().map(EndpointView::from).collect() }))
}

/// `GET /v1/webhook-endpoints/{id}`.
pub async fn get(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Result<Json<EndpointView>> {
    caller.require(READ)?;
    let id = endpoint_id(&id)?;
    let row: Option<EndpointRow> = sqlx::query_as(SELECT).bind(id).fetch_optional(&app.pool).await?;
    row.map(|row| Json(row.into())).ok_or_else(|| Problem::not_found(format!("no webhook endpoint {id}")))
}

/// `PATCH /v1/webhook-endpoints/{id}` `{url?, event_types?, description?,
/// enabled?}`: 200 with the endpoint as it now is. Each field is checked as
/// on registration; one statement changes them all, so a sender claiming
/// meanwhile sees the endpoint before or after, never half of it.
pub async fn update(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EndpointView>> {
    caller.require(WRITE)?;
    let id = endpoint_id(&id)?;
    let body: EndpointUpdate = crate::body::json(&headers, &body)?;
    if body == EndpointUpdate::default() {
        return Err(Problem::invalid(
            "webhook_endpoint.update_empty",
            "the update changes nothing: give url, event_types, description or enabled",
        ));
    }
    let url = body.url.as_deref().map(check_url).transpose()?;
    let event_types = body.event_types.as_deref().map(check_event_types).transpose()?;
    let description = body.description.as_deref().map(check_description).transpose()?;
    let updated = sqlx::query(
        "UPDATE outbound_endpoints SET
             url = coalesce($2, url),
             event_types = coalesce($3, event_types),
             description = coalesce($4, description),
             enabled = coalesce($5, enabled)
         WHERE id = $1",
    )
    .bind(id)
    .bind(&url)
    .bind(&event_types)
    .bind(&description)
    .bind(body.enabled)
    .execute(&app.pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Err(Problem::not_found(format!("no webhook endpoint {id}")));
    }
    tracing::info!(
        endpoint = %id, url = ?url, event_types = ?event_types, enabled = ?body.enabled, by = %caller.subject,
        "webhook endpoint updated"
    );
    let row: Option<EndpointRow> = sqlx::query_as(SELECT).bind(id).fetch_optional(&app.pool).await?;
    // Deleted between the two statements.
    row.map(|row| Json(row.into())).ok_or_else(|| Problem::not_found(format!("no webhook endpoint {id}")))
}

/// `POST /v1/webhook-endpoints/{id}/secret/rotate`: a new signing secret,
/// answered this once; the replaced one keeps signing next to it for
/// [`SECRET_ROTATION_GRACE`]. One statement swaps them, so two rotations
/// at once leave one secret current and the other previous, never a lost
/// one that still signs.
pub async fn rotate_secret(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>> {
    caller.require(WRITE)?;
    let id = endpoint_id(&id)?;
    let secret = new_secret()?;
    let until: Option<OffsetDateTime> = sqlx::query_scalar(
        "UPDATE outbound_endpoints SET
             previous_secret = secret,
             previous_secret_until = now() + make_interval(secs => $3),
             secret = $2
         WHERE id = $1
         RETURNING previous_secret_until",
    )
    .bind(id)
    .bind(&secret)
    .bind(SECRET_ROTATION_GRACE.as_secs_f64())
    .fetch_optional(&app.pool)
    .await?;
    let Some(previous_secret_until) = until else {
        return Err(Problem::not_found(format!("no webhook endpoint {id}")));
    };
    tracing::info!(endpoint = %id, %previous_secret_until, by = %caller.subject, "webhook signing secret rotated");
    Ok(Json(RotatedSecret { id, secret, previous_secret_until }))
}

/// A new `whsec_…` secret.
fn new_secret() -> Result<String> {
    let (_, secret) = SigningSecret::generate()
        .map_err(|_| Problem::unavailable("the random number generator", &"no randomness for a signing secret"))?;
    Ok(secret)
}

/// `DELETE /v1/webhook-endpoints/{id}`: the endpoint and its deliveries;
/// an attempt in flight finishes, nothing more is sent.
pub async fn delete(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> Result<StatusCode> {
    caller.require(WRITE)?;
    let id = endpoint_id(&id)?;
    let deleted = sqlx::query("DELETE FROM outbound_endpoints WHERE id = $1").bind(id).execute(&app.pool).await?;
    if deleted.rows_affected() == 0 {
        return Err(Problem::not_found(format!("no webhook endpoint {id}")));
    }
    tracing::info!(endpoint = %id, by = %caller.subject, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http_without_credentials() {
        assert_eq!(check_url(" https://hooks.example.com/landlord ").unwrap(), "https://hooks.example.com/landlord");
        for ok in ["http://127.0.0.1:9000/hook", "http://localhost/x", "http://[::1]:8080/", "https://10.0.0.1/"] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, rule) in [
            ("http://hooks.example.com/", "webhook_endpoint.https"),
            ("http://10.0.0.1/", "webhook_endpoint.https"),
            ("ftp://127.0.0.1/", "webhook_endpoint.https"),
            ("hooks.example.com", "webhook_endpoint.url"),
            ("https://user:pw@hooks.example.com/", "webhook_endpoint.url_credentials"),
        ] {
            assert_eq!(check_url(bad).unwrap_err().rule.as_deref(), Some(rule), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert_eq!(check_url(&long).unwrap_err().rule.as_deref(), Some("webhook_endpoint.url_too_long"));
    }

    #[test]
    fn event_types_are_known_names_or_the_wildcard_alone() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            check_event_types(&names(&["activated", "activated", "deleted"])).unwrap(),
            ["activated", "deleted"]
        );
        assert_eq!(check_event_types(&names(&["*"])).unwrap(), ["*"]);
        for (bad, rule) in [
            (names(&[]), "webhook_endpoint.event_types_empty"),
            (names(&["*", "activated"]), "webhook_endpoint.event_types_wildcard"),
            (names(&["activate"]), "webhook_endpoint.event_type"),
        ] {
            assert_eq!(check_event_types(&bad).unwrap_err().rule.as_deref(), Some(rule), "{bad:?}");
        }
    }
}
