//! `GET /v1/tenants/{key}/audit`: who asked for what and why, oldest
//! first, a page at a time (keyset pagination on the entry id, as the list
//! of tenants pages on its creation time). A DELETED tenant's log stays
//! readable, by its id.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use landlord_contract::TenantKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::bodies::{AuditEntry, AuditPage};
use super::rows::find;
use crate::auth::{Caller, READ};
use crate::problem::{Problem, Result};
use crate::state::App;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// The id of the last entry of the previous page.
    id: i64,
}

fn decode_cursor(raw: &str) -> Result<i64> {
    let bad = || Problem::bad_request("cursor", "cursor is not one this API handed out");
    let cursor: Cursor =
        URL_SAFE_NO_PAD.decode(raw).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(bad)?;
    if cursor.id < 0 {
        return Err(bad());
    }
    Ok(cursor.id)
}

fn encode_cursor(last: &AuditEntry) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&Cursor { id: last.id }).unwrap_or_default())
}

/// `GET /v1/tenants/{key}/audit?limit=&cursor=` (the key, or the tenant's id).
pub async fn audit(
    State(app): State<App>,
    caller: Caller,
    Path(id_or_key): Path<String>,
    query: std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    caller.require(READ)?;
    let Query(query) =
        query.map_err(|e| Problem::bad_request("query", format!("the query string is not valid: {e}")))?;
    let limit: i64 = match &query.limit {
        None => 50,
        Some(raw) => match raw.parse() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => return Err(Problem::bad_request("limit", format!("limit {raw:?} must be a number from 1 to 200"))),
        },
    };
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    if Uuid::parse_str(&id_or_key).is_err() {
        TenantKey::parse(&id_or_key).map_err(|e| Problem::invalid(e.rule(), e.to_string()))?;
    }
    let Some(tenant) = find(&app, &id_or_key).await?.filter(|t| caller.may_see(t.summary.id)) else {
        return Err(Problem::not_found(format!("no tenant has the id or key {id_or_key:?}")));
    };
    let entries = landlord_control_plane::read::audit(&app.pool, tenant.summary.id, after, limit + 1).await?;
    let mut items: Vec<AuditEntry> = entries
        .into_iter()
        .map(|e| AuditEntry {
            id: e.id,
            at: e.at.to_offset(time::UtcOffset::UTC),
            actor: e.actor,
            saga_id: e.saga_id,
            action: e.action,
            detail: e.detail,
        })
        .collect();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_cursor = if more { items.last().map(encode_cursor) } else { None };
    Ok(Json(AuditPage { items, next_cursor }).into_response())
}
