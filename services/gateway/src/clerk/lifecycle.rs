//! `organization.updated` and `organization.deleted`: the organization's
//! tenant updated (its display name follows the organization's name) or
//! offboarded with the default grace period (`LANDLORD_DELETION_GRACE`),
//! asked of the control plane like the API's operations
//! ([`crate::tenants::operate`]), with the idempotency id `clerk:<svix-id>`,
//! requested by `clerk`.
//!
//! The tenant is found through the organization's row — the key the
//! bridge requested for it — and must be live (not DELETED) and made from
//! that organization (its idempotency id or its label), since a key can
//! pass to another tenant once a tombstone frees it. `organization.deleted`
//! carries only a stub (`{"id", "object", "deleted": true}`), so that is
//! all it can be looked up by.
//!
//! What becomes of a delivery:
//! - a repeat of an `svix-id` already recorded: acknowledged, nothing asked;
//! - no live tenant (the organization never became one, or it was purged):
//!   acknowledged and recorded, so Svix stops; a deleted organization still
//!   waiting for its admin is marked rejected (`organization.deleted`), so a
//!   late membership does not make a tenant of it;
//! - its tenant requested moments ago and not yet taken up by the
//!   orchestrator, or busy with another operation: 409, not recorded — Svix
//!   delivers it again later;
//! - any other refusal (not allowed from the tenant's status, nothing
//!   changed): acknowledged and recorded with why;
//! - else the operation is requested, then the delivery recorded. A crash
//!   between the two is harmless: the redelivery asks again under the same
//!   idempotency id, which names the same saga.

use landlord_control_plane::Operation;
use landlord_control_plane::outbox::Outgoing;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::problem::{Problem, Result};
use crate::state::App;
use crate::tenants::operate::{OperationRequest, Refused, RequestError, TenantPatch, ask, refusal};

/// How long after its request a tenant not yet taken up counts as on its
/// way (a delivery for it is retried) rather than never coming.
const IN_FLIGHT_SECONDS: f64 = 300.0;

/// What a lifecycle delivery asked for, and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "ClerkOperation")]
pub struct OperationOutcome {
    /// `update` or `offboard`.
    pub operation: String,
    /// `requested`, `repeated` (the same svix-id asked before),
    /// `no_live_tenant`, `ignored` (nothing to change) or `refused`.
    #[schemars(extend("enum" = ["requested", "repeated", "no_live_tenant", "ignored", "refused"]))]
    pub result: String,
    pub tenant_key: Option<String>,
    #[schemars(with = "Option<String>", extend("format" = "uuid"))]
    pub saga_id: Option<Uuid>,
    /// Why it was refused or ignored.
    pub detail: Option<String>,
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

/// The organization's live tenant, or whether one is still on its way.
enum Found {
    Tenant(String),
    InFlight,
    Nothing,
}

async fn organization_tenant(app: &App, org_id: &str) -> Result<Found> {
    let row: Option<(Option<String>, bool)> = sqlx::query_as(
        "SELECT t.key,
                coalesce(o.requested_at > now() - make_interval(secs => $2), false) AND o.rejected_rule IS NULL
                AND NOT EXISTS (SELECT 1 FROM tenants d WHERE d.key = o.tenant_key
                                   AND d.idempotency_id = 'clerk:' || o.org_id)
         FROM clerk_organizations o
         LEFT JOIN tenants t ON t.key = o.tenant_key AND t.status <> 'DELETED'
              AND (t.idempotency_id = 'clerk:' || o.org_id OR t.labels ->> 'clerk.organization_id' = o.org_id)
         WHERE o.org_id = $1",
    )
    .bind(org_id)
    .bind(IN_FLIGHT_SECONDS)
    .fetch_optional(&app.pool)
    .await?;
    Ok(match row {
        Some((Some(key), _)) => Found::Tenant(key),
        Some((None, true)) => Found::InFlight,
        _ => Found::Nothing,
    })
}

/// A deleted organization that never became a tenant will not become one.
async fn close_waiting(app: &App, org_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE clerk_organizations SET rejected_rule = 'organization.deleted',
                rejected_reason = 'the Clerk organization was deleted before it became a tenant'
         WHERE org_id = $1 AND requested_at IS NULL AND rejected_rule IS NULL",
    )
    .bind(org_id)
    .execute(&app.pool)
    .await?;
    Ok(())
}

