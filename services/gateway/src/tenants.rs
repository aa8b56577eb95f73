//! `/v1/tenants`: ask for a tenant, follow it, list, cancel, retry.
//!
//! A request is *accepted* when its `TenantRequested` is committed to the
//! control-plane outbox together with the idempotency record, in one
//! transaction; the answer (202) never waits for provisioning. The outbox
//! relay publishes it with `Nats-Msg-Id`, and the orchestrator takes it up.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use landlord_contract::{Action, Event as _, TenantKey, pb};
use landlord_orchestrator::intake::{self, tenant_id};
use landlord_orchestrator::outbox::Outgoing;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::App;
use crate::auth::{Caller, READ, WRITE};
use crate::problem::{Problem, Result};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body of `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The tenant key: a lower-case letter, then lower-case letters, digits
    /// and single hyphens, not ending in a hyphen, not a reserved word.
    #[schemars(length(min = 3, max = 40), pattern(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"))]
    pub key: String,
    pub display_name: String,
    /// One of the configured plans.
    pub plan: String,
    /// `pooled`, `bridge` or `silo`; the plan's tier when absent.
    #[serde(default)]
    #[schemars(extend("enum" = ["pooled", "bridge", "silo", null]))]
    pub tier: Option<String>,
    pub admin: Admin,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The tenant's first administrator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
}

/// The 202 answer: where to follow the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct Accepted {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub tenant_id: Uuid,
    pub key: String,
    /// The tenant's URL, also sent as `Location`.
    pub status_url: String,
}

fn parse_tier(tier: Option<&str>) -> Result<pb::Tier> {
    match tier {
        None => Ok(pb::Tier::Unspecified),
        Some(name) => landlord_orchestrator::plans::parse_tier(name).ok_or_else(|| {
            Problem::invalid("tier.unknown", format!("tier {name:?} is not one of: pooled, bridge, silo"))
        }),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<String> {
    let missing = || {
        Problem::bad_request(
            "idempotency-key",
            "an Idempotency-Key header (1 to 200 visible ASCII characters) is required",
        )
    };
    let value = headers.get(IDEMPOTENCY_KEY).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?.trim();
    if value.is_empty() || value.len() > 200 || !value.chars().all(|c| c.is_ascii_graphic()) {
        return Err(missing());
    }
    Ok(value.to_owned())
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

fn accepted_response(accepted: &Accepted) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&accepted.status_url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn requested_subject(app: &App, key: &TenantKey) -> String {
    app.namespace.event_subject(key, pb::TenantRequested::KIND)
}

/// `POST /v1/tenants`.
pub async fn create(State(app): State<App>, caller: Caller, headers: HeaderMap, body: Bytes) -> Result<Response> {
    caller.require(WRITE)?;
    let idempotency_key = idempotency_key(&headers)?;
    let body: CreateTenant = crate::body::json(&headers, &body)?;
    let request = pb::TenantRequested {
        idempotency_id: format!("api:{idempotency_key}"),
        key: body.key.clone(),
        display_name: body.display_name.clone(),
        plan: body.plan.clone(),
        tier: parse_tier(body.tier.as_deref())? as i32,
        admin: Some(pb::AdminContact {
            email: body.admin.email.clone(),
            first_name: body.admin.first_name.clone(),
            last_name: body.admin.last_name.clone(),
        }),
        domains: body.domains.clone(),
        source: format!("gateway:{}", caller.subject),
        labels: body.labels.clone().into_iter().collect(),
        retry_of: None,
    };
    let valid = intake::validate(&request, &app.plans).map_err(|r| Problem::invalid(&r.rule, r.reason))?;
    // The body as parsed, re-serialised: formatting does not make a
    // different request.
    let hash = sha256(&serde_json::to_vec(&body).unwrap_or_default());
    let tenant = tenant_id(&request.idempotency_id);
    let accepted =
        Accepted { tenant_id: tenant, key: valid.key.to_string(), status_url: format!("/v1/tenants/{tenant}") };

    let mut tx = app.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO api_requests (idempotency_key, body_sha256, tenant_id, tenant_key, response, requested_by)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(&idempotency_key)
    .bind(&hash)
    .bind(tenant)
    .bind(valid.key.as_str())
    .bind(SqlJson(&accepted))
    .bind(&caller.subject)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let taken = || {
        Problem::conflict("tenant-key-taken", format!("tenant key {:?} is already taken", valid.key.as_str()))
            .with_rule("tenant_key.duplicate")
    };
    if !inserted {
        // A repeat, possibly concurrent: the insert above waited for the
        // first one to commit. Or another request took the tenant key.
        let stored: Option<(Vec<u8>, SqlJson<Accepted>)> =
            sqlx::query_as("SELECT body_sha256, response FROM api_requests WHERE idempotency_key = $1")
                .bind(&idempotency_key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((stored_hash, response)) = stored else { return Err(taken()) };
        if stored_hash != hash {
            return Err(Problem::invalid(
                "idempotency_key.reused",
                format!("Idempotency-Key {idempotency_key:?} was already used with a different request body"),
            ));
        }
        return Ok(accepted_response(&response.0));
    }
    // Refuse a key taken by another source (Clerk, a service on the
    // broker) now rather than after the broker round trip.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE key = $1 AND id <> $2)
             OR EXISTS (SELECT 1 FROM clerk_organizations WHERE tenant_key = $1)",
    )
    .bind(valid.key.as_str())
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    if exists {
        return Err(taken());
    }
    refuse_taken_domains(&mut tx, &request.domains, tenant).await?;
    let message = Outgoing::new(requested_subject(&app, &valid.key), format!("gateway.{tenant}.requested"), &request)
        .about(valid.key.as_str(), None);
    let pending = landlord_orchestrator::outbox::write(&mut tx, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %valid.key, %tenant, by = %caller.subject, "tenant requested");
    Ok(accepted_response(&accepted))
}

/// Tenant statuses in which a tenant no longer holds its domains.
const GONE: [&str; 3] = ["FAILED", "CANCELLED", "DELETED"];

/// 409 `tenant.domain_taken` if a live tenant (any status but [`GONE`])
/// other than `tenant` lists one of `domains`, compared lower-cased. The
/// answer names the domain, never the tenant that holds it. The
/// orchestrator's intake applies the same rule to requests from every
/// source; this is the early answer for the API. Nothing here proves the
/// caller owns the domain (docs/domains.md).
async fn refuse_taken_domains(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    domains: &[String],
    tenant: Uuid,
) -> Result<()> {
    if domains.is_empty() {
        return Ok(());
    }
    let wanted: Vec<String> = domains.iter().map(|d| d.to_lowercase()).collect();
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT lower(d) FROM tenants t CROSS JOIN LATERAL unnest(t.domains) d
         WHERE t.id <> $2 AND t.status <> ALL($3) AND lower(d) = ANY($1)
         ORDER BY 1 LIMIT 1",
    )
    .bind(&wanted)
    .bind(tenant)
    .bind(&GONE[..])
    .fetch_optional(&mut **tx)
    .await?;
    match taken {
        None => Ok(()),
        Some(domain) => Err(Problem::conflict(
            "domain-taken",
            format!("the domain {domain:?} belongs to another tenant; a domain belongs to one live tenant at a time"),
        )
        .with_rule("tenant.domain_taken")),
    }
}

/// A tenant as listed.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, JsonSchema)]
pub struct TenantSummary {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub id: Uuid,
    pub key: String,
    pub display_name: String,
    #[schemars(extend("enum" = STATUSES))]
    pub status: String,
    pub plan: String,
    /// `pooled`, `bridge` or `silo`.
    pub tier: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub updated_at: OffsetDateTime,
}

/// A tenant with its resources and the progress of its latest saga.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Tenant")]
pub struct TenantView {
    #[serde(flatten)]
    pub summary: TenantSummary,
    pub domains: Vec<String>,
    pub admin: Admin,
    pub labels: BTreeMap<String, String>,
    /// The step whose failure made the tenant FAILED.
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    /// Deleted ones included, with `deleted_at`.
    pub resources: Vec<ResourceView>,
    /// The latest saga: provisioning, or the retry that followed it.
    pub saga: Option<SagaView>,
}

/// Something a step made for the tenant (a database, a bucket, a realm…).
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, JsonSchema)]
#[schemars(rename = "Resource")]
pub struct ResourceView {
    /// The step that made it.
    pub step: String,
    pub kind: String,
    /// Its name or id in the backend that holds it.
    pub external_id: String,
    /// What the step recorded about it.
    pub metadata: Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    /// When compensation removed it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub deleted_at: Option<OffsetDateTime>,
}

/// A saga: the steps of one provisioning (or retry) and how far they got.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Saga")]
pub struct SagaView {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub id: Uuid,
    pub operation: String,
    pub state: String,
    /// The step running or waiting to retry, else the last one that ran.
    pub current_step: Option<String>,
    /// Steps succeeded or skipped, in percent of all steps.
    #[schemars(range(max = 100))]
    pub percent: u32,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    pub cancel_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<OffsetDateTime>,
    /// In pipeline order.
    pub steps: Vec<StepView>,
}

/// One step of a saga.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, JsonSchema)]
#[schemars(rename = "Step")]
pub struct StepView {
    pub name: String,
    pub state: String,
    /// A failure of this step fails the saga (else it is skipped).
    pub fatal: bool,
    pub attempts: i32,
    pub max_attempts: i32,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<OffsetDateTime>,
    /// Once finished.
    pub duration_ms: Option<i64>,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    #[sqlx(flatten)]
    summary: TenantSummary,
    domains: Vec<String>,
    admin_email: String,
    admin_first_name: String,
    admin_last_name: String,
    labels: SqlJson<BTreeMap<String, String>>,
    failed_step: Option<String>,
    failure_reason: Option<String>,
}

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

/// A tenant with its resources and latest saga, read in one statement.
#[derive(sqlx::FromRow)]
struct ViewRow {
    #[sqlx(flatten)]
    tenant: TenantRow,
    resources: SqlJson<Vec<ResourceView>>,
    saga: Option<SqlJson<SagaRow>>,
}

const SUMMARY: &str = "id, key, display_name, status, plan, tier, created_at, updated_at";

/// Looks a tenant up by id (a UUID) or by key.
async fn find(app: &App, id_or_key: &str) -> Result<Option<TenantRow>> {
    let sql = format!(
        "SELECT {SUMMARY}, domains, admin_email, admin_first_name, admin_last_name, labels, failed_step,
                failure_reason
         FROM tenants WHERE {}",
        if Uuid::parse_str(id_or_key).is_ok() { "id = $1::uuid" } else { "key = $1" }
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(&app.pool).await?)
}

/// The tenant, its resources, its latest saga and that saga's steps: one
/// statement, so one round trip to PostgreSQL (on small virtual machines a
/// round trip costs about half a millisecond; four of them were most of
/// this endpoint's latency — bench/results/api.md).
pub const VIEW_SQL: &str = "SELECT t.id, t.key, t.display_name, t.status, t.plan, t.tier, t.created_at, t.updated_at,
       t.domains, t.admin_email, t.admin_first_name, t.admin_last_name, t.labels, t.failed_step, t.failure_reason,
       (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.id), '[]'::jsonb)
        FROM (SELECT id, step, kind, external_id, metadata, created_at, deleted_at
              FROM resources WHERE tenant_id = t.id) r) AS resources,
       (SELECT to_jsonb(s) || jsonb_build_object('steps', (
                   SELECT coalesce(jsonb_agg(to_jsonb(st) ORDER BY st.position), '[]'::jsonb)
                   FROM (SELECT position, name, state, fatal, attempts, max_attempts, started_at, finished_at,
                                (EXTRACT(EPOCH FROM finished_at - started_at) * 1000)::bigint AS duration_ms,
                                last_error
                         FROM saga_steps WHERE saga_id = s.id) st))
        FROM (SELECT id, operation, state, failed_step, failure_reason, cancel_reason, created_at, finished_at
              FROM sagas WHERE tenant_id = t.id ORDER BY created_at DESC, id LIMIT 1) s) AS saga
FROM tenants t";

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
    let sql = format!(
        "{VIEW_SQL} WHERE {}",
        if Uuid::parse_str(id_or_key.as_str()).is_ok() { "t.id = $1::uuid" } else { "t.key = $1" }
    );
    let found: Option<ViewRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(&id_or_key).fetch_optional(&app.pool).await?;
    let Some(ViewRow { tenant: row, resources, saga }) = found else {
        return pending_request(&app, &id_or_key).await;
    };
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
    };
    Ok(Json(view).into_response())
}

/// A tenant accepted here that the orchestrator has not taken up yet is
/// reported as `REQUESTED`, not as missing.
async fn pending_request(app: &App, id_or_key: &str) -> Result<Response> {
    let sql = format!(
        "SELECT tenant_id, tenant_key, created_at FROM api_requests WHERE {} ORDER BY created_at LIMIT 1",
        if Uuid::parse_str(id_or_key).is_ok() { "tenant_id = $1::uuid" } else { "tenant_key = $1" }
    );
    let found: Option<(Uuid, String, OffsetDateTime)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(&app.pool).await?;
    match found {
        Some((id, key, at)) => {
            Ok(Json(RequestedTenant { id, key, status: RequestedStatus::Requested, requested_at: at }).into_response())
        }
        None => Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}"))),
    }
}

/// A tenant accepted but not yet taken up by the orchestrator.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RequestedTenant {
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub id: Uuid,
    pub key: String,
    pub status: RequestedStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub requested_at: OffsetDateTime,
}

/// `REQUESTED`, a status no tenant the orchestrator took up has: it tells
/// the two answers of `GET /v1/tenants/{id_or_key}` apart.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
#[schemars(inline)]
pub enum RequestedStatus {
    Requested,
}

pub const STATUSES: [&str; 9] = [
    "PENDING",
    "PROVISIONING",
    "ACTIVE",
    "COMPENSATING",
    "FAILED",
    "CANCELLED",
    "SUSPENDED",
    "DEPROVISIONING",
    "DELETED",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub plan: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A page of tenants.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Page {
    pub items: Vec<TenantSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Unix nanoseconds of `created_at` and the id of the last item.
    t: i128,
    id: Uuid,
}

fn decode_cursor(raw: &str) -> Result<(OffsetDateTime, Uuid)> {
    let bad = || Problem::bad_request("cursor", "cursor is not one this API handed out");
    let cursor: Cursor =
        URL_SAFE_NO_PAD.decode(raw).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(bad)?;
    // Before 1970 nothing was created, and PostgreSQL refuses times before
    // 4713 BC that `time` would accept.
    if cursor.t < 0 {
        return Err(bad());
    }
    let at = OffsetDateTime::from_unix_timestamp_nanos(cursor.t).map_err(|_| bad())?;
    Ok((at, cursor.id))
}

fn encode_cursor(last: &TenantSummary) -> String {
    let cursor = Cursor { t: last.created_at.unix_timestamp_nanos(), id: last.id };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// `GET /v1/tenants?status=&plan=&limit=&cursor=`, oldest first.
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    caller.require(READ)?;
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    if let Some(status) = &query.status
        && !STATUSES.contains(&status.as_str())
    {
        return Err(Problem::bad_request(
            "status",
            format!("status {status:?} is not one of: {}", STATUSES.join(", ")),
        ));
    }
    if let Some(plan) = &query.plan
        && (plan.is_empty() || plan.len() > 200 || plan.chars().any(char::is_control))
    {
        return Err(Problem::bad_request("plan", format!("plan {plan:?} is not a plan name")));
    }
    let limit: i64 = match &query.limit {
        None => 50,
        Some(raw) => match raw.parse() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(Problem::bad_request("limit", format!("limit {raw:?} must be a number from 1 to 200"))),
        },
    };
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut items: Vec<TenantSummary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY} FROM tenants
         WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR plan = $2)
           AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
         ORDER BY created_at, id LIMIT $5"
    )))
    .bind(&query.status)
    .bind(&query.plan)
    .bind(after.map(|(t, _)| t))
    .bind(after.map(|(_, id)| id))
    .bind(limit + 1)
    .fetch_all(&app.pool)
    .await?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { items.last().map(encode_cursor) } else { None };
    Ok(Json(Page { items, next_cursor }).into_response())
}

/// The optional body of `POST /v1/tenants/{key}/cancel`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CancelTenant")]
pub struct CancelBody {
    /// Recorded on the saga; "cancelled through the API" when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

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
    let Some((tenant, status, running)) = found else {
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
    let pending = landlord_orchestrator::outbox::write(&mut tx, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %key, %saga, by = %caller.subject, "cancel requested");
    Ok(accepted_response(&Accepted {
        tenant_id: tenant,
        key: key.to_string(),
        status_url: format!("/v1/tenants/{tenant}"),
    }))
}

/// `POST /v1/tenants/{key}/retry`: a FAILED tenant is provisioned again by
/// a new saga under the same key and tenant id.
pub async fn retry(State(app): State<App>, caller: Caller, Path(key): Path<String>) -> Result<Response> {
    caller.require(WRITE)?;
    let key = TenantKey::parse(&key).map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    let Some(row) = find(&app, key.as_str()).await? else {
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
    let pending = landlord_orchestrator::outbox::write(&mut tx, &[message]).await?;
    tx.commit().await?;
    app.dispatcher.dispatch(pending).await;
    tracing::info!(key = %key, %tenant, by = %caller.subject, "retry requested");
    Ok(accepted_response(&Accepted {
        tenant_id: tenant,
        key: key.to_string(),
        status_url: format!("/v1/tenants/{tenant}"),
    }))
}
