//! A saga's rows in PostgreSQL: loading and locking them, and writing back
//! what a transition changed in one statement.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use landlord_contract::Namespace;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Saga;

type Tx = Transaction<'static, Postgres>;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: Uuid,
    pub key: String,
    pub display_name: String,
    pub plan: String,
    pub tier: String,
    pub status: String,
    pub domains: Vec<String>,
    pub admin_email: String,
    pub admin_first_name: String,
    pub admin_last_name: String,
    pub labels: Json<HashMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub state: String,
    pub cancel_reason: Option<String>,
    pub cancel_requested_by: Option<String>,
    pub failed_step: Option<String>,
    pub failure_reason: Option<String>,
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
    pub state: String,
    pub attempts: i32,
    pub command_id: Option<String>,
    pub redriven: bool,
    pub deadline: Option<OffsetDateTime>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
    pub output: Json<StepOutput>,
}

impl StepRow {
    /// Step `spec` of a plan at `position`, as a new saga's row holds it.
    pub fn pending(spec: &crate::plans::StepSpec, position: i32) -> Self {
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
            state: "pending".into(),
            attempts: 0,
            command_id: None,
            redriven: false,
            deadline: None,
            started_at: None,
            finished_at: None,
            last_error: None,
            output: Json(StepOutput::default()),
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
        let saga = SagaRow::from_row(row)?;
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
             SELECT s.id, s.tenant_id, s.state, s.cancel_reason, s.cancel_requested_by, s.failed_step,
                    s.failure_reason, s.version, t.key, t.display_name, t.plan, t.tier, t.status, t.domains, t.admin_email,
                    t.admin_first_name, t.admin_last_name, t.labels, ARRAY(SELECT msg_id FROM fresh) AS fresh
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
                        last_error, output
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

    /// Writes back what changed, the audit trail and the outbox; returns the
    /// outbox rows to publish after commit.
    pub async fn save(self, tx: &mut Tx) -> sqlx::Result<Vec<crate::outbox::Pending>> {
        Self::save_all(vec![self], tx).await
    }

    /// Writes back what changed in `sagas`, locked by `tx` — sagas, tenants,
    /// steps, resources created and undone, the audit trail and the outbox —
    /// in one statement, however many sagas there are; returns the outbox
    /// rows to publish after commit, in the order the sagas decided them.
    pub async fn save_all(sagas: Vec<Self>, tx: &mut Tx) -> sqlx::Result<Vec<crate::outbox::Pending>> {
        let (pending, written) = Self::write(&sagas, None, &mut **tx).await?;
        if written.len() == sagas.len() {
            Ok(pending)
        } else {
            Err(sqlx::Error::Protocol("the version of a locked saga moved".into()))
        }
    }

    /// Writes the transitions of sagas kept in memory since their last save
    /// ([`Saga::saved`]), `sagas[i]` for message `msg_ids[i]`, in one
    /// statement outside any transaction: a saga's changes, its message id
    /// in the inbox and its outbox rows are written only if its version is
    /// still the one it was kept at (nothing else moved it since) and the
    /// message is new to the inbox. Returns the outbox rows to publish and
    /// the sagas written; the others are for the locking path.
    pub async fn save_kept(
        sagas: &[Self],
        msg_ids: &[&str],
        pool: &sqlx::PgPool,
    ) -> sqlx::Result<(Vec<crate::outbox::Pending>, HashSet<Uuid>)> {
        Self::write(sagas, Some(msg_ids), pool).await
    }

    async fn write<'c, E: sqlx::PgExecutor<'c>>(
        sagas: &[Self],
        msg_ids: Option<&[&str]>,
        executor: E,
    ) -> sqlx::Result<(Vec<crate::outbox::Pending>, HashSet<Uuid>)> {
        static LOCKED: LazyLock<String> = LazyLock::new(|| save_statement(false));
        static KEPT: LazyLock<String> = LazyLock::new(|| save_statement(true));
        let mut c = Changes::default();
        let mut outgoing = Vec::new();
        let mut outgoing_sagas = Vec::new();
        for saga in sagas {
            c.add(saga);
            outgoing.extend(saga.outgoing.iter().cloned());
            outgoing_sagas.extend(std::iter::repeat_n(saga.saga.id, saga.outgoing.len()));
        }
        let outbox = crate::outbox::Columns::of(&outgoing);
        let sql = if msg_ids.is_some() { KEPT.as_str() } else { LOCKED.as_str() };
        let query = sqlx::query_as::<_, (Option<i64>, Option<String>, Option<Uuid>)>(sqlx::AssertSqlSafe(sql))
            .bind(&c.saga_ids)
            .bind(&c.saga_states)
            .bind(&c.cancel_reasons)
            .bind(&c.cancel_requested_by)
            .bind(&c.saga_failed_steps)
            .bind(&c.saga_failure_reasons)
            .bind(&c.tenant_ids)
            .bind(&c.tenant_statuses)
            .bind(&c.tenant_failed_steps)
            .bind(&c.tenant_failure_reasons)
            .bind(&c.step_sagas)
            .bind(&c.positions)
            .bind(&c.step_states)
            .bind(&c.attempts)
            .bind(&c.command_ids)
            .bind(&c.redriven)
            .bind(&c.deadlines)
            .bind(&c.started_at)
            .bind(&c.finished_at)
            .bind(&c.last_errors)
            .bind(&c.outputs)
            .bind(&c.created_tenants)
            .bind(&c.created_sagas)
            .bind(&c.created_steps)
            .bind(&c.created_kinds)
            .bind(&c.created_external_ids)
            .bind(&c.created_metadata)
            .bind(&c.undone_sagas)
            .bind(&c.undone_steps)
            .bind(&c.audit_tenants)
            .bind(&c.audit_sagas)
            .bind(&c.audit_actions)
            .bind(&c.audit_details)
            .bind(&outbox.subjects)
            .bind(&outbox.msg_ids)
            .bind(&outbox.ce_types)
            .bind(&outbox.tenant_keys)
            .bind(&outbox.correlation_ids)
            .bind(&outbox.payloads)
            .bind(&outbox.traceparents)
            .bind(&outbox.tracestates)
            .bind(&c.saga_versions)
            .bind(&outgoing_sagas);
        let rows = match msg_ids {
            Some(msg_ids) => query.bind(msg_ids).fetch_all(executor).await?,
            None => query.fetch_all(executor).await?,
        };
        let mut ids = HashMap::new();
        let mut written = HashSet::new();
        for row in rows {
            match row {
                (Some(id), Some(msg_id), _) => {
                    ids.insert(msg_id, id);
                }
                (_, _, Some(saga)) => {
                    written.insert(saga);
                }
                _ => {}
            }
        }
        let pending = outgoing
            .into_iter()
            .filter_map(|message| Some(crate::outbox::Pending { id: ids.remove(&message.msg_id)?, message }))
            .collect();
        Ok((pending, written))
    }
}

/// What a batch of sagas changed, as arrays for `unnest` ([`Saga::save_all`]).
#[derive(Default)]
struct Changes {
    saga_ids: Vec<Uuid>,
    saga_states: Vec<String>,
    cancel_reasons: Vec<Option<String>>,
    cancel_requested_by: Vec<Option<String>>,
    saga_failed_steps: Vec<Option<String>>,
    saga_failure_reasons: Vec<Option<String>>,
    saga_versions: Vec<i64>,
    tenant_ids: Vec<Uuid>,
    tenant_statuses: Vec<String>,
    tenant_failed_steps: Vec<Option<String>>,
    tenant_failure_reasons: Vec<Option<String>>,
    step_sagas: Vec<Uuid>,
    positions: Vec<i32>,
    step_states: Vec<String>,
    attempts: Vec<i32>,
    command_ids: Vec<Option<String>>,
    redriven: Vec<bool>,
    deadlines: Vec<Option<OffsetDateTime>>,
    started_at: Vec<Option<OffsetDateTime>>,
    finished_at: Vec<Option<OffsetDateTime>>,
    last_errors: Vec<Option<String>>,
    outputs: Vec<Json<StepOutput>>,
    created_tenants: Vec<Uuid>,
    created_sagas: Vec<Uuid>,
    created_steps: Vec<String>,
    created_kinds: Vec<String>,
    created_external_ids: Vec<String>,
    created_metadata: Vec<Json<HashMap<String, String>>>,
    undone_sagas: Vec<Uuid>,
    undone_steps: Vec<String>,
    audit_tenants: Vec<Uuid>,
    audit_sagas: Vec<Uuid>,
    audit_actions: Vec<String>,
    audit_details: Vec<Value>,
}

impl Changes {
    fn add(&mut self, saga: &Saga) {
        let (id, tenant) = (saga.saga.id, saga.tenant.id);
        // Always written: the version moves with every transition.
        self.saga_ids.push(id);
        self.saga_states.push(saga.saga.state.clone());
        self.cancel_reasons.push(saga.saga.cancel_reason.clone());
        self.cancel_requested_by.push(saga.saga.cancel_requested_by.clone());
        self.saga_failed_steps.push(saga.saga.failed_step.clone());
        self.saga_failure_reasons.push(saga.saga.failure_reason.clone());
        self.saga_versions.push(saga.version);
        if saga.tenant.status != saga.loaded_status {
            self.tenant_ids.push(tenant);
            self.tenant_statuses.push(saga.tenant.status.clone());
            self.tenant_failed_steps.push(saga.saga.failed_step.clone());
            self.tenant_failure_reasons.push(saga.saga.failure_reason.clone());
        }
        for (step, _) in saga.steps.iter().zip(&saga.dirty).filter(|(_, dirty)| **dirty) {
            self.step_sagas.push(id);
            self.positions.push(step.position);
            self.step_states.push(step.state.clone());
            self.attempts.push(step.attempts);
            self.command_ids.push(step.command_id.clone());
            self.redriven.push(step.redriven);
            self.deadlines.push(step.deadline);
            self.started_at.push(step.started_at);
            self.finished_at.push(step.finished_at);
            self.last_errors.push(step.last_error.clone());
            self.outputs.push(Json(step.output.0.clone()));
        }
        for (step, record) in &saga.created {
            self.created_tenants.push(tenant);
            self.created_sagas.push(id);
            self.created_steps.push(step.clone());
            self.created_kinds.push(record.kind.clone());
            self.created_external_ids.push(record.external_id.clone());
            self.created_metadata.push(Json(record.metadata.clone()));
        }
        for step in &saga.undone {
            self.undone_sagas.push(id);
            self.undone_steps.push(step.clone());
        }
        for (action, detail) in &saga.audit {
            self.audit_tenants.push(tenant);
            self.audit_sagas.push(id);
            self.audit_actions.push(action.clone());
            self.audit_details.push(detail.clone());
        }
    }
}

/// The statement of [`Saga::save_all`] (`kept`: false) and
/// [`Saga::save_kept`]. Every saga written gets its version bumped; what a
/// saga decided is written only if its version is the one given.
fn save_statement(kept: bool) -> String {
    let (msg_column, msg_alias, fresh, inbox) = if kept {
        (
            ", $44::text[]",
            ", msg_id",
            " AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.msg_id = u.msg_id)",
            "), inbox_added AS (
                INSERT INTO inbox (msg_id)
                SELECT u.msg_id FROM unnest($1::uuid[], $44::text[]) AS u(id, msg_id)
                WHERE u.id IN (SELECT id FROM ok) ORDER BY u.msg_id
                ON CONFLICT DO NOTHING
             ",
        )
    } else {
        ("", "", "", "")
    };
    format!(
        "WITH ok AS (
            UPDATE sagas s
            SET state = u.state, cancel_reason = u.cancel_reason, cancel_requested_by = u.cancel_requested_by,
                failed_step = u.failed_step, failure_reason = u.failure_reason, updated_at = now(),
                version = s.version + 1,
                finished_at = CASE WHEN u.state IN ('succeeded', 'failed', 'cancelled')
                                   THEN coalesce(s.finished_at, now()) END
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $42::bigint[]{msg_column})
                 AS u(id, state, cancel_reason, cancel_requested_by, failed_step, failure_reason, version{msg_alias})
            WHERE s.id = u.id AND s.version = u.version{fresh}
            RETURNING s.id, s.tenant_id
         {inbox}), tenants_changed AS (
            UPDATE tenants t
            SET status = u.status, failed_step = u.failed_step, failure_reason = u.failure_reason,
                updated_at = now(), version = t.version + 1
            FROM unnest($7::uuid[], $8::text[], $9::text[], $10::text[])
                 AS u(id, status, failed_step, failure_reason)
            WHERE t.id = u.id AND u.id IN (SELECT tenant_id FROM ok)
         ), steps AS (
            UPDATE saga_steps st
            SET state = u.state, attempts = u.attempts, command_id = u.command_id, redriven = u.redriven,
                deadline = u.deadline, started_at = u.started_at, finished_at = u.finished_at,
                last_error = u.last_error, output = u.output
            FROM unnest($11::uuid[], $12::int[], $13::text[], $14::int[], $15::text[], $16::bool[],
                        $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::text[], $21::jsonb[])
                 AS u(saga_id, position, state, attempts, command_id, redriven, deadline, started_at,
                      finished_at, last_error, output)
            WHERE st.saga_id = u.saga_id AND st.position = u.position AND u.saga_id IN (SELECT id FROM ok)
         ), created AS (
            INSERT INTO resources (tenant_id, saga_id, step, kind, external_id, metadata)
            SELECT u.tenant_id, u.saga_id, u.step, u.kind, u.external_id, u.metadata
            FROM unnest($22::uuid[], $23::uuid[], $24::text[], $25::text[], $26::text[], $27::jsonb[])
                 AS u(tenant_id, saga_id, step, kind, external_id, metadata)
            WHERE u.saga_id IN (SELECT id FROM ok)
            ON CONFLICT (tenant_id, kind, external_id) DO UPDATE
            SET deleted_at = NULL, saga_id = excluded.saga_id, step = excluded.step,
                metadata = excluded.metadata, created_at = now()
         ), undone AS (
            UPDATE resources r SET deleted_at = now()
            FROM unnest($28::uuid[], $29::text[]) AS u(saga_id, step)
            WHERE r.saga_id = u.saga_id AND r.step = u.step AND r.deleted_at IS NULL
              AND r.saga_id = ANY($28) AND u.saga_id IN (SELECT id FROM ok)
         ), audit AS (
            INSERT INTO audit_log (actor, tenant_id, saga_id, action, detail)
            SELECT 'orchestrator', u.tenant_id, u.saga_id, u.action, u.detail
            FROM unnest($30::uuid[], $31::uuid[], $32::text[], $33::jsonb[])
                 WITH ORDINALITY AS u(tenant_id, saga_id, action, detail, n)
            WHERE u.saga_id IN (SELECT id FROM ok)
            ORDER BY n
         ), outbox AS (
            INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent,
                                tracestate)
            SELECT a, b, c, d, e, f, g, h
            FROM unnest($34::text[], $35::text[], $36::text[], $37::text[], $38::text[], $39::bytea[],
                        $40::text[], $41::text[], $43::uuid[]) WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, saga, n)
            WHERE u.saga IN (SELECT id FROM ok)
            ORDER BY n
            RETURNING id, msg_id
         )
         SELECT id, msg_id, NULL::uuid FROM outbox
         UNION ALL
         SELECT NULL, NULL, id FROM ok"
    )
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
