//! The background task that looks admins up in Clerk's Backend API
//! ([`super::backend`]) and records what it finds
//! ([`super::organizations::admin_found`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Lookup, LookupError};
use super::organizations::admin_found;
use crate::state::App;

/// Organizations waiting for their admin, with the `created_by` of their
/// stored `organization.created`.
async fn waiting(app: &App) -> sqlx::Result<Vec<Lookup>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT DISTINCT ON (o.org_id) o.org_id, d.payload #>> '{data,created_by}'
         FROM clerk_organizations o
         JOIN webhook_deliveries d
           ON d.event_type = 'organization.created' AND d.payload #>> '{data,id}' = o.org_id
         WHERE o.requested_at IS NULL AND o.rejected_rule IS NULL AND o.organization_at IS NOT NULL
           AND o.admin_email IS NULL
         ORDER BY o.org_id, d.received_at DESC
         LIMIT 10000",
    )
    .fetch_all(&app.pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(org_id, user_id)| user_id.filter(|u| !u.is_empty()).map(|user_id| Lookup { org_id, user_id }))
        .collect())
}

/// Runs lookups until `shutdown`: those waiting from before a restart,
/// then each one handed over, one at a time per organization.
pub async fn run(
    app: App,
    backend: Arc<Backend>,
    mut lookups: mpsc::UnboundedReceiver<Lookup>,
    shutdown: CancellationToken,
) {
    let mut in_flight = HashSet::new();
    let mut tasks = JoinSet::new();
    let start = |lookup: Lookup, tasks: &mut JoinSet<String>, in_flight: &mut HashSet<String>| {
        if in_flight.insert(lookup.org_id.clone()) {
            tasks.spawn(find_admin(app.clone(), backend.clone(), lookup));
        }
    };
    match waiting(&app).await {
        Ok(resumed) => {
            if !resumed.is_empty() {
                tracing::info!(count = resumed.len(), "looking up the admins of organizations still waiting");
            }
            for lookup in resumed {
                start(lookup, &mut tasks, &mut in_flight);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot list the organizations waiting for their admin"),
    }
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(lookup) = lookups.recv() => start(lookup, &mut tasks, &mut in_flight),
            Some(done) = tasks.join_next() => {
                if let Ok(org_id) = done {
                    in_flight.remove(&org_id);
                }
            }
        }
    }
}

/// One organization's lookup, to the end; returns its id.
async fn find_admin(app: App, backend: Arc<Backend>, lookup: Lookup) -> String {
    let Lookup { org_id, user_id } = lookup;
    match backend.user_with_retries(&user_id).await {
        Ok(admin) => {
            // The database may be briefly away too: the admin is not lost for that.
            let mut wait = Duration::from_millis(200);
            for attempt in 1..=5 {
                match admin_found(&app, &org_id, &admin).await {
                    Ok(outcome) => {
                        tracing::info!(org_id, user_id, outcome, "admin found through Clerk's Backend API");
                        break;
                    }
                    Err(problem) => {
                        tracing::warn!(org_id, attempt, detail = %problem.detail, "cannot record the admin");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
        Err(LookupError::GiveUp(reason)) => {
            tracing::warn!(org_id, user_id, %reason, "no admin from Clerk's Backend API; the organization waits for an org:admin membership");
        }
        Err(LookupError::Retryable { reason, .. }) => {
            tracing::warn!(org_id, user_id, %reason, "Clerk's Backend API kept failing; the organization waits for an org:admin membership (or a restart)");
        }
    }
    org_id
}
