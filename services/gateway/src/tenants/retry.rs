//! `POST /v1/tenants/{key}/retry`.

use axum::extract::{Path, State};
use axum::response::Response;
use landlord_contract::{TenantKey, pb};
use landlord_control_plane::outbox::{Outgoing, Relay};

use super::requests::{accepted_response, parse_tier, refuse_taken_domains, requested_subject};
use super::rows::find;
use super::views::Accepted;
use crate::auth::{Caller, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;

/// `POST /v1/tenants/{key}/retry`: a FAILED tenant is provisioned again by
/// a new saga under the same key and tenant id.
pub async fn retry(State(app): State<App>, caller: Caller, Path(key): Path<String>) -> Result<Response> {
    caller.require(WRITE)?;
    let key = TenantKey::parse(&key).map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    // Another tenant's, for a tenant-scoped token: as if there were none.
    let Some(row) = find(&app, key.as_str()).await?.filter(|row| caller.may_see(row.summary.id)) else {
        return Err(Problem::not_found(format!("no tenant has the key {:?}", key.as_str())));
    };
    if row.summary.status != "FAILED" {
        return Err(Problem::conflict(
            "not-retryable",
            format!("tenant {:?} is {}: only a FAILED tenant can be retried", key.as_str(), row.summary.status),
        ));
    }
    let tenant = row.summary.id;
    // One retry per failed saga: a repeated call maps to the same request.
    let sagas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas WHERE tenant_id = $1").bind(tenant).fetch_one(&app.pool).await?;
    let request = pb::TenantRequested {
        idempotency_id: format!("retry:{tenant}:{sagas}"),
        key: key.to_string(),
        display_name: row.summary.display_name.clone(),
        plan: row.summary.plan.clone(),
        tier: parse_tier(Some(&row.summary.tier))? as i32,
        admin: Some(pb::AdminContact {
            email: row.admin_email,
            first_name: row.admin_first_name,
            last_name: row.admin_last_name,
        }),
        domains: row.domains,
        source: format!("gateway:{}", caller.subject),
        labels: row.labels.0.into_iter().collect(),
        retry_of: Some(tenant.to_string()),
    };
    let msg_id = format!("gateway.{tenant}.retry.{sagas}");
    let message = Outgoing::new(requested_subject(&app, &key), msg_id, &request).about(key.as_str(), None);
    let mut tx = app.pool.begin().await?;
    // Its domains may have gone to another tenant since it failed.
    refuse_taken_domains(&mut tx, &request.domains, tenant).await?;
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %key, %tenant, by = %caller.subject, "retry requested");
    Ok(accepted_response(&Accepted {
        tenant_id: tenant,
        key: key.to_string(),
        status_url: format!("/v1/tenants/{tenant}"),
    }))
}
