//! What `/v1/tenants` reads and answers; the OpenAPI document's schemas
//! are derived from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::bodies::RunningOperation;

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
    /// The latest saga: provisioning, its retry, or a later operation.
    pub saga: Option<SagaView>,
    /// The operation at work on the tenant (requested, or its saga
    /// running): another one is refused until it is done.
    pub operation: Option<RunningOperation>,
    /// DELETION_SCHEDULED: when the grace period ends and the purge starts.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub purge_at: Option<OffsetDateTime>,
    /// Where the latest verified export is (`s3://<bucket>/<prefix>`).
    pub export_location: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub exported_at: Option<OffsetDateTime>,
    /// DELETED: when it was purged, who asked for its offboarding and why.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub deleted_at: Option<OffsetDateTime>,
    pub deleted_by: Option<String>,
    pub deletion_reason: Option<String>,
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

/// The tenant statuses, as the control plane spells them
/// ([`landlord_control_plane::TenantStatus`]).
pub const STATUSES: &[&str] = landlord_control_plane::TenantStatus::NAMES;

/// A page of tenants.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Page {
    pub items: Vec<TenantSummary>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
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
