//! Intake: a TenantRequested becomes a tenant and its saga, or a
//! TenantRejected that names the rule the request broke. Nothing is created
//! for a rejected request; a repeated request finds what the first made.

use landlord_contract::pb;
use landlord_contract::{CeType, Event, EventKind, Namespace, TenantKey, header};
use landlord_control_plane::ids::{saga_id, tenant_id};
use landlord_control_plane::outbox::{self, Outgoing, Pending, Relay};
use landlord_control_plane::plans::{Plans, tier_name};
use landlord_control_plane::request::{Rejection, ValidRequest, validate};
use landlord_control_plane::{Operation, TenantStatus};
use landlord_runtime::DeliveryInfo;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::saga::{Saga, SagaRow, StepRow, TenantRow};

type Tx = Transaction<'static, Postgres>;

/// How a request arrived: the subject it was published on and the
/// CloudEvents headers it carried, checked by [`check_arrival`].
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    pub subject: String,
    pub ce_type: Option<String>,
    pub ce_subject: Option<String>,
}

impl Arrival {
    pub fn of(info: &DeliveryInfo) -> Self {
        let get = |name: &str| info.headers.get(name).map(|v| v.as_str().to_owned());
        Self { subject: info.subject.clone(), ce_type: get(header::TYPE), ce_subject: get(header::SUBJECT) }
    }

    /// The key token of the subject, when it is a valid key: where the
    /// publisher was allowed to publish, so where its rejection goes.
    fn subject_key(&self, namespace: &Namespace) -> Option<TenantKey> {
        let (token, _) = namespace.parse_event_subject(&self.subject)?;
        TenantKey::parse(token).ok()
    }
}

/// The request contract, checked where a request arrives (issue 23): a
/// `ce-type` naming the message decoded, and the key in the subject — what
/// per-subject bus permissions allow a publisher — the same as the key in
/// the payload (and in `ce-subject`, when set). A payload key that breaks
/// the key rule is named by that rule rather than as a mismatch.
pub fn check_arrival(namespace: &Namespace, arrival: &Arrival, request: &pb::TenantRequested) -> Result<(), Rejection> {
    let expected = pb::TenantRequested::CE_TYPE;
    match arrival.ce_type.as_deref() {
        Some(ty) if ty == expected => {}
        Some(ty) => {
            return Err(Rejection::new(
                "request.ce_type",
                format!("ce-type {ty:?} is not {expected:?}: a request is decoded only as what it says it is"),
            ));
        }
        None => {
            return Err(Rejection::new(
                "request.ce_type",
                format!("the request has no ce-type header; it must be {expected:?}"),
            ));
        }
    }
    let key = TenantKey::parse(&request.key)?;
    match namespace.parse_event_subject(&arrival.subject) {
        Some((token, EventKind::Requested)) if token == key.as_str() => {}
        _ => {
            return Err(Rejection::new(
                "request.subject_key",
                format!(
                    "the request for key {:?} was published on {:?}, not on {:?}",
                    key.as_str(),
                    arrival.subject,
                    namespace.event_subject(&key, EventKind::Requested)
                ),
            ));
        }
    }
    if let Some(ce_subject) = arrival.ce_subject.as_deref().filter(|s| *s != key.as_str()) {
        return Err(Rejection::new(
            "request.ce_subject",
            format!("ce-subject {ce_subject:?} is not the request's key {:?}", key.as_str()),
        ));
    }
    Ok(())
}

/// The first of `domains` another live tenant lists, if any. A domain
/// belongs to one live tenant at a time; FAILED, CANCELLED and DELETED
/// tenants hold none. Each domain is locked (a transaction-scoped advisory
/// lock, in sorted order, so two intakes never wait on each other
/// crosswise) until the transaction ends, so two requests for one domain
/// cannot both find it free. Domains are lower-case by the domain rule, so
/// `&&` compares them exactly, on the index of live tenants' domains
/// (migration 0009).
async fn taken_domain(tx: &mut Tx, domains: &[String], key: &str, tenant: Uuid) -> sqlx::Result<Option<String>> {
    if domains.is_empty() {
        return Ok(None);
    }
    let mut sorted: Vec<String> = domains.iter().map(|d| d.to_lowercase()).collect();
    sorted.sort();
    sorted.dedup();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('landlord.domain:' || d, 0)) FROM unnest($1::text[]) AS d",
    )
    .bind(&sorted)
    .execute(&mut **tx)
    .await?;
    sqlx::query_scalar(
        "SELECT d FROM tenants t CROSS JOIN LATERAL unnest(t.domains) AS d
         WHERE t.domains && $1 AND d = ANY($1) AND t.key <> $2 AND t.id <> $3
           AND t.status NOT IN ('FAILED', 'CANCELLED', 'DELETED')
         ORDER BY 1 LIMIT 1",
    )
    .bind(&sorted)
    .bind(key)
    .bind(tenant)
    .fetch_optional(&mut **tx)
    .await
}

