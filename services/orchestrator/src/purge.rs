//! The purge timer (docs/lifecycle.md, "Offboarding, grace period, restore,
//! purge"): a tenant whose grace period is over is purged.
//!
//! The timer is a query, not a schedule kept in memory: every few seconds,
//! the tenants DELETION_SCHEDULED whose `purge_at` has passed (index
//! `tenants_purge_due`) — so it survives restarts of every service, and
//! several replicas may run it. It asks for the purge like any requester
//! would, through `landlord_control_plane::operations::request`, under the
//! idempotency id `purge:<tenant id>:<purge_at unix>`: replicas asking at
//! once, or a round repeated before the purge started, name one saga.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use landlord_control_plane::Operation;
use landlord_control_plane::operations::{self, OperationRequest, Refused, RequestError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Core;

/// Who asks for a purge at the end of a grace period, and why.
pub const REQUESTED_BY: &str = "landlord";
pub const REASON: &str = "grace period ended";

/// Most purges asked for in one round.
const ROUND: i64 = 100;

/// Asks for the purges that are due, every `interval`, until shutdown.
pub(crate) async fn timer(core: Arc<Core>, interval: Duration, shutdown: CancellationToken) {
    // Refusals already logged, so a tenant that cannot be purged (its
    // export missing) is reported once per purge date, not every round.
    let mut reported = HashSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = purge_due(&core, &mut reported).await {
            tracing::warn!(%error, "looking for purges due failed; retrying");
        }
    }
}

/// The idempotency id of the purge of `tenant` due at `purge_at`.
pub fn idempotency_id(tenant: Uuid, purge_at: OffsetDateTime) -> String {
    format!("purge:{tenant}:{}", purge_at.unix_timestamp())
}

async fn purge_due(core: &Core, reported: &mut HashSet<String>) -> sqlx::Result<()> {
    let due: Vec<(Uuid, String, OffsetDateTime)> = sqlx::query_as(
        "SELECT id, key, purge_at FROM tenants
         WHERE status = 'DELETION_SCHEDULED' AND purge_at <= now() ORDER BY purge_at LIMIT $1",
    )
    .bind(ROUND)
    .fetch_all(&core.pool)
    .await?;
    for (tenant, key, purge_at) in due {
        let idempotency_id = idempotency_id(tenant, purge_at);
        let request = OperationRequest {
            tenant_key: key.clone(),
            operation: Operation::Purge,
            idempotency_id: idempotency_id.clone(),
            requested_by: REQUESTED_BY.to_owned(),
            reason: REASON.to_owned(),
            patch: None,
            purge_at: None,
            export: true,
        };
        match operations::request(&core.pool, &core.namespace, &core.plans, request).await {
            Ok((requested, pending)) => {
                if !requested.repeated {
                    tracing::info!(%key, saga = %requested.saga_id, "grace period over: purge requested");
                }
                core.dispatcher.dispatch(pending).await;
            }
            // Asked for in an earlier round, and not started yet.
            Err(RequestError::Refused(Refused::Conflict { .. })) => {}
            Err(RequestError::Refused(refused)) => {
                if reported.insert(idempotency_id) {
                    tracing::warn!(%key, reason = %refused, "the purge due cannot start");
                }
            }
            Err(RequestError::Database(error)) => return Err(error),
        }
    }
    Ok(())
}
