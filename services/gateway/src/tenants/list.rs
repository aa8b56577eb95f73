//! `GET /v1/tenants`: filters and cursor pagination.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use landlord_control_plane::read::TenantFilter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::views::{Page, STATUSES, TenantSummary};
use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub plan: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
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
    let filter = TenantFilter {
        status: query.status.as_deref(),
        plan: query.plan.as_deref(),
        // A tenant-scoped token lists its own tenant only, in the query.
        tenant: caller.visible_tenant(),
        after,
        limit: limit + 1,
    };
    let mut items: Vec<TenantSummary> = landlord_control_plane::read::tenants(&app.pool, filter).await?;
    let more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { items.last().map(encode_cursor) } else { None };
    Ok(Json(Page { items, next_cursor }).into_response())
}
