//! What the handlers that write a `TenantRequested` or a command share:
//! the Idempotency-Key, the tier, the subject, the 202 answer and the early
//! domain check.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use landlord_contract::{Event as _, TenantKey, pb};
use uuid::Uuid;

use super::views::Accepted;
use crate::problem::{Problem, Result};
use crate::state::App;

/// Required by every route that asks for something.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header: 400 unless there is one of 1 to 200
/// visible ASCII characters.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<String> {
    let missing = || {
        Problem::bad_request(
            "idempotency-key",
            "an Idempotency-Key header (1 to 200 visible ASCII characters) is required",
        )
    };
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    if value.is_empty() || value.len() > 200 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(missing());
    }
    Ok(value.to_owned())
}

pub(super) fn parse_tier(tier: Option<&str>) -> Result<pb::Tier> {
    match tier {
        None => Ok(pb::Tier::Unspecified),
        Some(name) => landlord_control_plane::plans::parse_tier(name).ok_or_else(|| {
            Problem::invalid("tier.unknown", format!("tier {name:?} is not one of: pooled, bridge, silo"))
        }),
    }
}

pub(super) fn accepted_response(accepted: &Accepted) -> Response {
    accepted_at(accepted, &accepted.status_url)
}

/// 202 with `answer`, and `Location: status_url`.
pub(super) fn accepted_at(answer: &impl serde::Serialize, status_url: &str) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(answer)).into_response();
    if let Ok(location) = HeaderValue::from_str(status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

pub(super) fn requested_subject(app: &App, key: &TenantKey) -> String {
    app.namespace.event_subject(key, pb::TenantRequested::KIND)
}

/// Tenant statuses in which a tenant no longer holds its domains.
const GONE: [&str; 3] = ["FAILED", "CANCELLED", "DELETED"];

/// 409 `tenant.domain_taken` if a live tenant (any status but [`GONE`])
/// other than `tenant` lists one of `domains`, compared lower-cased. The
/// answer names the domain, never the tenant that holds it. The
/// orchestrator's intake applies the same rule to requests from every
/// source; this is the early answer for the API. Nothing here proves the
/// caller owns the domain (docs/domains.md).
pub(super) async fn refuse_taken_domains(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    domains: &[String],
    tenant: Uuid,
) -> Result<()> {
    if domains.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = domains.iter().map(|d| d.to_lowercase()).collect();
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT lower(d) FROM tenants t CROSS JOIN LATERAL unnest(t.domains) d
         WHERE t.id <> $2 AND t.status <> ALL($3) AND lower(d) = ANY($1)
         ORDER BY 1 LIMIT 1",
    )
    .bind(&wanted)
    .bind(tenant)
    .bind(&GONE[..])
    .fetch_optional(&mut **tx)
    .await?;
    match taken {
        None => Ok(()),
        Some(domain) => Err(Problem::conflict(
            "domain-taken",
            format!("the domain {domain:?} belongs to another tenant; a domain belongs to one live tenant at a time"),
        )
        .with_rule("tenant.domain_taken")),
    }
}
