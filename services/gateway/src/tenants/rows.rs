//! A tenant's row, as the handlers that need more than its view read it.

use std::collections::BTreeMap;

use sqlx::types::Json as SqlJson;

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

/// Looks a tenant up by id (a UUID) or by key.
pub(super) async fn find(app: &App, id_or_key: &str) -> Result<Option<TenantRow>> {
    Ok(landlord_control_plane::read::tenant_row(&app.pool, id_or_key).await?)
}
