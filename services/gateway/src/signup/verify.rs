//! `GET /v1/signups/verify?token=…`: the link of the verification mail.
//! A valid token requests the tenant exactly once, as `POST /v1/tenants`
//! does (an `api_requests` row holds the key, `TenantRequested` goes to the
//! outbox in the same transaction); a second click shows the tenant's
//! status. Answers JSON, or a small HTML page when the browser asks for it;
//! refusals are problems (404 unknown, 410 expired, 409 key taken).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use landlord_contract::{Event as _, pb};
use landlord_control_plane::ids::tenant_id;
use landlord_control_plane::outbox::{Outgoing, Relay};
use landlord_control_plane::request::validate;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Signups;
use super::keys::taken;
use super::mail::hash;
use crate::problem::{Problem, Result};
use crate::tenants::Accepted;

#[derive(Debug, Deserialize)]
pub(crate) struct Token {
    #[serde(default)]
    token: String,
}

/// The answer of a followed link.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Verified {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub tenant_id: Uuid,
    pub key: String,
    /// Where to follow the tenant.
    pub status_url: String,
    /// The tenant's status; `REQUESTED` until the orchestrator has taken the request.
    pub status: String,
    /// False when the link had already been followed.
    pub first_visit: bool,
}

type Row = (Uuid, String, String, String, String, OffsetDateTime, Option<OffsetDateTime>, Option<Uuid>);

/// `GET /v1/signups/verify?token=…` (public).
pub(crate) async fn verify(
    State(signups): State<Signups>,
    headers: HeaderMap,
    Query(Token { token }): Query<Token>,
) -> Result<Response> {
    let unknown = || Problem::not_found("this verification link is unknown or was replaced by a newer one");
    if token.is_empty() || token.len() > 128 {
        return Err(unknown());
    }
    let app = &signups.app;
    let mut tx = app.pool.begin().await?;
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, email, company_name, tenant_key, plan, expires_at, verified_at, tenant_id
         FROM signups WHERE token_sha256 = $1 FOR UPDATE",
    )
    .bind(hash(&token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, email, company_name, key, plan, expires_at, verified_at, tenant)) = row else {
        return Err(unknown());
    };
    if let (Some(_), Some(tenant)) = (verified_at, tenant) {
        tx.rollback().await?;
        return answer(&signups, &headers, tenant, &key, false).await;
    }
    if expires_at < OffsetDateTime::now_utc() {
        return Err(Problem::new(
            StatusCode::GONE,
            "signup-expired",
            "this verification link has expired; ask for a new one (POST /v1/signups/resend) or sign up again",
        ));
    }
    let idempotency_id = format!("signup:{id}");
    let request = pb::TenantRequested {
        idempotency_id: idempotency_id.clone(),
        key: key.clone(),
        display_name: company_name,
        plan,
        admin: Some(pb::AdminContact { email: email.clone(), ..Default::default() }),
        source: "signup".to_owned(),
        ..Default::default()
    };
    // The plan may have left the plans file since the sign-up.
    let valid = validate(&request, &app.plans).map_err(|r| Problem::invalid(&r.rule, r.reason))?;
    let tenant = tenant_id(&idempotency_id);
    let accepted = Accepted { tenant_id: tenant, key: key.clone(), status_url: format!("/v1/tenants/{tenant}") };
    let taken_meanwhile = || {
        Problem::conflict(
            "tenant-key-taken",
            format!(
                "tenant key {key:?} was taken since the sign-up; nothing was created: sign up again with another key"
            ),
        )
        .with_rule("tenant_key.duplicate")
    };
    // A tombstone's request lets go of the key, as for POST /v1/tenants.
    sqlx::query(
        "DELETE FROM api_requests r USING tenants t
         WHERE r.tenant_key = $1 AND t.id = r.tenant_id AND t.status = 'DELETED'",
    )
    .bind(&key)
    .execute(&mut *tx)
    .await?;
    if taken(&mut *tx, &key).await? {
        return Err(taken_meanwhile());
    }
    let inserted = sqlx::query(
        "INSERT INTO api_requests (idempotency_key, body_sha256, tenant_id, tenant_key, response, requested_by)
         VALUES ($1, $2, $3, $4, $5, 'signup') ON CONFLICT DO NOTHING",
    )
    .bind(&idempotency_id)
    .bind(hash(&idempotency_id))
    .bind(tenant)
    .bind(&key)
    .bind(SqlJson(&accepted))
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Err(taken_meanwhile());
    }
    let message = Outgoing::new(
        app.namespace.event_subject(&valid.key, pb::TenantRequested::KIND),
        format!("signup.{id}.requested"),
        &request,
    )
    .about(&key, None);
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[message]).await?;
    sqlx::query("UPDATE signups SET verified_at = now(), tenant_id = $2 WHERE id = $1")
        .bind(id)
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(%id, key, %tenant, "sign-up verified, tenant requested");
    answer(&signups, &headers, tenant, &key, true).await
}

async fn answer(
    signups: &Signups,
    headers: &HeaderMap,
    tenant: Uuid,
    key: &str,
    first_visit: bool,
) -> Result<Response> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1")
        .bind(tenant)
        .fetch_optional(&signups.app.pool)
        .await?;
    let verified = Verified {
        tenant_id: tenant,
        key: key.to_owned(),
        status_url: format!("/v1/tenants/{tenant}"),
        status: status.unwrap_or_else(|| "REQUESTED".to_owned()),
        first_visit,
    };
    let wants_html =
        headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|accept| accept.contains("text/html"));
    if !wants_html {
        return Ok(Json(verified).into_response());
    }
    let said = if first_visit { "Your email is confirmed" } else { "This link was already used" };
    Ok(Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{said}</title></head><body>\
         <h1>{said}</h1><p>Your tenant <code>{key}</code> is being set up (status: {status}).</p>\
         <p>Follow it at <a href=\"{url}\">{url}</a>; a welcome mail follows once it is ready.</p></body></html>",
        key = escape(key),
        status = escape(&verified.status),
        url = escape(&verified.status_url),
    ))
    .into_response())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
