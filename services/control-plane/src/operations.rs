//! Lifecycle operations asked for (docs/lifecycle.md, "How a request
//! becomes a saga"): [`request`] checks a request against the tenant as it
//! is, in one transaction with the tenant row locked, records it and puts an
//! `OperationRequested` on the outbox for the orchestrator, which starts the
//! saga. The API, the Clerk bridge, the CLI and the purge timer all ask here,
//! so they refuse the same requests the same way.
//!
//! One operation at a time per tenant: a saga at work (`sagas_one_at_work`)
//! or a request recorded and not started yet (`operation_requests`) makes
//! the next request a [`Refused::Conflict`]. A request's saga id derives
//! from its operation and idempotency id, so a repeat names the same saga
//! and records nothing new.

mod update;

use std::collections::BTreeMap;

use landlord_contract::{Namespace, pb};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::outbox::{self, Outgoing, Pending, Relay};
use crate::plans::{Plans, parse_tier};
use crate::request::Rejection;
use crate::{Operation, SagaState, TenantStatus, ids};

/// An operation asked for a live tenant.
#[derive(Debug, Clone)]
pub struct OperationRequest {
    pub tenant_key: String,
    /// Never `Provision`: a tenant is made by a `TenantRequested`.
    pub operation: Operation,
    /// e.g. `api:<Idempotency-Key>`, `clerk:<svix-id>`, `purge:<tenant id>:<purge_at>`.
    pub idempotency_id: String,
    pub requested_by: String,
    /// Required for suspend and offboard.
    pub reason: String,
    /// Update only: the fields to change.
    pub patch: Option<TenantPatch>,
    /// Offboard only (required): when the grace period ends.
    pub purge_at: Option<OffsetDateTime>,
    /// Offboard only: false waives the export (an explicit request).
    pub export: bool,
}

/// What an update changes; `None` keeps the field as it is. Labels, when
/// given, replace the tenant's labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub domains: Option<Vec<String>>,
    pub admin: Option<pb::AdminContact>,
    pub labels: Option<BTreeMap<String, String>>,
    pub plan: Option<String>,
}

/// A request recorded, or recognised as one recorded before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub saga_id: Uuid,
    pub tenant_id: Uuid,
    /// The same idempotency id was seen before: nothing new was recorded.
    pub repeated: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No live tenant has the key (a DELETED tenant is not live).
    #[error("no live tenant has this key")]
    UnknownTenant,
    /// Another operation is at work on the tenant, or asked for and not
    /// started yet.
    #[error("{operation} (saga {saga_id}) is at work on the tenant: one operation at a time")]
    Conflict { operation: Operation, saga_id: Uuid },
    #[error("cannot {operation} a {status} tenant")]
    NotAllowed { operation: Operation, status: TenantStatus },
    #[error("{}: {}", .0.rule, .0.reason)]
    Invalid(Rejection),
    /// A purge of a tenant without a verified export whose offboarding did
    /// not waive it.
    #[error("the tenant has no verified export and its offboarding did not waive one")]
    ExportMissing,
    /// An update whose patch changes nothing.
    #[error("the update changes nothing")]
    NothingChanged,
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("operation refused: {0}")]
    Refused(#[from] Refused),
    #[error("database error while recording an operation request")]
    Database(#[from] sqlx::Error),
}

/// The longest idempotency id kept (as for a `TenantRequested`).
const MAX_IDEMPOTENCY_ID: usize = 200;

/// A tenant row as the lifecycle reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRecord {
    pub id: Uuid,
    pub key: String,
    pub display_name: String,
    pub plan: String,
    pub tier: String,
    pub status: TenantStatus,
    pub domains: Vec<String>,
    pub admin_email: String,
    pub admin_first_name: String,
    pub admin_last_name: String,
    pub labels: Json<BTreeMap<String, String>>,
    pub exported_at: Option<OffsetDateTime>,
    pub export_waived: bool,
}

/// The columns of [`TenantRecord`], for a `SELECT` from `tenants`.
pub const TENANT_RECORD_COLUMNS: &str = "id, key, display_name, plan, tier, status, domains, admin_email, \
     admin_first_name, admin_last_name, labels, exported_at, export_waived";

impl TenantRecord {
    /// The tenant as step commands carry it.
    pub fn spec(&self) -> pb::TenantSpec {
        tenant_spec(
            self.id,
            &self.key,
            &self.display_name,
            &self.plan,
            &self.tier,
            pb::AdminContact {
                email: self.admin_email.clone(),
                first_name: self.admin_first_name.clone(),
                last_name: self.admin_last_name.clone(),
            },
            &self.domains,
            &self.labels.0,
        )
    }
}

