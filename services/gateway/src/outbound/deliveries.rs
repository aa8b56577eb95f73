//! `GET /v1/webhook-endpoints/{id}/deliveries`: what was sent to an
//! endpoint, newest first, each delivery with every attempt.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::endpoints::endpoint_id;
use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

/// Where a delivery is: still trying, done, or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not delivered yet; `next_attempt_at` says when it is tried.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// No 2xx answer within `LANDLORD_WEBHOOK_GIVE_UP` of the event.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [Self::Pending, Self::Delivered, Self::Failed];

    /// As stored and as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One attempt at a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema, sqlx::FromRow)]
#[schemars(rename = "WebhookAttempt")]
pub struct AttemptView {
    /// 1 for the first.
    pub attempt: i32,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub attempted_at: OffsetDateTime,
    pub duration_ms: i32,
    /// The receiver's HTTP status; null when it did not answer.
    pub status_code: Option<i32>,
    /// Why the attempt failed (a status that is not 2xx, a refused
    /// connection, a timeout); null when it succeeded.
    pub error: Option<String>,
    /// The start of the receiver's answer (at most 1 KiB).
    pub response: Option<String>,
}

/// One event sent to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "WebhookDelivery")]
pub struct DeliveryView {
    pub id: i64,
    /// The CloudEvents id, also sent as `svix-id`.
    pub event_id: String,
    /// The event's name, e.g. `activated`.
    pub event_type: String,
    /// The tenant key the event is about.
    pub tenant: String,
    pub status: DeliveryStatus,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
    /// When it is tried next; null once delivered or failed.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was delivered or given up; null while pending.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub finished_at: Option<OffsetDateTime>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "WebhookDeliveries")]
pub struct DeliveriesPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    pub status: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    event_id: String,
    event_type: String,
    tenant_key: String,
    status: String,
    created_at: OffsetDateTime,
    next_attempt_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: i64,
    #[sqlx(flatten)]
    attempt: AttemptView,
}

/// `GET /v1/webhook-endpoints/{id}/deliveries?status=&limit=&cursor=`.
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    query: std::result::Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveriesPage>> {
    caller.require(READ)?;
    let id: Uuid = endpoint_id(&id)?;
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(DeliveryStatus::parse(raw).ok_or_else(|| {
            let known: Vec<&str> = DeliveryStatus::ALL.iter().map(|s| s.as_str()).collect();
            Problem::bad_request("status", format!("status {raw:?} is not one of: {}", known.join(", ")))
        })?),
    };
    let limit: i64 = match &query.limit {
        None => 50,
        Some(raw) => match raw.parse() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(Problem::bad_request("limit", format!("limit {raw:?} must be a number from 1 to 200"))),
        },
    };
    let before: Option<i64> = match &query.cursor {
        None => None,
        Some(raw) => Some(
            raw.parse()
                .ok()
                .filter(|n: &i64| *n > 0)
                .ok_or_else(|| Problem::bad_request("cursor", "cursor is not one this API handed out"))?,
        ),
    };
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbound_endpoints WHERE id = $1)")
        .bind(id)
        .fetch_one(&app.pool)
        .await?;
    if !exists {
        return Err(Problem::not_found(format!("no webhook endpoint {id}")));
    }
    let mut rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT id, event_id, event_type, tenant_key, status, created_at, next_attempt_at, finished_at
         FROM outbound_deliveries
         WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::bigint IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(id)
    .bind(status.map(DeliveryStatus::as_str))
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&app.pool)
    .await?;
    let page = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > page;
    rows.truncate(page);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT delivery_id, attempt, attempted_at, duration_ms, status_code, error, response
         FROM outbound_attempts WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
    )
    .bind(&ids)
    .fetch_all(&app.pool)
    .await?;
    let mut by_delivery: HashMap<i64, Vec<AttemptView>> = HashMap::new();
    for row in attempts {
        by_delivery.entry(row.delivery_id).or_default().push(row.attempt);
    }
    let items: Vec<DeliveryView> = rows
        .into_iter()
        .map(|row| DeliveryView {
            attempts: by_delivery.remove(&row.id).unwrap_or_default(),
            id: row.id,
            event_id: row.event_id,
            event_type: row.event_type,
            tenant: row.tenant_key,
            // The table's CHECK allows only these three.
            status: DeliveryStatus::parse(&row.status).unwrap_or(DeliveryStatus::Pending),
            created_at: row.created_at,
            next_attempt_at: row.next_attempt_at,
            finished_at: row.finished_at,
        })
        .collect();
    let next_cursor = if more { items.last().map(|d| d.id.to_string()) } else { None };
    Ok(Json(DeliveriesPage { items, next_cursor }))
}
