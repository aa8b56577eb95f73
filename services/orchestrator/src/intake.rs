//! Intake: a TenantRequested becomes a tenant and its saga, or a
//! TenantRejected that names the rule the request broke. Nothing is created
//! for a rejected request; a repeated request finds what the first made.

use landlord_contract::pb::{self, Tier};
use landlord_contract::{Event, KeyError, Namespace, TenantKey};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::outbox::{Outgoing, Pending};
use crate::plans::{Plan, Plans, tier_name};
use crate::saga::{Saga, StepRow, TenantRow};

type Tx = Transaction<'static, Postgres>;

/// Ids derive from the idempotency id: a repeated request maps to the same
/// tenant and saga, whichever replica sees it.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_6e64_6c6f_7264_0000_0000_0000_0001);

pub fn tenant_id(idempotency_id: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("tenant:{idempotency_id}").as_bytes())
}

pub fn saga_id(operation: &str, idempotency_id: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("saga:{operation}:{idempotency_id}").as_bytes())
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub rule: String,
    pub reason: String,
}

impl Rejection {
    fn new(rule: &str, reason: impl Into<String>) -> Self {
        Self { rule: rule.to_owned(), reason: reason.into() }
    }
}

impl From<KeyError> for Rejection {
    fn from(error: KeyError) -> Self {
        Self::new(error.rule(), error.to_string())
    }
}

/// A request that passed every rule.
#[derive(Debug, Clone)]
pub struct ValidRequest<'a> {
    pub key: TenantKey,
    pub plan: &'a Plan,
    pub tier: Tier,
}

const MAX_DOMAINS: usize = 20;

/// Checks a request against the rules, in a fixed order, and names the
/// first one broken.
pub fn validate<'a>(request: &pb::TenantRequested, plans: &'a Plans) -> Result<ValidRequest<'a>, Rejection> {
    if request.idempotency_id.trim().is_empty() || request.idempotency_id.len() > 200 {
        return Err(Rejection::new("idempotency_id.missing", "idempotency_id must be 1 to 200 characters"));
    }
    let key = TenantKey::parse(&request.key)?;
    let name = request.display_name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(Rejection::new(
            "display_name.invalid",
            "display_name must be 1 to 200 characters without control characters",
        ));
    }
    let admin = request.admin.as_ref().ok_or_else(|| Rejection::new("admin.missing", "admin contact is required"))?;
    validate_email(&admin.email)?;
    for (field, value) in [("admin.first_name", &admin.first_name), ("admin.last_name", &admin.last_name)] {
        if value.chars().count() > 100 || value.chars().any(char::is_control) {
            return Err(Rejection::new(
                &format!("{field}.invalid"),
                format!("{field} must be at most 100 characters without control characters"),
            ));
        }
    }
    if request.domains.len() > MAX_DOMAINS {
        return Err(Rejection::new("domains.too_many", format!("at most {MAX_DOMAINS} domains are allowed")));
    }
    for domain in &request.domains {
        validate_domain(domain)?;
    }
    let plan = plans.get(&request.plan).ok_or_else(|| {
        let known: Vec<_> = plans.names().collect();
        Rejection::new("plan.unknown", format!("plan {:?} is not one of: {}", request.plan, known.join(", ")))
    })?;
    let tier = match Tier::try_from(request.tier) {
        Ok(Tier::Unspecified) => plan.tier,
        Ok(tier) => tier,
        Err(_) => return Err(Rejection::new("tier.unknown", format!("tier {} is not a known tier", request.tier))),
    };
    Ok(ValidRequest { key, plan, tier })
}

