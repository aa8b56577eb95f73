//! `GET /v1/tenants/{id_or_key}`: a tenant with its resources and the
//! progress of its latest saga, or a request not yet taken up.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use landlord_contract::TenantKey;
use serde::Deserialize;
use sqlx::types::Json as SqlJson;
use time::OffsetDateTime;
use uuid::Uuid;

use super::bodies::RunningOperation;
use super::rows::TenantRow;
use super::views::{Admin, RequestedStatus, RequestedTenant, ResourceView, SagaView, StepView, TenantView};
use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

/// The latest saga with its steps, as the view query aggregates it.
#[derive(Deserialize)]
struct SagaRow {
    id: Uuid,
    operation: String,
    state: String,
    failed_step: Option<String>,
    failure_reason: Option<String>,
    cancel_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    finished_at: Option<OffsetDateTime>,
    steps: Vec<StepView>,
}

/// What the lifecycle adds to a tenant's view: offboarding, export,
/// tombstone, and the operation at work.
#[derive(sqlx::FromRow)]
struct LifecycleRow {
    purge_at: Option<OffsetDateTime>,
    export_location: Option<String>,
    exported_at: Option<OffsetDateTime>,
    deleted_at: Option<OffsetDateTime>,
    deleted_by: Option<String>,
    deletion_reason: Option<String>,
    running_operation: Option<String>,
    running_saga_id: Option<Uuid>,
}

/// A tenant with its resources and latest saga, read in one statement
/// ([`landlord_control_plane::read::TENANT_VIEW_SQL`]).
#[derive(sqlx::FromRow)]
struct ViewRow {
    #[sqlx(flatten)]
    tenant: TenantRow,
    #[sqlx(flatten)]
    lifecycle: LifecycleRow,
    resources: SqlJson<Vec<ResourceView>>,
    saga: Option<SqlJson<SagaRow>>,
}

/// Times read back from JSON carry the session's offset; the API speaks UTC.
fn utc(at: OffsetDateTime) -> OffsetDateTime {
    at.to_offset(time::UtcOffset::UTC)
}

/// `GET /v1/tenants/{id_or_key}`.
pub async fn get(State(app): State<App>, caller: Caller, Path(id_or_key): Path<String>) -> Result<Response> {
    caller.require(READ)?;
    if Uuid::parse_str(&id_or_key).is_err() && TenantKey::parse(&id_or_key).is_err() {
        // Neither an id nor a key: nothing can match (and a NUL in it would
        // be refused by PostgreSQL, not answered).
        return Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}")));
    }
    let found: Option<ViewRow> = landlord_control_plane::read::tenant_view(&app.pool, &id_or_key).await?;
    let Some(ViewRow { tenant: row, lifecycle, resources, saga }) = found else {
        return pending_request(&app, &caller, &id_or_key).await;
    };
    // Another tenant's, for a tenant-scoped token: as if there were none.
    if !caller.may_see(row.summary.id) {
        return Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}")));
    }
    let resources: Vec<ResourceView> = resources
        .0
        .into_iter()
        .map(|r| ResourceView { created_at: utc(r.created_at), deleted_at: r.deleted_at.map(utc), ..r })
        .collect();
    let saga = saga.map(|SqlJson(saga)| {
        let steps: Vec<StepView> = saga
            .steps
            .into_iter()
            .map(|s| StepView { started_at: s.started_at.map(utc), finished_at: s.finished_at.map(utc), ..s })
            .collect();
        let done = steps.iter().filter(|s| matches!(s.state.as_str(), "succeeded" | "skipped")).count();
        let current = steps
            .iter()
            .find(|s| matches!(s.state.as_str(), "running" | "retry_wait" | "compensating"))
            .or_else(|| steps.iter().rev().find(|s| s.state != "pending"))
            .map(|s| s.name.clone());
        SagaView {
            id: saga.id,
            operation: saga.operation,
            state: saga.state,
            current_step: current,
            percent: u32::try_from(done * 100 / steps.len().max(1)).unwrap_or(100),
            failed_step: saga.failed_step,
            failure_reason: saga.failure_reason,
            cancel_reason: saga.cancel_reason,
            started_at: utc(saga.created_at),
            finished_at: saga.finished_at.map(utc),
            steps,
        }
    });
    let view = TenantView {
        summary: row.summary,
        domains: row.domains,
        admin: Admin { email: row.admin_email, first_name: row.admin_first_name, last_name: row.admin_last_name },
        labels: row.labels.0,
        failed_step: row.failed_step,
        failure_reason: row.failure_reason,
        resources,
        saga,
        operation: lifecycle
            .running_operation
            .zip(lifecycle.running_saga_id)
            .map(|(operation, saga_id)| RunningOperation { operation, saga_id }),
        purge_at: lifecycle.purge_at.map(utc),
        export_location: lifecycle.export_location,
        exported_at: lifecycle.exported_at.map(utc),
        deleted_at: lifecycle.deleted_at.map(utc),
        deleted_by: lifecycle.deleted_by,
        deletion_reason: lifecycle.deletion_reason,
    };
    Ok(Json(view).into_response())
}

/// A tenant accepted here that the orchestrator has not taken up yet is
/// reported as `REQUESTED`, not as missing (to a caller who may see it).
async fn pending_request(app: &App, caller: &Caller, id_or_key: &str) -> Result<Response> {
    let sql = format!(
        "SELECT tenant_id, tenant_key, created_at FROM api_requests WHERE {} ORDER BY created_at LIMIT 1",
        if Uuid::parse_str(id_or_key).is_ok() { "tenant_id = $1::uuid" } else { "tenant_key = $1" }
    );
    let found: Option<(Uuid, String, OffsetDateTime)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(&app.pool).await?;
    match found.filter(|(id, ..)| caller.may_see(*id)) {
        Some((id, key, at)) => {
            Ok(Json(RequestedTenant { id, key, status: RequestedStatus::Requested, requested_at: at }).into_response())
        }
        None => Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}"))),
    }
}
