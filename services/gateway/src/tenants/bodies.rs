//! What the lifecycle routes (suspend, resume, update, delete, restore,
//! export, audit) read and answer; the OpenAPI document's schemas are
//! derived from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::views::Admin;

/// The operations the API asks for, as the control plane spells them.
pub const OPERATIONS: &[&str] = &["suspend", "resume", "update", "offboard", "restore", "export", "purge"];

/// The body of `POST /v1/tenants/{key}/suspend`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SuspendTenant")]
pub struct SuspendBody {
    /// Why (non-payment, abuse, …): required, recorded in the audit log
    /// and the events.
    pub reason: String,
}

/// The optional body of resume, restore and export.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "OperationReason")]
pub struct ReasonBody {
    /// Recorded in the audit log and the events; a default sentence when
    /// absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The body of `PATCH /v1/tenants/{key}`: the fields to change; a field
/// left out (or null) stays as it is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(default)]
    pub display_name: Option<String>,
    /// All of the tenant's domains (replaces the list): the OIDC client's
    /// redirect URIs and web origins follow them.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// The administrator to contact (replaces the contact).
    #[serde(default)]
    pub admin: Option<Admin>,
    /// All of the tenant's labels (replaces them).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Another plan of the same tier.
    #[serde(default)]
    pub plan: Option<String>,
    /// Only the tenant's own tier: a tier change is not supported yet.
    #[serde(default)]
    #[schemars(extend("enum" = ["pooled", "bridge", "silo", null]))]
    pub tier: Option<String>,
    /// Recorded in the audit log; "updated through the API" when absent.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The body of `DELETE /v1/tenants/{key}`: an offboarding.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "DeleteTenant")]
pub struct DeleteBody {
    /// Why: required, recorded in the audit log, the events and the
    /// tombstone.
    pub reason: String,
    /// The grace period in whole seconds, during which `restore` brings the
    /// tenant back: LANDLORD_DELETION_GRACE (30 days) when absent, at most
    /// LANDLORD_DELETION_GRACE_MAX (90 days); 0 needs the scope
    /// tenants:purge.
    #[serde(default)]
    pub grace: Option<u64>,
    /// Export the tenant's data before the purge (default true); false
    /// waives it, and the purge needs no export.
    #[serde(default = "yes")]
    pub export: bool,
}

fn yes() -> bool {
    true
}

/// The 202 answer of a lifecycle operation: the saga that will run it, and
/// where to follow the tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct OperationAccepted {
    /// Derived from the operation and the Idempotency-Key: a repeat names
    /// the same saga.
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub saga_id: Uuid,
    #[schemars(extend("enum" = OPERATIONS))]
    pub operation: String,
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub tenant_id: Uuid,
    pub key: String,
    /// The tenant's URL (its running operation, saga progress and status),
    /// also sent as `Location`.
    pub status_url: String,
}

/// The operation at work on a tenant: requested, or its saga running.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
pub struct RunningOperation {
    pub operation: String,
    #[schemars(with = "String", extend("format" = "uuid"))]
    pub saga_id: Uuid,
}

/// One entry of a tenant's audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, JsonSchema)]
pub struct AuditEntry {
    /// Increasing: the order entries were written in.
    pub id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub at: OffsetDateTime,
    /// Who: a token's subject, `clerk`, `landlord` (the purge timer), a
    /// service.
    pub actor: String,
    #[schemars(with = "Option<String>", extend("format" = "uuid"))]
    pub saga_id: Option<Uuid>,
    /// What, e.g. `suspend.requested`.
    pub action: String,
    /// The rest: reason, what changed, …
    pub detail: Value,
}

/// A page of a tenant's audit log, oldest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}
