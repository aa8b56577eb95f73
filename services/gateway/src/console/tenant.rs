//! `GET /console/tenants/{key-or-id}`: a tenant's status, plan, tier,
//! resources by backend, every saga it has had with its steps, its audit
//! log, its events live, and the actions the session may take.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use landlord_contract::TenantKey;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Console;
use super::filter::Fields;
use super::html::{self, Result, esc, millis, url, when, when_opt};
use super::session::Operator;
use crate::auth::{PURGE, READ, WRITE};
use crate::problem::Problem;
use crate::tenants::ResourceView;

/// The tenant as [`landlord_control_plane::read::TENANT_VIEW_SQL`] reads it (the columns used here).
#[derive(Debug, sqlx::FromRow)]
pub struct TenantRow {
    pub id: Uuid,
    pub key: String,
    pub display_name: String,
    pub status: String,
    pub plan: String,
    pub tier: String,
    pub created_at: OffsetDateTime,
    pub domains: Vec<String>,
    pub admin_email: String,
    pub labels: SqlJson<BTreeMap<String, String>>,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    pub purge_at: Option<OffsetDateTime>,
    pub deleted_at: Option<OffsetDateTime>,
    pub running_operation: Option<String>,
    pub resources: SqlJson<Vec<ResourceView>>,
}

/// One step of a saga, as the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub timeout_ms: i64,
    pub compensation: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// A saga with its steps.
#[derive(Debug, sqlx::FromRow)]
pub struct Saga {
    pub id: Uuid,
    pub operation: String,
    pub state: String,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
    pub steps: SqlJson<Vec<Step>>,
}

/// How many sagas the page shows (newest first).
const SAGAS: i64 = 50;

/// The tenant's sagas, newest first, with their steps in pipeline order.
pub async fn sagas(pool: &sqlx::PgPool, tenant: Uuid) -> sqlx::Result<Vec<Saga>> {
    sqlx::query_as(
        "SELECT s.id, s.operation, s.state, s.failed_step, s.failure_reason, s.cancel_reason, s.created_at,
                s.finished_at,
                (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'name', st.name, 'state', st.state, 'attempts', st.attempts,
                        'max_attempts', st.max_attempts, 'timeout_ms', st.timeout_ms,
                        'compensation', st.compensation, 'started_at', st.started_at,
                        'finished_at', st.finished_at,
                        'duration_ms', (EXTRACT(EPOCH FROM st.finished_at - st.started_at) * 1000)::bigint,
                        'last_error', st.last_error) ORDER BY st.position), '[]'::jsonb)
                 FROM saga_steps st WHERE st.saga_id = s.id) AS steps
         FROM sagas s WHERE s.tenant_id = $1 ORDER BY s.created_at DESC, s.id LIMIT $2",
    )
    .bind(tenant)
    .bind(SAGAS)
    .fetch_all(pool)
    .await
}

/// The tenant `id_or_key`, or 404.
pub async fn find(console: &Console, id_or_key: &str) -> Result<Option<TenantRow>> {
    if Uuid::parse_str(id_or_key).is_err() && TenantKey::parse(id_or_key).is_err() {
        return Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}")).into());
    }
    Ok(landlord_control_plane::read::tenant_view(&console.app.pool, id_or_key).await?)
}

