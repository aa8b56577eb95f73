//! A saga's rows in PostgreSQL: loading and locking them, and writing back
//! what a transition changed in one statement.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use landlord_contract::Namespace;
use landlord_control_plane::{Operation, SagaState, StepState, TenantStatus};
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Saga;

type Tx = Transaction<'static, Postgres>;

/// A tenant as its saga reads and writes it: everything but the columns
/// only intake sets (`source`, `idempotency_id`, `created_at`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantRow {
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
    pub labels: Json<HashMap<String, String>>,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    pub purge_at: Option<OffsetDateTime>,
    pub export_location: Option<String>,
    pub exported_at: Option<OffsetDateTime>,
    pub export_waived: bool,
    pub deleted_at: Option<OffsetDateTime>,
    pub deleted_by: Option<String>,
    pub deletion_reason: Option<String>,
}

/// The columns of [`TenantRow`], for a `SELECT` from `tenants`.
pub const TENANT_COLUMNS: &str = "id, key, display_name, plan, tier, status, domains, admin_email, admin_first_name, \
     admin_last_name, labels, failed_step, failure_reason, purge_at, export_location, exported_at, export_waived, \
     deleted_at, deleted_by, deletion_reason";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub operation: Operation,
    pub state: SagaState,
    pub cancel_reason: Option<String>,
    pub cancel_requested_by: Option<String>,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
    /// Who asked for the operation, and why (empty for a provisioning).
    pub requested_by: String,
    pub reason: String,
    /// What a lifecycle saga was asked to do ([`Request`]).
    pub request: Json<Request>,
}

impl SagaRow {
    /// Saga `id` of `tenant_id` running `operation`, as inserted.
    pub fn running(id: Uuid, tenant_id: Uuid, operation: Operation) -> Self {
        Self {
            id,
            tenant_id,
            operation,
            state: SagaState::Running,
            cancel_reason: None,
            cancel_requested_by: None,
            failed_step: None,
            failure_reason: None,
            requested_by: String::new(),
            reason: String::new(),
            request: Json(Request::default()),
        }
    }
}

/// What a lifecycle saga was asked to do, beyond its operation
/// (`sagas.request`): what its transitions need and the tenant row does not
/// hold. Empty for a provisioning.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Request {
    /// The tenant's status when the saga started: where a failure or a
    /// cancel brings it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    /// update: the tenant as it was (its compensation's commands carry it)
    /// and as it will be (the forward commands), and the fields that change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Spec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Spec>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// offboard: when the grace period ends (unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_at: Option<i64>,
    /// offboard: false skips the steps whose action is `export`.
    pub export: bool,
    /// offboard, export: where in the archive the export goes
    /// (`<key>/<tenant id>/<YYYYMMDDTHHMMSSZ>/`), the input `export.prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_prefix: Option<String>,
}