fn validate_email(email: &str) -> Result<(), Rejection> {
    let invalid = |why: &str| Rejection::new("admin.email.invalid", format!("admin email {email:?} {why}"));
    if email.is_empty() {
        return Err(Rejection::new("admin.email.missing", "admin email is required"));
    }
    if email.len() > 254
        || email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
    {
        return Err(invalid("has characters an address cannot have"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else { return Err(invalid("has no '@'")) };
    if local.is_empty() || local.contains('@') || local.len() > 64 {
        return Err(invalid("has an invalid local part"));
    }
    if validate_domain(domain).is_err() {
        return Err(invalid("has an invalid domain"));
    }
    Ok(())
}

fn validate_domain(domain: &str) -> Result<(), Rejection> {
    let invalid = || Rejection::new("domains.invalid", format!("{domain:?} is not a valid DNS host name"));
    let labels: Vec<&str> = domain.split('.').collect();
    if domain.len() > 253 || labels.len() < 2 {
        return Err(invalid());
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    if labels.iter().all(label_ok) { Ok(()) } else { Err(invalid()) }
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

fn rejected_event(
    namespace: &Namespace,
    request: &pb::TenantRequested,
    request_id: &str,
    rejection: &Rejection,
) -> Outgoing {
    let event = pb::TenantRejected {
        idempotency_id: request.idempotency_id.clone(),
        key: request.key.clone(),
        rule: rejection.rule.clone(),
        reason: rejection.reason.clone(),
    };
    let subject = match TenantKey::parse(&request.key) {
        Ok(key) => namespace.event_subject(&key, pb::TenantRejected::KIND),
        Err(_) => namespace.invalid_key_event_subject(pb::TenantRejected::KIND),
    };
    Outgoing::new(subject, format!("{request_id}.rejected"), &event)
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

/// Applies one request inside `tx`; `request_id` is its message id.
pub async fn apply(
    tx: &mut Tx,
    namespace: &Namespace,
    plans: &Plans,
    request: &pb::TenantRequested,
    request_id: &str,
) -> sqlx::Result<Applied> {
    let reject = async |tx: &mut Tx, rejection: Rejection| {
        let pending = crate::outbox::write(tx, &[rejected_event(namespace, request, request_id, &rejection)]).await?;
        Ok(Applied::nothing(Intake::Rejected(rejection), pending))
    };
    let valid = match validate(request, plans) {
        Ok(valid) => valid,
        Err(rejection) => return reject(tx, rejection).await,
    };
    if let Some(retry_of) = request.retry_of.as_deref() {
        return match retry_of_failed(tx, &valid, request, retry_of).await? {
            Ok(Some(tenant)) => {
                let saga = saga_id("provision", &request.idempotency_id);
                start_saga(tx, namespace, &valid, request, saga, Started::Again(tenant)).await
            }
            Ok(None) => Ok(Applied::nothing(Intake::Repeated, Vec::new())),
            Err(rejection) => reject(tx, rejection).await,
        };
    }
    let tenant = tenant_row(&valid, request);
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
        let saga = saga_id("provision", &request.idempotency_id);
        return start_saga(tx, namespace, &valid, request, saga, Started::New(Box::new(tenant))).await;
    }
    // The key is taken (by this request before, or by another), or the
    // idempotency id already made a tenant under another key.
    let taken: Option<String> = sqlx::query_scalar("SELECT idempotency_id FROM tenants WHERE key = $1")
        .bind(valid.key.as_str())
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
    let admin = request.admin.clone().unwrap_or_default();
    TenantRow {
        id: tenant_id(&request.idempotency_id),
        key: valid.key.as_str().to_owned(),
        display_name: request.display_name.trim().to_owned(),
        plan: valid.plan.name.clone(),
        tier: tier_name(valid.tier).to_owned(),
        status: "PENDING".into(),
        domains: request.domains.clone(),
        admin_email: admin.email,
        admin_first_name: admin.first_name,
        admin_last_name: admin.last_name,
        labels: Json(request.labels.clone()),
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
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM tenants WHERE key = $1")
        .bind(valid.key.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    let Some(tenant) = existing.filter(|tenant| tenant.to_string() == retry_of) else {
        return Ok(Err(Rejection::new(
            "retry.unknown_tenant",
            format!("tenant key {:?} does not belong to tenant {retry_of:?}", valid.key.as_str()),
        )));
    };
    let saga = saga_id("provision", &request.idempotency_id);
    let seen: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM sagas WHERE id = $1").bind(saga).fetch_optional(&mut **tx).await?;
    if seen.is_some() {
        return Ok(Ok(None));
    }
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_one(&mut **tx)
        .await?;
    if status != "FAILED" {
        return Ok(Err(Rejection::new(
            "retry.not_failed",
            format!("tenant {:?} is {status}: only a FAILED tenant is retried", valid.key.as_str()),
        )));
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
    // One statement for the saga and all its steps: arrays of the steps'
    // columns, unnested.
    // The rows as they are inserted and, for a new tenant, kept: one
    // conversion from the plan for both.
    let steps: Vec<StepRow> =
        (0..).zip(&valid.plan.steps).map(|(position, spec)| StepRow::pending(spec, position)).collect();
    let positions: Vec<i32> = steps.iter().map(|s| s.position).collect();
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    let services: Vec<&str> = steps.iter().map(|s| s.service.as_str()).collect();
    let actions: Vec<&str> = steps.iter().map(|s| s.action.as_str()).collect();
    let compensations: Vec<Option<&str>> = steps.iter().map(|s| s.compensation.as_deref()).collect();
    let fatal: Vec<bool> = steps.iter().map(|s| s.fatal).collect();
    let timeouts: Vec<i64> = steps.iter().map(|s| s.timeout_ms).collect();
    let attempts: Vec<i32> = steps.iter().map(|s| s.max_attempts).collect();
    // Postgres arrays of arrays must be rectangular: backoffs travel as JSON.
    let backoffs: Vec<Json<&Vec<i64>>> = steps.iter().map(|s| Json(&s.backoff_ms)).collect();
    let params: Vec<&Json<std::collections::HashMap<String, String>>> = steps.iter().map(|s| &s.params).collect();
    sqlx::query(
        "WITH saga AS (
            INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state)
            VALUES ($1, $12, 'provision', $13, 'running')
         )
         INSERT INTO saga_steps (saga_id, position, name, service, action, compensation, fatal, timeout_ms,
                                 max_attempts, backoff_ms, params)
         SELECT $1, u.position, u.name, u.service, u.action, u.compensation, u.fatal, u.timeout_ms, u.max_attempts,
                ARRAY(SELECT jsonb_array_elements_text(u.backoff)::bigint), u.params
         FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[], $9::int[],
                     $10::jsonb[], $11::jsonb[])
              AS u(position, name, service, action, compensation, fatal, timeout_ms, max_attempts, backoff, params)",
    )
    .bind(saga)
    .bind(&positions)
    .bind(&names)
    .bind(&services)
    .bind(&actions)
    .bind(&compensations)
    .bind(&fatal)
    .bind(&timeouts)
    .bind(&attempts)
    .bind(&backoffs)
    .bind(&params)
    .bind(tenant)
    .bind(&request.idempotency_id)
    .execute(&mut **tx)
    .await?;
    let mut state = match started {
        // As the statements above left them: nothing to read back.
        Started::New(row) => Saga::started(namespace, saga, *row, steps),
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
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse(include_str!("../../../deploy/plans.toml")).unwrap()
    }

    fn request() -> pb::TenantRequested {
        pb::TenantRequested {
            idempotency_id: "req-1".into(),
            key: "acme".into(),
            display_name: "Acme".into(),
            plan: "standard".into(),
            admin: Some(pb::AdminContact {
                email: "ops@acme.test".into(),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec!["acme.test".into(), "app.acme.test".into()],
            ..Default::default()
        }
    }

    fn rule(change: impl FnOnce(&mut pb::TenantRequested)) -> String {
        let mut r = request();
        change(&mut r);
        validate(&r, &plans()).map(|_| "valid".to_owned()).unwrap_or_else(|e| e.rule)
    }

    #[test]
    fn a_good_request_passes_and_takes_the_plans_tier() {
        let plans = plans();
        let valid = validate(&request(), &plans).unwrap();
        assert_eq!(valid.tier, Tier::Bridge);
        assert_eq!(rule(|r| r.tier = Tier::Silo as i32), "valid");
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(rule(|r| r.key = "a'b;drop".into()), "tenant_key.character");
        assert_eq!(rule(|r| r.admin = None), "admin.missing");
        assert_eq!(rule(|r| r.admin.as_mut().unwrap().email = String::new()), "admin.email.missing");
        assert_eq!(rule(|r| r.admin.as_mut().unwrap().email = "ops@acme".into()), "admin.email.invalid");
        assert_eq!(
            rule(|r| r.admin.as_mut().unwrap().email = "ops@acme.test\r\nBcc: x@y.z".into()),
            "admin.email.invalid"
        );
        assert_eq!(rule(|r| r.plan = "platinum".into()), "plan.unknown");
        assert_eq!(rule(|r| r.domains = vec!["bad domain.test".into()]), "domains.invalid");
        assert_eq!(rule(|r| r.display_name = " ".into()), "display_name.invalid");
        assert_eq!(rule(|r| r.idempotency_id = String::new()), "idempotency_id.missing");
        assert_eq!(rule(|r| r.tier = 42), "tier.unknown");
    }

    #[test]
    fn ids_derive_from_the_idempotency_id() {
        assert_eq!(tenant_id("x"), tenant_id("x"));
        assert_ne!(tenant_id("x"), tenant_id("y"));
        assert_ne!(saga_id("provision", "x"), tenant_id("x"));
    }
}
