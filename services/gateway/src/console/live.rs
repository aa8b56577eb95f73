//! Live updates: `GET /console/events` streams the events stream as
//! Server-Sent Events whose `data` is JSON decoded from the protobuf
//! payload (not base64), cookie-authenticated so that a browser's
//! `EventSource` can open it; and JSON fragments the script polls when
//! `EventSource` fails: `GET /console/tenants/{key}/live.json` (status and
//! every saga's steps) and `GET /console/live.json?keys=a,b` (statuses).
//! Neither counts a whole table.

use std::convert::Infallible;

use async_nats::jetstream::consumer::DeliverPolicy;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, header, pb};
use prost::Message as _;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Console;
use super::filter::Fields;
use super::html::Result;
use super::session::Operator;
use super::tenant;
use crate::auth::READ;
use crate::problem::Problem;

/// The longest look back `since` may ask for, in seconds.
const MAX_SINCE: u64 = 24 * 3600;

/// `GET /console/events[?tenant=<key>][&since=<seconds>]`: every event (of
/// the tenant), from now, or from `since` seconds ago.
pub async fn feed(State(console): State<Console>, operator: Operator, RawQuery(query): RawQuery) -> Result<Response> {
    operator.caller.require(READ)?;
    let fields = Fields::query(query.as_deref());
    let tenant = fields
        .get("tenant")
        .map(TenantKey::parse)
        .transpose()
        .map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    let since = fields
        .get("since")
        .map(|s| s.parse::<u64>().map_err(|_| Problem::bad_request("since", "since is a number of seconds")))
        .transpose()?
        .map(|s| s.min(MAX_SINCE));
    let deliver_policy = match since {
        Some(seconds) => DeliverPolicy::ByStartTime {
            start_time: OffsetDateTime::now_utc() - time::Duration::seconds(i64::try_from(seconds).unwrap_or(0)),
        },
        None => DeliverPolicy::New,
    };
    let app = &console.app;
    let (tenant, window) = crate::events::narrow(app, &operator.caller, tenant).await?;
    let messages =
        crate::events::ordered_messages(app, app.namespace.event_filter(tenant.as_ref(), None), deliver_policy).await?;
    let events = messages.filter_map(move |message| async move {
        match message {
            Ok(message) if !window.holds(&message) => None,
            Ok(message) => {
                let data = to_json(&message);
                let id = data["sequence"].to_string();
                Some(Ok::<_, Infallible>(Event::default().id(id).data(data.to_string())))
            }
            Err(error) => {
                tracing::warn!(%error, "console event feed interrupted");
                None
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

fn step_state(state: i32) -> String {
    pb::StepState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("STEP_STATE_").to_ascii_lowercase())
        .unwrap_or_default()
}

fn progress(progress: Option<pb::Progress>) -> Value {
    match progress {
        None => Value::Null,
        Some(p) => json!({
            "current_step": p.current_step,
            "percent": p.percent,
            "steps": p.steps.into_iter().map(|s| json!({
                "name": s.name, "state": step_state(s.state), "attempts": s.attempts,
                "duration_ms": s.duration_ms, "last_error": s.last_error,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn requester(r: Option<pb::Requester>) -> Value {
    r.map_or(Value::Null, |r| json!({"requested_by": r.requested_by, "reason": r.reason}))
}

fn snapshot(s: Option<&pb::TenantSnapshot>) -> Option<String> {
    s.map(|s| s.status.clone()).filter(|s| !s.is_empty())
}

/// The payload of event `kind` as JSON, with the tenant status it implies
/// when it implies one.
pub fn decode(kind: EventKind, payload: &[u8]) -> Option<(Value, Option<String>)> {
    use EventKind as K;
    let status = |s: &str| Some(s.to_owned());
    Some(match kind {
        K::Requested => {
            let m = pb::TenantRequested::decode(payload).ok()?;
            (json!({"key": m.key, "plan": m.plan, "display_name": m.display_name, "source": m.source}), None)
        }
        K::Accepted => {
            let m = pb::TenantAccepted::decode(payload).ok()?;
            (json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "plan": m.plan}), None)
        }
        K::Rejected => {
            let m = pb::TenantRejected::decode(payload).ok()?;
            (json!({"key": m.key, "rule": m.rule, "reason": m.reason}), None)
        }
        K::ProvisioningStarted => {
            let m = pb::ProvisioningStarted::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "progress": progress(m.progress)}),
                status("PROVISIONING"),
            )
        }
        K::StepStarted => {
            let m = pb::StepStarted::decode(payload).ok()?;
            let p = progress(m.progress);
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "step": m.step, "attempt": m.attempt, "step_state": "running", "progress": p}),
                None,
            )
        }
        K::StepSucceeded => {
            let m = pb::StepSucceeded::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "step": m.step, "attempt": m.attempt, "step_state": "succeeded", "resources": m.resources.len(), "progress": progress(m.progress)}),
                None,
            )
        }
        K::StepFailed => {
            let m = pb::StepFailed::decode(payload).ok()?;
            let error = m.error.map(|e| json!({"code": e.code, "message": e.message, "retryable": e.retryable}));
            let state = if m.will_retry { "retry_wait" } else { "failed" };
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "step": m.step, "attempt": m.attempt, "step_state": state, "error": error, "will_retry": m.will_retry, "fatal": m.fatal, "progress": progress(m.progress)}),
                None,
            )
        }
        K::CompensationStarted => {
            let m = pb::CompensationStarted::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "failed_step": m.failed_step, "reason": m.reason, "progress": progress(m.progress)}),
                None,
            )
        }
        K::StepCompensated => {
            let m = pb::StepCompensated::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "step": m.step, "step_state": "compensated", "progress": progress(m.progress)}),
                None,
            )
        }
        K::Activated => {
            let m = pb::TenantActivated::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "resources": m.resources.len(), "progress": progress(m.progress)}),
                status("ACTIVE"),
            )
        }
        K::ProvisioningFailed => {
            let m = pb::ProvisioningFailed::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "failed_step": m.failed_step, "reason": m.reason, "progress": progress(m.progress)}),
                status("FAILED"),
            )
        }
        K::Cancelled => {
            let m = pb::TenantCancelled::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "reason": m.reason, "requested_by": m.requested_by, "progress": progress(m.progress)}),
                status("CANCELLED"),
            )
        }
        K::OperationStarted => {
            let m = pb::OperationStarted::decode(payload).ok()?;
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "operation": m.operation, "requester": requester(m.requester), "progress": progress(m.progress)}),
                None,
            )
        }
        K::OperationFailed => {
            let m = pb::OperationFailed::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref());
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "operation": m.operation, "failed_step": m.failed_step, "reason": m.reason, "reversed": m.reversed, "progress": progress(m.progress)}),
                s,
            )
        }
        K::OperationRejected => {
            let m = pb::OperationRejected::decode(payload).ok()?;
            (
                json!({"saga_id": m.saga_id, "key": m.tenant_key, "operation": m.operation, "rule": m.rule, "reason": m.reason}),
                None,
            )
        }
        K::Suspended => {
            let m = pb::TenantSuspended::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref()).or_else(|| status("SUSPENDED"));
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::Resumed => {
            let m = pb::TenantResumed::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref()).or_else(|| status("ACTIVE"));
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::Updated => {
            let m = pb::TenantUpdated::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref());
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "changed": m.changed, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::DeletionScheduled => {
            let m = pb::TenantDeletionScheduled::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref()).or_else(|| status("DELETION_SCHEDULED"));
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "purge_at": m.purge_at.map(|t| t.seconds), "export_location": m.export_location, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::Restored => {
            let m = pb::TenantRestored::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref()).or_else(|| status("ACTIVE"));
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::Exported => {
            let m = pb::TenantExported::decode(payload).ok()?;
            let s = snapshot(m.tenant.as_ref());
            (
                json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id, "location": m.location, "requester": requester(m.requester), "progress": progress(m.progress)}),
                s,
            )
        }
        K::Deleted => {
            let m = pb::TenantDeleted::decode(payload).ok()?;
            (json!({"tenant_id": m.tenant_id, "saga_id": m.saga_id}), status("DELETED"))
        }
    })
}