/// Names the domain, never the tenant that holds it: the rejection goes to
/// the requester's feed.
fn domain_taken(domain: String) -> Rejection {
    Rejection::new(
        "tenant.domain_taken",
        format!("domain {domain:?} belongs to another tenant; a domain belongs to one live tenant at a time"),
    )
}

/// What intake did with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intake {
    Accepted {
        tenant_id: Uuid,
        saga_id: Uuid,
    },
    /// The same request was seen before: nothing new.
    Repeated,
    Rejected(Rejection),
}

/// The TenantRejected for `request`, on the subject of the key it arrived
/// under (else its payload key, else `_invalid`), with that token as
/// `ce-subject` and, as correlation id, the saga id the request would have
/// started — like every other event about a request.
fn rejected_event(
    namespace: &Namespace,
    request: &pb::TenantRequested,
    request_id: &str,
    rejection: &Rejection,
    route: Option<TenantKey>,
) -> Outgoing {
    let event = pb::TenantRejected {
        idempotency_id: request.idempotency_id.clone(),
        key: request.key.clone(),
        rule: rejection.rule.clone(),
        reason: rejection.reason.clone(),
    };
    let route = route.or_else(|| TenantKey::parse(&request.key).ok());
    let (subject, token) = match &route {
        Some(key) => (namespace.event_subject(key, pb::TenantRejected::KIND), key.as_str()),
        None => (namespace.invalid_key_event_subject(pb::TenantRejected::KIND), "_invalid"),
    };
    let correlation = saga_id(Operation::Provision, &request.idempotency_id).to_string();
    Outgoing::new(subject, format!("{request_id}.rejected"), &event).about(token, Some(&correlation))
}

/// What [`apply`] did: the outcome, the outbox rows to publish after
/// commit and, for a saga it started, the saga as saved — for the
/// orchestrator to keep once the transaction commits, so the first result
/// is applied without loading it.
#[derive(Debug)]
pub struct Applied {
    pub outcome: Intake,
    pub pending: Vec<Pending>,
    pub started: Option<Saga>,
}

impl Applied {
    fn nothing(outcome: Intake, pending: Vec<Pending>) -> Self {
        Self { outcome, pending, started: None }
    }
}

/// Applies one request that arrived from the bus inside `tx`: the request
/// contract first ([`check_arrival`]), then [`apply`].
pub async fn apply_arrived(
    tx: &mut Tx,
    namespace: &Namespace,
    plans: &Plans,
    request: &pb::TenantRequested,
    request_id: &str,
    arrival: &Arrival,
) -> sqlx::Result<Applied> {
    let route = arrival.subject_key(namespace);
    if let Err(rejection) = check_arrival(namespace, arrival, request) {
        let rejected = rejected_event(namespace, request, request_id, &rejection, route);
        let pending = outbox::write(tx, Relay::Orchestrator, &[rejected]).await?;
        return Ok(Applied::nothing(Intake::Rejected(rejection), pending));
    }
    apply(tx, namespace, plans, request, request_id).await
}

