//! `POST /v1/tenants`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_contract::pb;
use landlord_control_plane::ids::tenant_id;
use landlord_control_plane::outbox::{Outgoing, Relay};
use landlord_control_plane::request::validate;
use sqlx::types::Json as SqlJson;

use super::requests::{accepted_response, idempotency_key, parse_tier, refuse_taken_domains, requested_subject};
use super::views::{Accepted, CreateTenant};
use crate::auth::{Caller, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

/// `POST /v1/tenants`.
pub async fn create(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Bytes) -> Result<Response> {
    caller.require(WRITE)?;
    // A tenant's own token makes no other tenant (403 says nothing of any).
    caller.require_global("create tenants")?;
    let idempotency_key = idempotency_key(&headers)?;
    let body: CreateTenant = crate::body::json(&headers, &body)?;
    let request = pb::TenantRequested {
        idempotency_id: format!("api:{idempotency_key}"),
        key: body.key.clone(),
        display_name: body.display_name.clone(),
        plan: body.plan.clone(),
        tier: parse_tier(body.tier.as_deref())? as i32,
        admin: Some(pb::AdminContact {
            email: body.admin.email.clone(),
            first_name: body.admin.first_name.clone(),
            last_name: body.admin.last_name.clone(),
        }),
        domains: body.domains.clone(),
        source: format!("gateway:{}", caller.subject),
        labels: body.labels.clone().into_iter().collect(),
        retry_of: None,
    };
    let valid = validate(&request, &app.plans).map_err(|r| Problem::invalid(&r.rule, r.reason))?;
    // The body as parsed, re-serialised: formatting does not make a
    // different request.
    let hash = sha256(&serde_json::to_vec(&body).unwrap_or_default());
    let tenant = tenant_id(&request.idempotency_id);
    let accepted =
        Accepted { tenant_id: tenant, key: valid.key.to_string(), status_url: format!("/v1/tenants/{tenant}") };

    let mut tx = app.pool.begin().await?;
    // A key whose tenant was purged (a DELETED tombstone) is free again
    // (docs/lifecycle.md): the request that made it no longer holds it,
    // unless this is that request repeated, which gets its answer again.
    sqlx::query(
        "DELETE FROM api_requests r USING tenants t
         WHERE r.tenant_key = $1 AND r.idempotency_key <> $2 AND t.id = r.tenant_id AND t.status = 'DELETED'",
    )
    .bind(valid.key.as_str())
    .bind(&idempotency_key)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO api_requests (idempotency_key, body_sha256, tenant_id, tenant_key, response, requested_by)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&idempotency_key)
    .bind(&hash)
    .bind(tenant)
    .bind(valid.key.as_str())
    .bind(SqlJson(&accepted))
    .bind(&caller.subject)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let taken = || {
        Problem::conflict("tenant-key-taken", format!("tenant key {:?} is already taken", valid.key.as_str()))
            .with_rule("tenant_key.duplicate")
    };
    if !inserted {
        // A repeat, possibly concurrent: the insert above waited for the
        // first one to commit. Or another request took the tenant key.
        let stored: Option<(Vec<u8>, SqlJson<Accepted>)> =
            sqlx::query_as("SELECT body_sha256, response FROM api_requests WHERE idempotency_key = $1")
                .bind(&idempotency_key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((stored_hash, response)) = stored else { return Err(taken()) };
        if stored_hash != hash {
            return Err(Problem::invalid(
                "idempotency_key.reused",
                format!("Idempotency-Key {idempotency_key:?} was already used with a different request body"),
            ));
        }
        return Ok(accepted_response(&response.0));
    }
    // Refuse a key taken by another source (Clerk, a service on the
    // broker) now rather than after the broker round trip. A tombstone
    // does not hold its key; an organization's key stays its own.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE key = $1 AND id <> $2 AND status <> 'DELETED')
             OR EXISTS (SELECT 1 FROM clerk_organizations WHERE tenant_key = $1)",
    )
    .bind(valid.key.as_str())
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if exists {
        return Err(taken());
    }
    refuse_taken_domains(&mut tx, &request.domains, tenant).await?;
    let message = Outgoing::new(requested_subject(&app, &valid.key), format!("gateway.{tenant}.requested"), &request)
        .about(valid.key.as_str(), None);
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %valid.key, %tenant, by = %caller.subject, "tenant requested");
    Ok(accepted_response(&accepted))
}