/// A `TenantSpec` from a tenant row's columns (`tier` as stored: pooled,
/// bridge or silo).
#[allow(clippy::too_many_arguments)]
pub fn tenant_spec<'a>(
    id: Uuid,
    key: &str,
    display_name: &str,
    plan: &str,
    tier: &str,
    admin: pb::AdminContact,
    domains: &[String],
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> pb::TenantSpec {
    pb::TenantSpec {
        tenant_id: id.to_string(),
        key: key.to_owned(),
        display_name: display_name.to_owned(),
        plan: plan.to_owned(),
        tier: parse_tier(tier).unwrap_or(pb::Tier::Unspecified) as i32,
        admin: Some(admin),
        domains: domains.to_vec(),
        labels: labels.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// The live tenant (any status but DELETED) with `key`, locked for the
/// transaction.
pub async fn live_tenant_for_update(
    tx: &mut Transaction<'static, Postgres>,
    key: &str,
) -> sqlx::Result<Option<TenantRecord>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TENANT_RECORD_COLUMNS} FROM tenants WHERE key = $1 AND status <> $2 FOR UPDATE"
    )))
    .bind(key)
    .bind(TenantStatus::Deleted)
    .fetch_optional(&mut **tx)
    .await
}

/// Checks `request` against its tenant and, if it may go ahead, records it
/// in one transaction: the `operation_requests` row, an audit row and the
/// `OperationRequested` for the orchestrator on the outbox. Returns the
/// outbox rows for the caller's [`outbox::Dispatcher`] (after the commit,
/// which has happened when this returns); none for a repeat.
pub async fn request(
    pool: &PgPool,
    namespace: &Namespace,
    plans: &Plans,
    request: OperationRequest,
) -> Result<(Requested, Vec<Pending>), RequestError> {
    check_request(&request)?;
    let saga_id = ids::saga_id(request.operation, &request.idempotency_id);
    let mut tx = pool.begin().await?;
    let Some(tenant) = live_tenant_for_update(&mut tx, &request.tenant_key).await? else {
        // A repeat of a request whose saga ended the tenant (a purge).
        let earlier: Option<Uuid> = sqlx::query_scalar(
            "SELECT s.tenant_id FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE s.id = $1 AND t.key = $2",
        )
        .bind(saga_id)
        .bind(&request.tenant_key)
        .fetch_optional(&mut *tx)
        .await?;
        return match earlier {
            Some(tenant_id) => Ok((Requested { saga_id, tenant_id, repeated: true }, Vec::new())),
            None => Err(Refused::UnknownTenant.into()),
        };
    };
    if let Some(requested) = seen_before(&mut tx, &tenant, saga_id).await? {
        return Ok((requested, Vec::new()));
    }
    if let Some((operation, saga_id)) = operation_at_work(&mut tx, tenant.id).await? {
        return Err(Refused::Conflict { operation, saga_id }.into());
    }
    let operation = request.operation;
    if !operation.allowed_from().contains(&tenant.status) {
        return Err(Refused::NotAllowed { operation, status: tenant.status }.into());
    }
    if plans.steps(&tenant.plan, operation).is_none() {
        return Err(Refused::Invalid(Rejection::new(
            "plan.no_pipeline",
            format!("plan {:?} has no pipeline for {operation}", tenant.plan),
        ))
        .into());
    }
    if operation == Operation::Purge && tenant.exported_at.is_none() && !tenant.export_waived {
        return Err(Refused::ExportMissing.into());
    }
    let update = match operation {
        Operation::Update => Some(update::apply(&mut tx, plans, &tenant, &request).await??),
        _ => None,
    };
    let mut message = pb::OperationRequested {
        saga_id: saga_id.to_string(),
        tenant_id: tenant.id.to_string(),
        tenant_key: tenant.key.clone(),
        operation: operation.to_string(),
        idempotency_id: request.idempotency_id.clone(),
        requested_by: request.requested_by.clone(),
        reason: request.reason.clone(),
        ..Default::default()
    };
    let mut detail = serde_json::json!({
        "reason": request.reason,
        "saga_id": saga_id.to_string(),
        "idempotency_id": request.idempotency_id,
    });
    if let Some(update) = update {
        detail["changed"] = serde_json::json!(update.changed);
        message.changed = update.changed;
        message.changed_tenant = Some(update.tenant);
    }
    if operation == Operation::Offboard {
        let purge_at = request.purge_at.unwrap_or_else(OffsetDateTime::now_utc);
        message.purge_at =
            Some(prost_types::Timestamp { seconds: purge_at.unix_timestamp(), nanos: purge_at.nanosecond() as i32 });
        message.export = request.export;
        detail["purge_at"] = serde_json::json!(purge_at.unix_timestamp());
        detail["export"] = serde_json::json!(request.export);
    }
    sqlx::query("INSERT INTO operation_requests (tenant_id, saga_id, operation) VALUES ($1, $2, $3)")
        .bind(tenant.id)
        .bind(saga_id)
        .bind(operation)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO audit_log (actor, tenant_id, saga_id, action, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(&request.requested_by)
        .bind(tenant.id)
        .bind(saga_id)
        .bind(format!("{operation}_requested"))
        .bind(Json(&detail))
        .execute(&mut *tx)
        .await?;
    let outgoing = Outgoing::new(namespace.command_subject("orchestrator", "operate"), saga_id.to_string(), &message)
        .about(&tenant.key, Some(&saga_id.to_string()));
    // The gateway (the API) and the orchestrator (its purge timer) both ask,
    // and publish the row at once; should that not happen, the
    // orchestrator's sweep relays it — the command is for the orchestrator,
    // and both may publish it.
    let pending = outbox::write(&mut tx, Relay::Orchestrator, &[outgoing]).await?;
    tx.commit().await?;
    Ok((Requested { saga_id, tenant_id: tenant.id, repeated: false }, pending))
}

/// The checks that need no database: the operation, the idempotency id,
/// the reason where one is required, the purge time of an offboarding.
fn check_request(request: &OperationRequest) -> Result<(), Refused> {
    let invalid = |rule: &str, reason: String| Err(Refused::Invalid(Rejection::new(rule, reason)));
    if request.operation == Operation::Provision {
        return invalid("operation.provision", "a tenant is provisioned by a tenant request, not an operation".into());
    }
    let idempotency_id = request.idempotency_id.trim();
    if idempotency_id.is_empty() || request.idempotency_id.len() > MAX_IDEMPOTENCY_ID {
        return invalid(
            "idempotency_id.missing",
            format!("idempotency_id must be 1 to {MAX_IDEMPOTENCY_ID} characters"),
        );
    }
    if matches!(request.operation, Operation::Suspend | Operation::Offboard) && request.reason.trim().is_empty() {
        return invalid("reason.required", format!("a reason is required to {}", request.operation));
    }
    if request.operation == Operation::Offboard && request.purge_at.is_none() {
        return invalid("purge_at.missing", "an offboarding needs the time its grace period ends".into());
    }
    Ok(())
}

/// The request whose saga is `saga_id`, if it was made before: its saga
/// exists, or it is recorded and not started yet. The same idempotency id
/// used for another tenant is refused.
async fn seen_before(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantRecord,
    saga_id: Uuid,
) -> Result<Option<Requested>, RequestError> {
    let earlier: Option<Uuid> = sqlx::query_scalar(
        "SELECT tenant_id FROM sagas WHERE id = $1
         UNION ALL SELECT tenant_id FROM operation_requests WHERE saga_id = $1
         LIMIT 1",
    )
    .bind(saga_id)
    .fetch_optional(&mut **tx)
    .await?;
    match earlier {
        None => Ok(None),
        Some(tenant_id) if tenant_id == tenant.id => Ok(Some(Requested { saga_id, tenant_id, repeated: true })),
        Some(_) => Err(Refused::Invalid(Rejection::new(
            "idempotency_id.reused",
            "the idempotency id was already used for another tenant's operation",
        ))
        .into()),
    }
}

/// The operation at work on `tenant`, or asked for and not started yet,
/// with its saga id.
async fn operation_at_work(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
) -> sqlx::Result<Option<(Operation, Uuid)>> {
    let at_work: Vec<SagaState> = SagaState::ALL.iter().copied().filter(|s| s.is_at_work()).collect();
    sqlx::query_as(
        "SELECT operation, id FROM sagas WHERE tenant_id = $1 AND state = ANY($2)
         UNION ALL SELECT operation, saga_id FROM operation_requests WHERE tenant_id = $1
         LIMIT 1",
    )
    .bind(tenant)
    .bind(&at_work)
    .fetch_optional(&mut **tx)
    .await
}
