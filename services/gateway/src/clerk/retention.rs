//! `webhook_deliveries` pruned: a delivery's `svix_id` is kept only to
//! recognise a redelivery or a replay, and Svix stops retrying after about
//! 28 hours, so rows older than `LANDLORD_CLERK_DELIVERY_RETENTION`
//! (default 7 days) go. The `organization.created` of an organization still
//! waiting for its admin stays: the Backend API lookup reads its
//! `created_by` after a restart ([`super::lookup`]).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement, so a large backlog never holds one long
/// transaction.
const BATCH: i64 = 1000;

/// Deletes the deliveries received more than `retention` ago; returns how
/// many went.
pub async fn prune_deliveries(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let mut pruned = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE svix_id IN (
                 SELECT d.svix_id FROM webhook_deliveries d
                 WHERE d.received_at < now() - make_interval(secs => $1)
                   AND NOT (d.event_type = 'organization.created' AND EXISTS (
                       SELECT 1 FROM clerk_organizations o
                       WHERE o.org_id = d.payload #>> '{data,id}'
                         AND o.requested_at IS NULL AND o.rejected_rule IS NULL))
                 LIMIT $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        pruned += deleted;
        if deleted < BATCH as u64 {
            return Ok(pruned);
        }
    }
}

/// Prunes until `shutdown`, every eighth of the retention (at least every
/// second, at most every hour).
pub async fn prune(pool: PgPool, retention: Duration, shutdown: CancellationToken) {
    let every = (retention / 8).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        match prune_deliveries(&pool, retention).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, ?retention, "clerk webhook deliveries pruned"),
            Err(error) => tracing::warn!(%error, "cannot prune clerk webhook deliveries"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
