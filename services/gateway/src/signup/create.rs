//! `POST /v1/signups` and `POST /v1/signups/resend`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use landlord_contract::pb;
use landlord_control_plane::outbox::Relay;
use landlord_control_plane::request::validate;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Signups;
use super::keys::taken;
use super::limit::too_many;
use super::mail::{Lead, message, new_token, public_url};
use crate::problem::{Problem, Result};

/// The body of `POST /v1/signups`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    pub email: String,
    pub company_name: String,
    /// The wanted tenant key.
    pub key: String,
    pub plan: String,
    /// A honeypot a person never sees: must be empty.
    #[serde(default)]
    pub website: String,
}

/// The body of `POST /v1/signups/resend`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    pub email: String,
    pub key: String,
}

/// The 202 of both: the same whether a mail was sent or not (a bot, or a
/// re-send of a sign-up that does not exist, learns nothing).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SignUpAccepted {
    /// `verification_sent`.
    pub status: &'static str,
    pub email: String,
}

fn accepted(email: &str) -> Response {
    (StatusCode::ACCEPTED, Json(SignUpAccepted { status: "verification_sent", email: email.to_owned() }))
        .into_response()
}

fn ttl_after(now: OffsetDateTime, ttl: Duration) -> OffsetDateTime {
    now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY)
}

fn no_token() -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "no random token could be drawn; try again")
}

/// `POST /v1/signups` (public).
pub(crate) async fn sign_up(
    State(signups): State<Signups>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let body: SignUp = crate::body::json(&headers, &body)?;
    signups.submissions.take(client.ip(), "sign-ups")?;
    if !body.website.is_empty() {
        tracing::info!(client = %client.ip(), "sign-up with the honeypot filled: ignored");
        return Ok(accepted(&body.email));
    }
    // The rules of POST /v1/tenants: key, plan, email, display name.
    let request = pb::TenantRequested {
        idempotency_id: "signup:check".to_owned(),
        key: body.key.clone(),
        display_name: body.company_name.clone(),
        plan: body.plan.clone(),
        admin: Some(pb::AdminContact { email: body.email.clone(), ..Default::default() }),
        source: "signup".to_owned(),
        ..Default::default()
    };
    let valid = validate(&request, &signups.app.plans).map_err(|r| Problem::invalid(&r.rule, r.reason))?;
    let key = valid.key.as_str();
    let mut tx = signups.app.pool.begin().await?;
    if taken(&mut *tx, key).await? {
        return Err(Problem::conflict("tenant-key-taken", format!("tenant key {key:?} is already taken"))
            .with_rule("tenant_key.duplicate"));
    }
    let recent: Vec<OffsetDateTime> = sqlx::query_scalar(
        "SELECT created_at FROM signups WHERE lower(email) = lower($1) AND created_at > now() - interval '1 hour'
         ORDER BY created_at",
    )
    .bind(&body.email)
    .fetch_all(&mut *tx)
    .await?;
    if recent.len() >= usize::try_from(signups.settings.per_email).unwrap_or(0) {
        let wait = recent.first().map_or(Duration::from_secs(3600), |oldest| {
            let ends = *oldest + time::Duration::HOUR - OffsetDateTime::now_utc();
            Duration::try_from(ends).unwrap_or(Duration::from_secs(1))
        });
        return Err(too_many(
            format!("more than {} sign-ups for this email in an hour", signups.settings.per_email),
            wait,
        ));
    }
    let (token, hash) = new_token().ok_or_else(no_token)?;
    let id = Uuid::new_v4();
    let expires_at = ttl_after(OffsetDateTime::now_utc(), signups.settings.ttl);
    sqlx::query(
        "INSERT INTO signups (id, email, company_name, tenant_key, plan, token_sha256, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(&body.email)
    .bind(&valid.display_name)
    .bind(key)
    .bind(&body.plan)
    .bind(&hash)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let lead = Lead { id, email: &body.email, company_name: &valid.display_name, key, plan: &body.plan, send: 1 };
    let mail = message(&signups, &public_url(&signups, &headers), &lead, &token, expires_at);
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[mail]).await?;
    tx.commit().await?;
    signups.app.dispatcher.dispatch(pending).await;
    tracing::info!(%id, key, "sign-up stored, verification mail asked for");
    Ok(accepted(&body.email))
}

/// `POST /v1/signups/resend` (public): a new link for the newest
/// unverified sign-up of this email and key; the previous link dies.
pub(crate) async fn resend(
    State(signups): State<Signups>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let body: Resend = crate::body::json(&headers, &body)?;
    signups.submissions.take(client.ip(), "sign-ups and re-sends")?;
    let mut tx = signups.app.pool.begin().await?;
    let found: Option<(Uuid, String, String, String, i32)> = sqlx::query_as(
        "SELECT id, email, company_name, plan, sends FROM signups
         WHERE lower(email) = lower($1) AND tenant_key = $2 AND verified_at IS NULL
         ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
    )
    .bind(&body.email)
    .bind(&body.key)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((id, email, company_name, plan, sends)) = found else {
        return Ok(accepted(&body.email));
    };
    if sends > signups.settings.resends {
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "resend-limit",
            format!(
                "the verification mail was already re-sent {} times; sign up again later",
                signups.settings.resends
            ),
        ));
    }
    let (token, hash) = new_token().ok_or_else(no_token)?;
    let expires_at = ttl_after(OffsetDateTime::now_utc(), signups.settings.ttl);
    sqlx::query("UPDATE signups SET token_sha256 = $2, expires_at = $3, sends = sends + 1 WHERE id = $1")
        .bind(id)
        .bind(&hash)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
    let lead = Lead { id, email: &email, company_name: &company_name, key: &body.key, plan: &plan, send: sends + 1 };
    let mail = message(&signups, &public_url(&signups, &headers), &lead, &token, expires_at);
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[mail]).await?;
    tx.commit().await?;
    signups.app.dispatcher.dispatch(pending).await;
    tracing::info!(%id, send = sends + 1, "sign-up verification mail re-sent");
    Ok(accepted(&body.email))
}
