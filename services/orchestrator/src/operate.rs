//! Starting a lifecycle saga (docs/lifecycle.md, "How a request becomes a
//! saga"): an OperationRequested, which the control plane sent once it had
//! recorded the request (`landlord_control_plane::operations::request`),
//! becomes a saga of its operation — or an OperationRejected, when the
//! tenant no longer allows it by the time it arrives.
//!
//! The control plane checked the request when it was made; this checks
//! again under the tenant's lock, in the transaction that starts the saga,
//! because something else may have started in between (a saga that came
//! another way, an older request delivered late).

use landlord_contract::{Event, Namespace, TenantKey, pb};
use landlord_control_plane::outbox::{self, Outgoing, Pending, Relay};
use landlord_control_plane::{Operation, Plans, StepState, TenantStatus};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::saga::{Request, Saga, SagaRow, Spec, StepRow, TENANT_COLUMNS, TenantRow, lifecycle};

type Tx = Transaction<'static, Postgres>;

/// What became of an OperationRequested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operate {
    Started {
        saga_id: Uuid,
    },
    /// Its saga exists already: nothing new.
    Repeated,
    /// Refused (the OperationRejected event says why); nothing changed.
    Rejected {
        rule: &'static str,
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// The message itself is wrong: no redelivery will change that.
    #[error("malformed operation request: {0}")]
    Malformed(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// What [`apply`] did: the outcome, the outbox rows to publish after
/// commit and, for a saga it started, the saga as saved (to keep).
#[derive(Debug)]
pub struct Applied {
    pub outcome: Operate,
    pub pending: Vec<Pending>,
    pub started: Option<Saga>,
}

fn uuid(text: &str, what: &str) -> Result<Uuid, OperateError> {
    Uuid::parse_str(text).map_err(|_| OperateError::Malformed(format!("{what} {text:?} is not a UUID")))
}

/// A refusal, and the saga at work that caused it (if one did).
struct Refusal {
    rule: &'static str,
    reason: String,
    running: Option<(Uuid, Operation)>,
}

impl Refusal {
    fn new(rule: &'static str, reason: String) -> Self {
        Self { rule, reason, running: None }
    }
}

/// Applies one OperationRequested inside `tx` (whose inbox entry the
/// caller wrote); `now` is when the saga starts.
pub async fn apply(
    tx: &mut Tx,
    namespace: &Namespace,
    plans: &Plans,
    request: &pb::OperationRequested,
    now: OffsetDateTime,
) -> Result<Applied, OperateError> {
    let saga_id = uuid(&request.saga_id, "saga id")?;
    let tenant_id = uuid(&request.tenant_id, "tenant id")?;
    let operation: Operation = request.operation.parse().map_err(|e| OperateError::Malformed(format!("{e}")))?;
    if operation == Operation::Provision {
        return Err(OperateError::Malformed("a provisioning starts from a TenantRequested".into()));
    }
    // The tenant's lock serialises this with the control plane's next
    // request and with every saga transition of the tenant.
    let tenant: Option<TenantRow> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 FOR UPDATE")))
            .bind(tenant_id)
            .fetch_optional(&mut **tx)
            .await?;
    let Some(tenant) = tenant else {
        let refusal = Refusal::new("tenant.unknown", format!("no tenant {tenant_id}"));
        return reject(tx, namespace, request, operation, None, refusal).await;
    };
    let seen: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM sagas WHERE id = $1").bind(saga_id).fetch_optional(&mut **tx).await?;
    if seen.is_some() {
        forget_request(tx, tenant_id, saga_id).await?;
        return Ok(Applied { outcome: Operate::Repeated, pending: Vec::new(), started: None });
    }
    let steps = match check(tx, plans, &tenant, operation, request).await? {
        Ok(steps) => steps,
        Err(refusal) => return reject(tx, namespace, request, operation, Some(&tenant), refusal).await,
    };
    let asked = match asked(&tenant, operation, request, now) {
        Ok(asked) => asked,
        Err(refusal) => return reject(tx, namespace, request, operation, Some(&tenant), refusal).await,
    };
    let mut steps: Vec<StepRow> = (0..).zip(steps).map(|(position, spec)| StepRow::pending(spec, position)).collect();
    if operation == Operation::Offboard && !asked.export {
        // The export was waived explicitly: its steps are skipped, and the
        // purge will need none.
        for step in steps.iter_mut().filter(|s| s.action == "export") {
            step.state = StepState::Skipped;
        }
    }
    if operation == Operation::Offboard && tenant.status == TenantStatus::Suspended {
        // Already suspended: suspending again would do nothing, and its
        // compensation (resume) would wake a tenant that was asleep before
        // the offboarding whenever the offboarding fails.
        for step in steps.iter_mut().filter(|s| s.action == "suspend") {
            step.state = StepState::Skipped;
        }
    }
    let mut row = SagaRow::running(saga_id, tenant.id, operation);
    row.requested_by.clone_from(&request.requested_by);
    row.reason.clone_from(&request.reason);
    row.request = Json(asked);
    Saga::insert(tx, &row, &request.idempotency_id, &steps).await?;
    forget_request(tx, tenant_id, saga_id).await?;
    let mut saga = Saga::started(namespace, row, tenant, steps);
    saga.begin();
    let saved = saga.saved();
    let pending = saga.save(tx).await?;
    Ok(Applied { outcome: Operate::Started { saga_id }, pending, started: Some(saved) })
}

/// The checks of the request, again: the tenant is not deleted, no other
/// saga is at work, its status allows the operation, a purge has its
/// export (or waived it), and the plan has a pipeline for it.
async fn check<'p>(
    tx: &mut Tx,
    plans: &'p Plans,
    tenant: &TenantRow,
    operation: Operation,
    request: &pb::OperationRequested,
) -> sqlx::Result<Result<&'p [landlord_control_plane::plans::StepSpec], Refusal>> {
    let key = &tenant.key;
    if tenant.status == TenantStatus::Deleted {
        return Ok(Err(Refusal::new("tenant.unknown", format!("tenant {key:?} was deleted"))));
    }
    let running: Option<(Uuid, Operation)> =
        sqlx::query_as("SELECT id, operation FROM sagas WHERE tenant_id = $1 AND state IN ('running', 'compensating')")
            .bind(tenant.id)
            .fetch_optional(&mut **tx)
            .await?;
    if let Some((id, running_operation)) = running {
        return Ok(Err(Refusal {
            rule: "operation.conflict",
            reason: format!("tenant {key:?} is busy: {running_operation} (saga {id}) is at work"),
            running: Some((id, running_operation)),
        }));
    }
    if !operation.allowed_from().contains(&tenant.status) {
        let reason = format!("cannot {operation} a {} tenant", tenant.status);
        return Ok(Err(Refusal::new("operation.not_allowed", reason)));
    }
    if operation == Operation::Purge && tenant.export_location.is_none() && !tenant.export_waived {
        let reason = format!("tenant {key:?} has no verified export and its offboarding did not waive one");
        return Ok(Err(Refusal::new("operation.export_missing", reason)));
    }
    if operation == Operation::Update && request.changed_tenant.is_none() {
        return Ok(Err(Refusal::new("operation.invalid", "an update names the tenant as it will be".into())));
    }
    match plans.steps(&tenant.plan, operation) {
        Some(steps) if !steps.is_empty() => Ok(Ok(steps)),
        _ => Ok(Err(Refusal::new(
            "operation.no_pipeline",
            format!("plan {:?} has no pipeline for {operation}", tenant.plan),
        ))),
    }
}

