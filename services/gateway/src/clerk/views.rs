//! Organizations as the API shows them: `GET /v1/clerk/organizations`,
//! the view a webhook answer carries, and the log of overdue ones.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

/// A Clerk organization and whether it became a tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow, JsonSchema)]
#[schemars(rename = "Organization")]
pub struct OrganizationView {
    pub org_id: String,
    pub slug: Option<String>,
    pub name: Option<String>,
    /// The key of the tenant requested for it.
    pub tenant_key: Option<String>,
    pub admin_email: Option<String>,
    /// `waiting_for_organization`, `waiting_for_admin`, `requested` or `rejected`.
    #[schemars(extend("enum" = STATES))]
    pub state: String,
    /// The rule its slug or admin broke, when rejected.
    pub rejected_rule: Option<String>,
    pub rejected_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub requested_at: Option<OffsetDateTime>,
    /// Waiting longer than `LANDLORD_CLERK_ADMIN_WAIT`.
    pub overdue: bool,
}

/// An organization as listed, over [`VIEW_FROM`]. One whose request lost
/// its key to another tenant (the race `free_key` in [`super::organizations`] leaves open: the
/// orchestrator rejected the request) is `rejected` with the rule, and not
/// linked to the tenant that has the key.
const VIEW: &str = "o.org_id, o.slug, o.name, CASE WHEN lost THEN NULL ELSE o.tenant_key END AS tenant_key,
    o.admin_email,
    CASE WHEN o.rejected_rule IS NOT NULL OR lost THEN 'rejected'
         WHEN o.requested_at IS NOT NULL THEN 'requested'
         WHEN o.organization_at IS NULL THEN 'waiting_for_organization'
         ELSE 'waiting_for_admin' END AS state,
    coalesce(o.rejected_rule, CASE WHEN lost THEN 'tenant_key.duplicate' END) AS rejected_rule,
    coalesce(o.rejected_reason, CASE WHEN lost THEN
        format('tenant key %s was taken by another tenant before this organization''s request arrived',
               o.tenant_key) END) AS rejected_reason,
    o.created_at, o.requested_at,
    (o.requested_at IS NULL AND o.rejected_rule IS NULL AND o.created_at < now() - make_interval(secs => $1))
        AS overdue";

/// `lost`: a tenant other than the organization's own has its key (the
/// tenant of an organization has its idempotency id, or, once retried,
/// still its label).
const VIEW_FROM: &str = "clerk_organizations o
    CROSS JOIN LATERAL (SELECT EXISTS (
        SELECT 1 FROM tenants t WHERE t.key = o.tenant_key
           AND t.idempotency_id <> 'clerk:' || o.org_id
           AND (t.labels ->> 'clerk.organization_id') IS DISTINCT FROM o.org_id) AS lost) l";
pub(super) async fn view(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    org_id: &str,
    wait: Duration,
) -> Result<OrganizationView> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {VIEW} FROM {VIEW_FROM} WHERE o.org_id = $2")))
        .bind(wait.as_secs_f64())
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationsQuery {
    /// Only organizations in this state.
    pub state: Option<String>,
}

pub const STATES: [&str; 4] = ["waiting_for_organization", "waiting_for_admin", "requested", "rejected"];

/// The answer of `GET /v1/clerk/organizations`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Organizations {
    /// Oldest first, at most 1000.
    pub items: Vec<OrganizationView>,
}

/// `GET /v1/clerk/organizations[?state=waiting_for_admin]`, oldest first.
pub async fn organizations(
    State(app): State<App>,
    caller: Caller,
    query: std::result::Result<Query<OrganizationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    caller.require(READ)?;
    let Some(settings) = app.clerk.clone() else { return Err(Problem::not_found("no such endpoint")) };
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    if let Some(state) = &query.state
        && !STATES.contains(&state.as_str())
    {
        return Err(Problem::bad_request("state", format!("state {state:?} is not one of: {}", STATES.join(", "))));
    }
    let all: Vec<OrganizationView> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM (SELECT {VIEW} FROM {VIEW_FROM}) v WHERE $2::text IS NULL OR state = $2
         ORDER BY created_at, org_id LIMIT 1000"
    )))
    .bind(settings.admin_wait.as_secs_f64())
    .bind(&query.state)
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(Organizations { items: all }).into_response())
}

/// Logs, once a minute, the organizations waiting for their admin longer
/// than `wait`: a tenant that never gets its admin is reported.
pub async fn report_waiting(pool: PgPool, wait: Duration, shutdown: CancellationToken) {
    loop {
        let overdue: sqlx::Result<Vec<(String, Option<String>)>> = sqlx::query_as(
            "SELECT org_id, slug FROM clerk_organizations
             WHERE requested_at IS NULL AND rejected_rule IS NULL AND created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 100",
        )
        .bind(wait.as_secs_f64())
        .fetch_all(&pool)
        .await;
        match overdue {
            Ok(orgs) if !orgs.is_empty() => {
                tracing::warn!(count = orgs.len(), ?orgs, "clerk organizations still waiting for their admin");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot look for organizations waiting for their admin"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}