/// One event of the stream as the console's JSON.
fn to_json(message: &async_nats::jetstream::Message) -> Value {
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let subject = message.subject.as_str();
    let mut tokens = subject.rsplit('.');
    let name = tokens.next().unwrap_or("").to_owned();
    let tenant = tokens.next().unwrap_or("").to_owned();
    let attribute = |name: &str| {
        message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    let decoded = EventKind::from_name(&name).and_then(|kind| decode(kind, &message.payload));
    let (detail, status) = decoded.unwrap_or((Value::Null, None));
    json!({
        "sequence": sequence,
        "subject": subject,
        "tenant": tenant,
        "event": name,
        "id": attribute(header::ID),
        "type": attribute(header::TYPE),
        "time": attribute(header::TIME),
        "saga_id": detail.get("saga_id").cloned().unwrap_or(Value::Null),
        "step": detail.get("step").cloned().unwrap_or(Value::Null),
        "step_state": detail.get("step_state").cloned().unwrap_or(Value::Null),
        "status": status,
        "detail": detail,
    })
}

/// `GET /console/tenants/{key-or-id}/live.json`: the tenant's status and
/// every saga's steps (what the page shows), for polling.
pub async fn tenant_fragment(
    State(console): State<Console>,
    operator: Operator,
    Path(id_or_key): Path<String>,
) -> Result<Response> {
    operator.caller.require(READ)?;
    let row = tenant::find(&console, &id_or_key).await?.filter(|row| operator.caller.may_see(row.id));
    if row.is_none() && operator.caller.tenant_scope().is_some() {
        return Err(Problem::not_found(format!("no tenant has the key {id_or_key:?}")).into());
    }
    let Some(row) = row else {
        return Ok(Json(json!({"key": id_or_key, "status": "REQUESTED", "sagas": []})).into_response());
    };
    let sagas = tenant::sagas(&console.app.pool, row.id).await?;
    let sagas: Vec<Value> = sagas
        .iter()
        .map(|s| {
            json!({
                "id": s.id, "operation": s.operation, "state": s.state,
                "failed_step": s.failed_step, "failure_reason": s.failure_reason,
                "html": tenant::saga_section(s),
                "steps": s.steps.iter().map(|st| json!({
                    "name": st.name, "state": st.state, "attempts": st.attempts, "last_error": st.last_error,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "key": row.key, "id": row.id, "status": row.status,
        "failed_step": row.failed_step, "failure_reason": row.failure_reason, "sagas": sagas,
    }))
    .into_response())
}

/// `GET /console/live.json?keys=a,b,…` (at most 200): each tenant's status.
pub async fn list_fragment(
    State(console): State<Console>,
    operator: Operator,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    operator.caller.require(READ)?;
    let fields = Fields::query(query.as_deref());
    let keys: Vec<String> = fields
        .get("keys")
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .take(200)
        .map(str::to_owned)
        .collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT key, status FROM tenants WHERE key = ANY($1) AND status <> 'DELETED'
               AND ($2::uuid IS NULL OR id = $2)",
    )
    .bind(&keys)
    .bind(operator.caller.visible_tenant())
    .fetch_all(&console.app.pool)
    .await?;
    let items: Vec<Value> = rows.into_iter().map(|(key, status)| json!({"key": key, "status": status})).collect();
    Ok(Json(json!({ "items": items })).into_response())
}