/// What the saga needs to know beyond the tenant row ([`Request`]).
fn asked(
    tenant: &TenantRow,
    operation: Operation,
    request: &pb::OperationRequested,
    now: OffsetDateTime,
) -> Result<Request, Refusal> {
    let mut asked = Request { previous_status: Some(tenant.status.as_str().to_owned()), ..Request::default() };
    match operation {
        Operation::Update => {
            let previous = Spec::of(tenant);
            let mut next = previous.clone();
            let changed_tenant = request.changed_tenant.clone().unwrap_or_default();
            for field in &request.changed {
                match field.as_str() {
                    "display_name" => next.display_name.clone_from(&changed_tenant.display_name),
                    "domains" => next.domains.clone_from(&changed_tenant.domains),
                    "admin" => {
                        let admin = changed_tenant.admin.clone().unwrap_or_default();
                        next.admin_email = admin.email;
                        next.admin_first_name = admin.first_name;
                        next.admin_last_name = admin.last_name;
                    }
                    "labels" => next.labels = changed_tenant.labels.clone().into_iter().collect(),
                    "plan" => next.plan.clone_from(&changed_tenant.plan),
                    other => {
                        return Err(Refusal::new("operation.invalid", format!("an update cannot change {other:?}")));
                    }
                }
            }
            asked.changed.clone_from(&request.changed);
            asked.previous = Some(previous);
            asked.next = Some(next);
        }
        Operation::Offboard => {
            let Some(purge_at) = &request.purge_at else {
                return Err(Refusal::new("operation.invalid", "an offboarding names when the purge is due".into()));
            };
            asked.purge_at = Some(purge_at.seconds);
            asked.export = request.export;
        }
        Operation::Export => asked.export = true,
        _ => {}
    }
    if matches!(operation, Operation::Offboard | Operation::Export) && asked.export {
        asked.export_prefix = Some(lifecycle::export_prefix(&tenant.key, tenant.id, now));
    }
    Ok(asked)
}

