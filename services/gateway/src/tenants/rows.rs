//! A tenant's row, as the handlers that need more than its view read it.

use std::collections::BTreeMap;

use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::views::TenantSummary;
use crate::problem::Result;
use crate::state::App;

/// A tenant's row.
#[derive(sqlx::FromRow)]
pub(super) struct TenantRow {
    #[sqlx(flatten)]
    pub(super) summary: TenantSummary,
    pub(super) domains: Vec<String>,
    pub(super) admin_email: String,
    pub(super) admin_first_name: String,
    pub(super) admin_last_name: String,
    pub(super) labels: SqlJson<BTreeMap<String, String>>,
    pub(super) failed_step: Option<String>,
    pub(super) failure_reason: Option<String>,
}

pub(super) const SUMMARY: &str = "id, key, display_name, status, plan, tier, created_at, updated_at";

/// Looks a tenant up by id (a UUID) or by key.
pub(super) async fn find(app: &App, id_or_key: &str) -> Result<Option<TenantRow>> {
    let sql = format!(
        "SELECT {SUMMARY}, domains, admin_email, admin_first_name, admin_last_name, labels, failed_step,
                failure_reason
         FROM tenants WHERE {}",
        if Uuid::parse_str(id_or_key).is_ok() { "id = $1::uuid" } else { "key = $1" }
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id_or_key).fetch_optional(&app.pool).await?)
}
