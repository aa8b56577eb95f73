//! `POST /v1/tenants/{key}/cancel`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_contract::{Action, TenantKey, pb};
use landlord_control_plane::outbox::{Outgoing, Relay};
use uuid::Uuid;

use super::requests::accepted_response;
use super::views::{Accepted, CancelBody};
use crate::auth::{Caller, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;

/// `POST /v1/tenants/{key}/cancel`: stops a running provisioning; what was
/// done is undone and the tenant ends CANCELLED.
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    caller.require(WRITE)?;
    let body: CancelBody = if body.is_empty() { CancelBody::default() } else { crate::body::json(&headers, &body)? };
    let key = TenantKey::parse(&key).map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    let mut tx = app.pool.begin().await?;
    let found: Option<(Uuid, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT t.id, t.status, (SELECT s.id FROM sagas s WHERE s.tenant_id = t.id AND s.state = 'running'
                                  ORDER BY s.created_at DESC LIMIT 1)
         FROM tenants t WHERE t.key = $1",
    )
    .bind(key.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    // Another tenant's, for a tenant-scoped token: as if there were none.
    let Some((tenant, status, running)) = found.filter(|(tenant, ..)| caller.may_see(*tenant)) else {
        return Err(Problem::not_found(format!("no tenant has the key {:?}", key.as_str())));
    };
    let Some(saga) = running else {
        return Err(Problem::conflict(
            "not-cancellable",
            format!("tenant {:?} is {status}: there is no provisioning in progress to cancel", key.as_str()),
        ));
    };
    let command = pb::CancelSaga {
        tenant_key: key.to_string(),
        reason: body.reason.unwrap_or_else(|| "cancelled through the API".to_owned()),
        requested_by: caller.subject.clone(),
        // The saga running now, not whichever runs when the cancel arrives:
        // a cancel delayed past a retry must not stop the retry.
        saga_id: saga.to_string(),
    };
    let cancel = Action::ORCHESTRATOR_CANCEL;
    // One cancel per saga: a repeated call is the same message.
    let message = Outgoing::new(
        app.namespace.command_subject(cancel.service, cancel.name),
        format!("gateway.{saga}.cancel"),
        &command,
    )
    .about(key.as_str(), Some(&saga.to_string()));
    let pending = landlord_control_plane::outbox::write(&mut tx, Relay::Gateway, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %key, %saga, by = %caller.subject, "cancel requested");
    Ok(accepted_response(&Accepted {
        tenant_id: tenant,
        key: key.to_string(),
        status_url: format!("/v1/tenants/{tenant}"),
    }))
}
