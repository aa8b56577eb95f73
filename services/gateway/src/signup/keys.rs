//! `GET /v1/tenant-keys/{key}`: whether a sign-up form's key can be had —
//! available, taken, or the rule it breaks. Nothing more than "taken" is
//! said about an existing tenant.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use landlord_contract::TenantKey;
use serde::Serialize;
use sqlx::PgExecutor;

use super::Signups;
use crate::problem::Result;

/// The answer of `GET /v1/tenant-keys/{key}`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct KeyAvailability {
    pub key: String,
    pub available: bool,
    /// The tenant-key rule the key breaks (`tenant_key.too_short`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why it is not available: `taken`, or the rule's explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Whether a live tenant, a Clerk organization or an API request holds
/// `key` (a DELETED tombstone does not, nor the request that made it).
pub(super) async fn taken(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenants WHERE key = $1 AND status <> 'DELETED')
             OR EXISTS (SELECT 1 FROM clerk_organizations WHERE tenant_key = $1)
             OR EXISTS (SELECT 1 FROM api_requests r WHERE r.tenant_key = $1
                        AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = r.tenant_id AND t.status = 'DELETED'))",
    )
    .bind(key)
    .fetch_one(db)
    .await
}

/// `GET /v1/tenant-keys/{key}` (public, limited per address).
pub(crate) async fn check(
    State(signups): State<Signups>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(key): Path<String>,
) -> Result<Json<KeyAvailability>> {
    signups.checks.take(client.ip(), "key checks")?;
    let answer = match TenantKey::parse(&key) {
        Err(broken) => KeyAvailability {
            key,
            available: false,
            rule: Some(broken.rule().to_owned()),
            reason: Some(broken.to_string()),
        },
        Ok(valid) if taken(&signups.app.pool, valid.as_str()).await? => {
            KeyAvailability { key, available: false, rule: None, reason: Some("taken".to_owned()) }
        }
        Ok(_) => KeyAvailability { key, available: true, rule: None, reason: None },
    };
    Ok(Json(answer))
}