/// Applies one request inside `tx`; `request_id` is its message id.
pub async fn apply(
    tx: &mut Tx,
    namespace: &Namespace,
    plans: &Plans,
    request: &pb::TenantRequested,
    request_id: &str,
) -> sqlx::Result<Applied> {
    let reject = async |tx: &mut Tx, rejection: Rejection| {
        let pending =
            outbox::write(tx, Relay::Orchestrator, &[rejected_event(namespace, request, request_id, &rejection, None)])
                .await?;
        Ok(Applied::nothing(Intake::Rejected(rejection), pending))
    };
    let valid = match validate(request, plans) {
        Ok(valid) => valid,
        Err(rejection) => return reject(tx, rejection).await,
    };
    if let Some(retry_of) = request.retry_of.as_deref() {
        return match retry_of_failed(tx, &valid, request, retry_of).await? {
            Ok(Some(tenant)) => {
                let saga = saga_id(Operation::Provision, &request.idempotency_id);
                start_saga(tx, namespace, &valid, request, saga, Started::Again(tenant)).await
            }
            Ok(None) => Ok(Applied::nothing(Intake::Repeated, Vec::new())),
            Err(rejection) => reject(tx, rejection).await,
        };
    }
    let tenant = tenant_row(&valid, request);
    if let Some(held) = taken_domain(tx, &tenant.domains, &tenant.key, tenant.id).await? {
        return reject(tx, domain_taken(held)).await;
    }
    // Any conflict — the key taken, the idempotency id used before — leaves
    // the row alone; the tenant that is there tells which it was.
    let inserted = sqlx::query(
        "INSERT INTO tenants (id, key, display_name, plan, tier, status, domains, admin_email, admin_first_name,
                              admin_last_name, labels, source, idempotency_id)
         VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.id)
    .bind(&tenant.key)
    .bind(&tenant.display_name)
    .bind(&tenant.plan)
    .bind(&tenant.tier)
    .bind(&tenant.domains)
    .bind(&tenant.admin_email)
    .bind(&tenant.admin_first_name)
    .bind(&tenant.admin_last_name)
    .bind(&tenant.labels)
    .bind(&request.source)
    .bind(&request.idempotency_id)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 1 {
        let saga = saga_id(Operation::Provision, &request.idempotency_id);
        return start_saga(tx, namespace, &valid, request, saga, Started::New(Box::new(tenant))).await;
    }
    // The key is taken (by this request before, or by another), or the
    // idempotency id already made a tenant under another key.
    // A DELETED tenant is a tombstone: its key is free for another
    // request, but a repeat of the request that made it still finds it,
    // even once the key belongs to another tenant.
    let taken: Option<String> = sqlx::query_scalar(
        "SELECT idempotency_id FROM tenants WHERE key = $1 AND (status <> 'DELETED' OR id = $2)
         ORDER BY (id = $2) DESC LIMIT 1",
    )
    .bind(valid.key.as_str())
    .bind(tenant.id)
    .fetch_optional(&mut **tx)
    .await?;
    let rejection = match taken {
        Some(idempotency_id) if idempotency_id == request.idempotency_id => {
            return Ok(Applied::nothing(Intake::Repeated, Vec::new()));
        }
        Some(_) => {
            Rejection::new("tenant_key.duplicate", format!("tenant key {:?} is already taken", valid.key.as_str()))
        }
        None => Rejection::new(
            "idempotency_id.reused",
            format!("idempotency id {:?} was already used for another tenant key", request.idempotency_id),
        ),
    };
    reject(tx, rejection).await
}

/// The tenant row a valid request makes, as inserted.
fn tenant_row(valid: &ValidRequest<'_>, request: &pb::TenantRequested) -> TenantRow {
    let admin_email = request.admin.as_ref().map(|a| a.email.clone()).unwrap_or_default();
    TenantRow {
        id: tenant_id(&request.idempotency_id),
        key: valid.key.as_str().to_owned(),
        display_name: valid.display_name.clone(),
        plan: valid.plan.name.clone(),
        tier: tier_name(valid.tier).to_owned(),
        status: TenantStatus::Pending,
        domains: request.domains.clone(),
        admin_email,
        admin_first_name: valid.admin_first_name.clone(),
        admin_last_name: valid.admin_last_name.clone(),
        labels: Json(valid.labels.clone()),
        failed_step: None,
        failure_reason: None,
        purge_at: None,
        export_location: None,
        exported_at: None,
        export_waived: false,
        deleted_at: None,
        deleted_by: None,
        deletion_reason: None,
    }
}