/// A step row; the script updates it in place.
pub fn step_row(saga: Uuid, step: &Step) -> String {
    let compensation = match (&step.compensation, step.state.as_str()) {
        (Some(c), "compensating" | "compensated" | "stuck") => format!("{} ({})", esc(c), esc(&step.state)),
        (Some(c), _) => format!(r#"<span class="muted">{}</span>"#, esc(c)),
        (None, _) => String::new(),
    };
    format!(
        r#"<tr data-testid="step" data-saga-id="{saga}" data-step="{name}" data-state="{state}">
<td>{name}</td><td data-testid="step-state">{state}</td>
<td data-testid="step-attempts">{attempts}/{max}</td><td data-testid="step-started">{started}</td>
<td data-testid="step-finished">{finished}</td><td data-testid="step-duration">{duration}</td>
<td data-testid="step-compensation">{compensation}</td><td data-testid="step-error" class="error">{error}</td></tr>"#,
        name = esc(&step.name),
        state = esc(&step.state),
        attempts = step.attempts,
        max = step.max_attempts,
        started = when_opt(step.started_at),
        finished = when_opt(step.finished_at),
        duration = millis(step.duration_ms),
        error = esc(step.last_error.as_deref().unwrap_or("")),
    )
}

/// A saga's section.
pub fn saga_section(saga: &Saga) -> String {
    let mut out = format!(
        r#"<section data-testid="saga" data-saga-id="{id}" data-state="{state}" data-operation="{op}">
<h3>{op} <span data-testid="saga-state">{state}</span> <small>{id} · started {started}{finished}</small></h3>"#,
        id = saga.id,
        state = esc(&saga.state),
        op = esc(&saga.operation),
        started = when(saga.created_at),
        finished = saga.finished_at.map(|f| format!(" · finished {}", when(f))).unwrap_or_default(),
    );
    if saga.failed_step.is_some() || saga.failure_reason.is_some() || saga.cancel_reason.is_some() {
        out.push_str(&format!(
            r#"<p class="error" data-testid="saga-failure">{}{}{}</p>"#,
            saga.failed_step.as_deref().map(|s| format!("failed at {}: ", esc(s))).unwrap_or_default(),
            esc(saga.failure_reason.as_deref().unwrap_or("")),
            saga.cancel_reason.as_deref().map(|r| format!("cancelled: {}", esc(r))).unwrap_or_default(),
        ));
    }
    out.push_str(
        r#"<table data-testid="steps"><thead><tr><th>Step</th><th>State</th><th>Attempts</th><th>Started</th>
<th>Finished</th><th>Duration</th><th>Compensation</th><th>Last error</th></tr></thead><tbody>"#,
    );
    for step in saga.steps.iter() {
        out.push_str(&step_row(saga.id, step));
    }
    out.push_str("</tbody></table></section>");
    out
}

fn action_forms(operator: &Operator, key: &str, status: &str) -> String {
    if !operator.can(WRITE) {
        return r#"<p class="muted" data-testid="read-only">Read-only session: no actions.</p>"#.to_owned();
    }
    let csrf = html::csrf_field(operator);
    let nonce = Uuid::new_v4();
    let key = esc(key);
    let simple = |action: &str, label: &str| {
        format!(
            r#"<form method="post" action="/console/tenants/{key}/{action}" data-testid="form-{action}" class="inline">{csrf}
<input type="hidden" name="nonce" value="{nonce}"><button data-testid="action-{action}">{label}</button></form>"#
        )
    };
    let destructive = |action: &str, label: &str, extra: &str| {
        format!(
            r#"<form method="post" action="/console/tenants/{key}/{action}" data-testid="form-{action}" class="destructive">{csrf}
<input type="hidden" name="nonce" value="{nonce}"><strong>{label}</strong>
<input name="reason" placeholder="reason (required)" required data-testid="{action}-reason" size="30">
<input name="confirm_key" placeholder="type {key} to confirm" required data-testid="{action}-confirm-key" size="20">{extra}
<button data-testid="action-{action}">{label}</button></form>"#
        )
    };
    let mut out = String::from(r#"<div data-testid="actions">"#);
    out.push_str(&simple("retry", "Retry"));
    out.push_str(&simple("resume", "Resume"));
    out.push_str(&simple("restore", "Restore"));
    out.push_str(&destructive("cancel", "Cancel", ""));
    out.push_str(&destructive("suspend", "Suspend", ""));
    let purge_note = if operator.can(PURGE) { "0 = no grace" } else { "0 needs tenants:purge" };
    out.push_str(&destructive(
        "delete",
        "Delete",
        &format!(
            r#"<input name="grace" placeholder="grace, seconds (default)" data-testid="delete-grace" size="22" title="{purge_note}">"#
        ),
    ));
    out.push_str(&format!(
        r#"<p class="muted">Status now {}: the server refuses what is not allowed from it.</p></div>"#,
        esc(status)
    ));
    out
}

/// `GET /console/tenants/{key-or-id}[?done=<action>]`.
pub async fn page(
    State(console): State<Console>,
    operator: Operator,
    Path(id_or_key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    operator.caller.require(READ)?;
    // A tenant-scoped session sees its own tenant only; another answers as
    // a missing one would (docs/auth.md).
    let found = find(&console, &id_or_key).await?.filter(|t| operator.caller.may_see(t.id));
    let Some(tenant) = found else {
        return requested(&console, &operator, &id_or_key).await;
    };
    let fields = Fields::query(query.as_deref());
    let flash = fields
        .get("done")
        .map(|done| format!(r#"<p class="flash" data-testid="flash">{} requested.</p>"#, esc(done)))
        .unwrap_or_default();
    let sagas = sagas(&console.app.pool, tenant.id).await?;
    let audit = landlord_control_plane::read::audit(&console.app.pool, tenant.id, None, 200).await?;
    let key = esc(&tenant.key);
    let mut body = format!(
        r#"{flash}<div data-testid="tenant" data-key="{key}" data-id="{id}">
<h1>{key} <small>{name}</small></h1>
<dl class="facts"><dt>Status</dt><dd data-testid="tenant-status" data-status="{status}" data-tenant="{key}">{status}</dd>
<dt>Plan</dt><dd data-testid="tenant-plan">{plan}</dd><dt>Tier</dt><dd data-testid="tenant-tier">{tier}</dd>
<dt>Id</dt><dd>{id}</dd><dt>Created</dt><dd>{created}</dd><dt>Admin</dt><dd>{admin}</dd>
<dt>Domains</dt><dd>{domains}</dd><dt>Labels</dt><dd data-testid="tenant-labels">{labels}</dd>
<dt>At work</dt><dd data-testid="tenant-operation">{operation}</dd>{purge}</dl>"#,
        id = tenant.id,
        name = esc(&tenant.display_name),
        status = esc(&tenant.status),
        plan = esc(&tenant.plan),
        tier = esc(&tenant.tier),
        created = when(tenant.created_at),
        admin = esc(&tenant.admin_email),
        domains = esc(&tenant.domains.join(", ")),
        labels = esc(&tenant.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")),
        operation = esc(tenant.running_operation.as_deref().unwrap_or("")),
        purge = tenant
            .purge_at
            .map(|p| format!(r#"<dt>Purge at</dt><dd data-testid="tenant-purge-at">{}</dd>"#, when(p)))
            .unwrap_or_default()
            + &tenant.deleted_at.map(|d| format!("<dt>Deleted</dt><dd>{}</dd>", when(d))).unwrap_or_default(),
    );
    if tenant.failed_step.is_some() || tenant.failure_reason.is_some() {
        body.push_str(&format!(
            r#"<p class="error" data-testid="tenant-failure">Failed at <strong>{}</strong>: {}</p>"#,
            esc(tenant.failed_step.as_deref().unwrap_or("?")),
            esc(tenant.failure_reason.as_deref().unwrap_or(""))
        ));
    }
    body.push_str(&action_forms(&operator, &tenant.key, &tenant.status));

    // Resources grouped by backend (the first part of their kind: `database.schema` → database).
    body.push_str(
        r#"<h2>Resources</h2><table data-testid="resources"><thead><tr><th>Backend</th><th>Kind</th>
<th>Name</th><th>Step</th><th>Created</th><th>Deleted</th></tr></thead><tbody>"#,
    );
    let mut resources: Vec<&ResourceView> = tenant.resources.iter().collect();
    resources.sort_by(|a, b| a.kind.cmp(&b.kind));
    for r in resources {
        let backend = r.kind.split('.').next().unwrap_or(&r.kind);
        body.push_str(&format!(
            r#"<tr data-testid="resource" data-kind="{kind}" data-backend="{backend}"><td>{backend}</td><td>{kind}</td>
<td>{name}</td><td>{step}</td><td>{created}</td><td>{deleted}</td></tr>"#,
            backend = esc(backend),
            kind = esc(&r.kind),
            name = esc(&r.external_id),
            step = esc(&r.step),
            created = when(r.created_at),
            deleted = when_opt(r.deleted_at),
        ));
    }
    body.push_str("</tbody></table>");

    body.push_str(r#"<h2>Live events</h2><ol data-testid="events" class="events"></ol>"#);
    body.push_str(r#"<h2>Sagas</h2><div data-testid="sagas">"#);
    for saga in &sagas {
        body.push_str(&saga_section(saga));
    }
    body.push_str("</div>");

    body.push_str(
        r#"<h2>Audit log</h2><table data-testid="audit"><thead><tr><th>When</th><th>Who</th><th>Action</th>
<th>Saga</th><th>Detail</th></tr></thead><tbody>"#,
    );
    for entry in &audit {
        body.push_str(&format!(
            r#"<tr data-testid="audit-entry" data-action="{action}"><td>{at}</td><td>{actor}</td><td>{action}</td>
<td>{saga}</td><td><code>{detail}</code></td></tr>"#,
            at = when(entry.at),
            actor = esc(&entry.actor),
            action = esc(&entry.action),
            saga = entry.saga_id.map(|s| s.to_string()).unwrap_or_default(),
            detail = esc(&entry.detail.to_string()),
        ));
    }
    body.push_str("</tbody></table></div>");
    let events = format!("/console/events?tenant={}", url(&tenant.key));
    let poll = format!("/console/tenants/{}/live.json", url(&tenant.key));
    Ok(html::page("tenant", &tenant.key, Some(&operator), Some((&events, &poll)), &body).into_response())
}

/// A tenant accepted by the API that the orchestrator has not taken up
/// yet: REQUESTED, followed live like any other.
async fn requested(console: &Console, operator: &Operator, id_or_key: &str) -> Result<Response> {
    let sql = format!(
        "SELECT tenant_key, created_at FROM api_requests WHERE {} AND ($2::uuid IS NULL OR tenant_id = $2)
         ORDER BY created_at LIMIT 1",
        if Uuid::parse_str(id_or_key).is_ok() { "tenant_id = $1::uuid" } else { "tenant_key = $1" }
    );
    let found: Option<(String, OffsetDateTime)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id_or_key)
        .bind(operator.caller.visible_tenant())
        .fetch_optional(&console.app.pool)
        .await?;
    let Some((key, at)) = found else {
        return Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}")).into());
    };
    let body = format!(
        r#"<div data-testid="tenant" data-key="{key}"><h1>{key}</h1>
<dl class="facts"><dt>Status</dt><dd data-testid="tenant-status" data-status="REQUESTED" data-tenant="{key}">REQUESTED</dd>
<dt>Requested</dt><dd>{at}</dd></dl><p class="muted">Accepted, not taken up by the orchestrator yet.</p>
<h2>Live events</h2><ol data-testid="events" class="events"></ol><h2>Sagas</h2><div data-testid="sagas"></div></div>"#,
        key = esc(&key),
        at = when(at),
    );
    let events = format!("/console/events?tenant={}", url(&key));
    let poll = format!("/console/tenants/{}/live.json", url(&key));
    Ok(html::page("tenant", &key, Some(operator), Some((&events, &poll)), &body).into_response())
}