/// `organization.updated` or `organization.deleted` (`kind`), verified:
/// what became of it, or `None` for a delivery seen before.
pub(super) async fn organization_changed(
    app: &App,
    svix_id: &str,
    kind: &str,
    data: &Value,
    event: Outgoing,
) -> Result<Option<OperationOutcome>> {
    let seen: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE svix_id = $1)")
        .bind(svix_id)
        .fetch_one(&app.pool)
        .await?;
    if seen {
        tracing::debug!(svix_id, "webhook delivery seen before");
        return Ok(None);
    }
    let org_id =
        text(data, "/id").ok_or_else(|| Problem::bad_request("malformed-body", format!("{kind} without data.id")))?;
    let deleted = kind == "organization.deleted";
    let operation = if deleted { Operation::Offboard } else { Operation::Update };
    let outcome = |result: &str, key: Option<&str>, saga: Option<Uuid>, detail: Option<String>| OperationOutcome {
        operation: operation.to_string(),
        result: result.to_owned(),
        tenant_key: key.map(str::to_owned),
        saga_id: saga,
        detail,
    };
    let name = text(data, "/name");
    if let Some(name) = name.as_deref().filter(|_| !deleted) {
        sqlx::query("UPDATE clerk_organizations SET name = $2 WHERE org_id = $1")
            .bind(&org_id)
            .bind(name)
            .execute(&app.pool)
            .await?;
    }
    let done = match organization_tenant(app, &org_id).await? {
        Found::InFlight => {
            return Err(Problem::conflict(
                "tenant-not-yet-created",
                format!("the tenant of organization {org_id:?} is requested and not created yet; deliver again later"),
            ));
        }
        Found::Nothing => {
            if deleted {
                close_waiting(app, &org_id).await?;
            }
            outcome("no_live_tenant", None, None, Some(format!("organization {org_id:?} has no live tenant")))
        }
        Found::Tenant(key) if !deleted && name.is_none() => {
            outcome("ignored", Some(&key), None, Some("the organization has no name to update".into()))
        }
        Found::Tenant(key) => {
            let request = OperationRequest {
                tenant_key: key.clone(),
                operation,
                idempotency_id: format!("clerk:{svix_id}"),
                requested_by: "clerk".into(),
                reason: if deleted { "Clerk organization deleted" } else { "Clerk organization updated" }.into(),
                patch: (!deleted).then(|| TenantPatch { display_name: name, ..TenantPatch::default() }),
                purge_at: deleted.then(|| OffsetDateTime::now_utc() + app.deletion_grace.default),
                export: true,
            };
            match ask(app, request).await {
                Ok(requested) => {
                    let result = if requested.repeated { "repeated" } else { "requested" };
                    outcome(result, Some(&key), Some(requested.saga_id), None)
                }
                // Retried by Svix once the running operation is done.
                Err(RequestError::Refused(refused @ Refused::Conflict { .. })) => return Err(refusal(&key, refused)),
                Err(RequestError::Refused(Refused::NothingChanged)) => {
                    outcome("ignored", Some(&key), None, Some("the tenant already has this name".into()))
                }
                Err(RequestError::Refused(refused)) => {
                    let problem = refusal(&key, refused);
                    outcome("refused", Some(&key), None, Some(problem.detail.clone()))
                }
                Err(RequestError::Database(error)) => return Err(error.into()),
            }
        }
    };
    let written = landlord_control_plane::outbox::write_for_new_delivery(&app.pool, svix_id, kind, &event).await?;
    let Some(pending) = written else { return Ok(None) };
    let dispatcher = app.dispatcher.clone();
    tokio::spawn(async move { dispatcher.dispatch(vec![pending]).await });
    tracing::info!(svix_id, kind, org = org_id, result = done.result, tenant = ?done.tenant_key, "clerk event accepted");
    Ok(Some(done))
}