/// A retry of a FAILED tenant (`retry_of`): the tenant goes back to PENDING
/// (`Some`, its id) and a new saga, named by the retry's idempotency id,
/// provisions it again; `None` if that saga exists already. Anything else
/// carrying `retry_of` is rejected with the reason.
async fn retry_of_failed(
    tx: &mut Tx,
    valid: &ValidRequest<'_>,
    request: &pb::TenantRequested,
    retry_of: &str,
) -> sqlx::Result<Result<Option<Uuid>, Rejection>> {
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM tenants WHERE key = $1 AND status <> 'DELETED'")
        .bind(valid.key.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(tenant) = existing.filter(|tenant| tenant.to_string() == retry_of) else {
        return Ok(Err(Rejection::new(
            "retry.unknown_tenant",
            format!("tenant key {:?} does not belong to tenant {retry_of:?}", valid.key.as_str()),
        )));
    };
    let saga = saga_id(Operation::Provision, &request.idempotency_id);
    let seen: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM sagas WHERE id = $1").bind(saga).fetch_optional(&mut **tx).await?;
    if seen.is_some() {
        return Ok(Ok(None));
    }
    let status: TenantStatus = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?;
    if status != TenantStatus::Failed {
        return Ok(Err(Rejection::new(
            "retry.not_failed",
            format!("tenant {:?} is {status}: only a FAILED tenant is retried", valid.key.as_str()),
        )));
    }
    // A FAILED tenant let go of its domains: another may have taken one.
    let domains: Vec<String> =
        sqlx::query_scalar("SELECT domains FROM tenants WHERE id = $1").bind(tenant).fetch_one(&mut **tx).await?;
    if let Some(held) = taken_domain(tx, &domains, valid.key.as_str(), tenant).await? {
        return Ok(Err(domain_taken(held)));
    }
    sqlx::query(
        "UPDATE tenants SET status = 'PENDING', failed_step = NULL, failure_reason = NULL,
                updated_at = now(), version = version + 1
         WHERE id = $1",
    )
    .bind(tenant)
    .execute(&mut **tx)
    .await?;
    Ok(Ok(Some(tenant)))
}

/// Whose saga [`start_saga`] starts.
enum Started {
    /// A tenant this transaction inserted, as inserted.
    New(Box<TenantRow>),
    /// A FAILED tenant provisioned again, by id: its row is read back.
    Again(Uuid),
}

/// Creates saga `saga` with the plan's steps and starts it: the saga and
/// its steps in one statement, then everything the start decides — the
/// TenantAccepted event first — in the saga's one save.
async fn start_saga(
    tx: &mut Tx,
    namespace: &Namespace,
    valid: &ValidRequest<'_>,
    request: &pb::TenantRequested,
    saga: Uuid,
    started: Started,
) -> sqlx::Result<Applied> {
    let tenant = match &started {
        Started::New(row) => row.id,
        Started::Again(id) => *id,
    };
    // The rows as they are inserted and, for a new tenant, kept: one
    // conversion from the plan for both.
    let steps: Vec<StepRow> =
        (0..).zip(&valid.plan.steps).map(|(position, spec)| StepRow::pending(spec, position)).collect();
    let row = SagaRow::running(saga, tenant, Operation::Provision);
    Saga::insert(tx, &row, &request.idempotency_id, &steps).await?;
    let mut state = match started {
        // As the statements above left them: nothing to read back.
        Started::New(tenant) => Saga::started(namespace, row, *tenant, steps),
        Started::Again(_) => Saga::load(tx, namespace, saga, false).await?.ok_or(sqlx::Error::RowNotFound)?,
    };
    let accepted = pb::TenantAccepted {
        tenant_id: tenant.to_string(),
        saga_id: saga.to_string(),
        idempotency_id: request.idempotency_id.clone(),
        tier: valid.tier as i32,
        plan: valid.plan.name.clone(),
    };
    let subject = namespace.event_subject(&valid.key, pb::TenantAccepted::KIND);
    state.outgoing.push(
        Outgoing::new(subject, format!("{saga}.accepted.0"), &accepted)
            .about(valid.key.as_str(), Some(&saga.to_string())),
    );
    state.begin();
    let saved = state.saved();
    let pending = state.save(tx).await?;
    Ok(Applied { outcome: Intake::Accepted { tenant_id: tenant, saga_id: saga }, pending, started: Some(saved) })
}

#[cfg(test)]
mod tests;