/// The request has been dealt with: the next one for the tenant may come.
async fn forget_request(tx: &mut Tx, tenant_id: Uuid, saga_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM operation_requests WHERE tenant_id = $1 AND saga_id = $2")
        .bind(tenant_id)
        .bind(saga_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// OperationRejected on the outbox, the refusal in the audit log (when the
/// tenant exists), and the request row gone.
async fn reject(
    tx: &mut Tx,
    namespace: &Namespace,
    request: &pb::OperationRequested,
    operation: Operation,
    tenant: Option<&TenantRow>,
    refusal: Refusal,
) -> Result<Applied, OperateError> {
    let token = tenant.map_or(request.tenant_key.as_str(), |t| t.key.as_str());
    let event = pb::OperationRejected {
        saga_id: request.saga_id.clone(),
        tenant_key: token.to_owned(),
        operation: operation.as_str().to_owned(),
        rule: refusal.rule.to_owned(),
        reason: refusal.reason.clone(),
        running_saga_id: refusal.running.map(|(id, _)| id.to_string()).unwrap_or_default(),
        running_operation: refusal.running.map(|(_, op)| op.as_str().to_owned()).unwrap_or_default(),
    };
    let subject = match TenantKey::parse(token) {
        Ok(key) => namespace.event_subject(&key, pb::OperationRejected::KIND),
        Err(_) => namespace.invalid_key_event_subject(pb::OperationRejected::KIND),
    };
    let message = Outgoing::new(subject, format!("{}.operation_rejected", request.saga_id), &event)
        .about(token, Some(&request.saga_id));
    let pending = outbox::write(tx, Relay::Orchestrator, &[message]).await?;
    if let Some(tenant) = tenant {
        let detail = serde_json::json!({
            "operation": operation.as_str(),
            "rule": refusal.rule,
            "reason": refusal.reason,
            "requested_by": request.requested_by,
        });
        sqlx::query(
            "INSERT INTO audit_log (actor, tenant_id, saga_id, action, detail)
             VALUES ('orchestrator', $1, $2, 'operation_rejected', $3)",
        )
        .bind(tenant.id)
        .bind(Uuid::parse_str(&request.saga_id).ok())
        .bind(detail)
        .execute(&mut **tx)
        .await?;
        forget_request(tx, tenant.id, Uuid::parse_str(&request.saga_id).unwrap_or_default()).await?;
    }
    Ok(Applied { outcome: Operate::Rejected { rule: refusal.rule, reason: refusal.reason }, pending, started: None })
}