/// The tenant fields an update may change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub display_name: String,
    pub plan: String,
    pub domains: Vec<String>,
    pub admin_email: String,
    pub admin_first_name: String,
    pub admin_last_name: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Spec {
    pub fn of(tenant: &TenantRow) -> Self {
        Self {
            display_name: tenant.display_name.clone(),
            plan: tenant.plan.clone(),
            domains: tenant.domains.clone(),
            admin_email: tenant.admin_email.clone(),
            admin_first_name: tenant.admin_first_name.clone(),
            admin_last_name: tenant.admin_last_name.clone(),
            labels: tenant.labels.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    /// `tenant` with these fields.
    pub fn apply(&self, tenant: &mut TenantRow) {
        tenant.display_name.clone_from(&self.display_name);
        tenant.plan.clone_from(&self.plan);
        tenant.domains.clone_from(&self.domains);
        tenant.admin_email.clone_from(&self.admin_email);
        tenant.admin_first_name.clone_from(&self.admin_first_name);
        tenant.admin_last_name.clone_from(&self.admin_last_name);
        tenant.labels = Json(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StepRow {
    pub position: i32,
    pub name: String,
    pub service: String,
    pub action: String,
    pub compensation: Option<String>,
    pub fatal: bool,
    pub timeout_ms: i64,
    pub max_attempts: i32,
    pub backoff_ms: Vec<i64>,
    pub params: Json<HashMap<String, String>>,
    pub state: StepState,
    pub attempts: i32,
    pub command_id: Option<String>,
    pub redriven: bool,
    pub deadline: Option<OffsetDateTime>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub output: Json<StepOutput>,
    /// The steps this one starts after (`saga_steps.after`, by name): the
    /// plan's graph as it was when the saga started.
    pub after: Vec<String>,
    /// The order in which forward steps ended (succeeded or failed for
    /// good): 1, 2, ... per saga; compensations run in its reverse.
    pub completion: Option<i32>,
}

impl StepRow {
    /// Step `spec` of a plan at `position`, as a new saga's row holds it.
    pub fn pending(spec: &landlord_control_plane::plans::StepSpec, position: i32) -> Self {
        let millis = |d: &Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            position,
            name: spec.name.clone(),
            service: spec.service.clone(),
            action: spec.action.clone(),
            compensation: spec.compensation.clone(),
            fatal: spec.fatal,
            timeout_ms: millis(&spec.timeout),
            max_attempts: i32::try_from(spec.max_attempts).unwrap_or(i32::MAX),
            backoff_ms: spec.backoff.iter().map(millis).collect(),
            params: Json(spec.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            state: StepState::Pending,
            attempts: 0,
            command_id: None,
            redriven: false,
            deadline: None,
            started_at: None,
            finished_at: None,
            last_error: None,
            output: Json(StepOutput::default()),
            after: spec.after.clone(),
            completion: None,
        }
    }
}

/// The row [`Saga::load`] reads: a saga and its tenant.
struct SagaAndTenant {
    saga: SagaRow,
    version: i64,
    tenant: TenantRow,
    /// The message ids of the batch that were new to the inbox.
    fresh: Vec<String>,
}

/// Sagas loaded for a batch of messages ([`Saga::load_for_messages`]).
#[derive(Debug, Default)]
pub struct Batch {
    /// The sagas with at least one message new to the inbox, locked.
    pub sagas: HashMap<Uuid, Saga>,
    /// The message ids that were new to the inbox.
    pub fresh: HashSet<String>,
    /// The saga ids asked for that do not exist.
    pub missing: HashSet<Uuid>,
}

/// A step row with its saga, as loaded for a batch.
#[derive(sqlx::FromRow)]
struct SagaStep {
    saga_id: Uuid,
    #[sqlx(flatten)]
    step: StepRow,
}

impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for SagaAndTenant {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
        use sqlx::Row as _;
        let saga = SagaRow {
            id: row.try_get("id")?,
            tenant_id: row.try_get("tenant_id")?,
            operation: row.try_get("operation")?,
            state: row.try_get("state")?,
            cancel_reason: row.try_get("cancel_reason")?,
            cancel_requested_by: row.try_get("cancel_requested_by")?,
            failed_step: row.try_get("failed_step")?,
            failure_reason: row.try_get("failure_reason")?,
            requested_by: row.try_get("requested_by")?,
            reason: row.try_get("reason")?,
            request: row.try_get("request")?,
        };
        let tenant = TenantRow {
            id: saga.tenant_id,
            key: row.try_get("key")?,
            display_name: row.try_get("display_name")?,
            plan: row.try_get("plan")?,
            tier: row.try_get("tier")?,
            status: row.try_get("status")?,
            domains: row.try_get("domains")?,
            admin_email: row.try_get("admin_email")?,
            admin_first_name: row.try_get("admin_first_name")?,
            admin_last_name: row.try_get("admin_last_name")?,
            labels: row.try_get("labels")?,
            failed_step: row.try_get("t_failed_step")?,
            failure_reason: row.try_get("t_failure_reason")?,
            purge_at: row.try_get("purge_at")?,
            export_location: row.try_get("export_location")?,
            exported_at: row.try_get("exported_at")?,
            export_waived: row.try_get("export_waived")?,
            deleted_at: row.try_get("deleted_at")?,
            deleted_by: row.try_get("deleted_by")?,
            deletion_reason: row.try_get("deletion_reason")?,
        };
        Ok(Self { saga, version: row.try_get("version")?, tenant, fresh: row.try_get("fresh")? })
    }
}

impl Saga {
    /// Loads and locks a saga. With `skip_locked`, a saga another
    /// transaction holds is skipped (`None`) instead of waited for.
    pub async fn load(tx: &mut Tx, namespace: &Namespace, id: Uuid, skip_locked: bool) -> sqlx::Result<Option<Self>> {
        Ok(Self::load_many(tx, namespace, &[id], &[], skip_locked).await?.sagas.remove(&id))
    }

    /// Inserts saga `saga` with its `steps`, in one statement: arrays of
    /// the steps' columns, unnested. The rows are what [`Saga::started`]
    /// takes, so the saga need not be read back.
    pub async fn insert(tx: &mut Tx, saga: &SagaRow, idempotency_id: &str, steps: &[StepRow]) -> sqlx::Result<()> {
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
        let params: Vec<&Json<HashMap<String, String>>> = steps.iter().map(|s| &s.params).collect();
        let states: Vec<StepState> = steps.iter().map(|s| s.state).collect();
        // Arrays of arrays must be rectangular too: prerequisites as JSON.
        let afters: Vec<Json<&Vec<String>>> = steps.iter().map(|s| Json(&s.after)).collect();
        sqlx::query(
            "WITH saga AS (
                INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state, requested_by, reason, request)
                VALUES ($1, $12, $13, $14, $15, $16, $17, $18)
             )
             INSERT INTO saga_steps (saga_id, position, name, service, action, compensation, fatal, timeout_ms,
                                     max_attempts, backoff_ms, params, state, after)
             SELECT $1, u.position, u.name, u.service, u.action, u.compensation, u.fatal, u.timeout_ms, u.max_attempts,
                    ARRAY(SELECT jsonb_array_elements_text(u.backoff)::bigint), u.params, u.state,
                    ARRAY(SELECT jsonb_array_elements_text(u.after))
             FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[], $8::bigint[], $9::int[],
                         $10::jsonb[], $11::jsonb[], $19::text[], $20::jsonb[])
                  AS u(position, name, service, action, compensation, fatal, timeout_ms, max_attempts, backoff, params,
                       state, after)",
        )
        .bind(saga.id)
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
        .bind(saga.tenant_id)
        .bind(saga.operation)
        .bind(idempotency_id)
        .bind(saga.state)
        .bind(&saga.requested_by)
        .bind(&saga.reason)
        .bind(&saga.request)
        .bind(&states)
        .bind(&afters)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records the message ids in the inbox and loads and locks the sagas
    /// the messages are for — the ones with a message new to the inbox —
    /// in one round trip for the sagas and one for their steps, however
    /// many messages there are.
    pub async fn load_for_messages(
        tx: &mut Tx,
        namespace: &Namespace,
        messages: &[(Uuid, &str)],
    ) -> sqlx::Result<Batch> {
        let mut ids: Vec<Uuid> = messages.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        Self::load_many(tx, namespace, &ids, messages, false).await
    }

    async fn load_many(
        tx: &mut Tx,
        namespace: &Namespace,
        ids: &[Uuid],
        messages: &[(Uuid, &str)],
        skip_locked: bool,
    ) -> sqlx::Result<Batch> {
        // Locks are taken in saga id order, so two transactions loading
        // overlapping batches cannot deadlock. The tenant row is locked with
        // its saga so that, after waiting for another holder, both are read
        // as that holder left them. Message ids are inserted in order for
        // the same reason.
        let lock = if skip_locked { "FOR UPDATE OF s, t SKIP LOCKED" } else { "FOR UPDATE OF s, t" };
        let mut msg_ids: Vec<&str> = messages.iter().map(|(_, m)| *m).collect();
        msg_ids.sort_unstable();
        msg_ids.dedup();
        let rows: Vec<SagaAndTenant> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH fresh AS (
                INSERT INTO inbox (msg_id) SELECT m FROM unnest($2::text[]) AS u(m) ORDER BY m
                ON CONFLICT DO NOTHING RETURNING msg_id
             )
             SELECT s.id, s.tenant_id, s.operation, s.state, s.cancel_reason, s.cancel_requested_by, s.failed_step,
                    s.failure_reason, s.requested_by, s.reason, s.request, s.version, t.key, t.display_name, t.plan,
                    t.tier, t.status, t.domains, t.admin_email, t.admin_first_name, t.admin_last_name, t.labels,
                    t.failed_step AS t_failed_step, t.failure_reason AS t_failure_reason, t.purge_at,
                    t.export_location, t.exported_at, t.export_waived, t.deleted_at, t.deleted_by,
                    t.deletion_reason, ARRAY(SELECT msg_id FROM fresh) AS fresh
             FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE s.id = ANY($1) ORDER BY s.id {lock}"
        )))
        .bind(ids)
        .bind(&msg_ids)
        .fetch_all(&mut **tx)
        .await?;
        let fresh: HashSet<String> = rows.first().map(|r| r.fresh.iter().cloned().collect()).unwrap_or_default();
        // Sagas whose messages were all applied before are left alone.
        let wanted: Vec<Uuid> = rows
            .iter()
            .map(|r| r.saga.id)
            .filter(|id| messages.is_empty() || messages.iter().any(|(s, m)| s == id && fresh.contains(*m)))
            .collect();
        let mut steps: HashMap<Uuid, Vec<StepRow>> = HashMap::new();
        if !wanted.is_empty() {
            let rows: Vec<SagaStep> = sqlx::query_as(
                "SELECT saga_id, position, name, service, action, compensation, fatal, timeout_ms, max_attempts,
                        backoff_ms, params, state, attempts, command_id, redriven, deadline, started_at, finished_at,
                        last_error, output, after, completion
                 FROM saga_steps WHERE saga_id = ANY($1) ORDER BY saga_id, position",
            )
            .bind(&wanted)
            .fetch_all(&mut **tx)
            .await?;
            for row in rows {
                steps.entry(row.saga_id).or_default().push(row.step);
            }
        }
        let missing = ids.iter().filter(|id| !rows.iter().any(|r| r.saga.id == **id)).copied().collect();
        let sagas = rows
            .into_iter()
            .filter(|r| wanted.contains(&r.saga.id))
            .map(|r| {
                let steps = steps.remove(&r.saga.id).unwrap_or_default();
                (r.saga.id, Self::new(namespace, r.saga, r.version, r.tenant, steps))
            })
            .collect();
        Ok(Batch { sagas, fresh, missing })
    }
}

/// What a step reported, as kept in `saga_steps.output`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StepOutput {
    #[serde(default)]
    pub resources: Vec<ResourceRecord>,
    #[serde(default)]
    pub outputs: HashMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResourceRecord {
    pub kind: String,
    pub external_id: String,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}
