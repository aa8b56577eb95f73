//! The provisioning saga: state in PostgreSQL, transitions in memory, both
//! written back in the transaction that loaded them together with the
//! messages they decide (see [`crate::outbox`]).
//!
//! Forward steps run in order. A retryable error is retried with the
//! step's backoff until its attempts run out; a step whose answer is late is
//! re-driven once (same command, same message id), then counts as a failed
//! attempt. A fatal failure, exhausted retries or a cancellation start the
//! compensations of the completed steps, newest first, each retried until it
//! succeeds. Nothing is undone once the tenant is ACTIVE.

use std::collections::HashMap;
use std::time::Duration;

use landlord_contract::pb::{self, StepState, step_result::Outcome};
use landlord_contract::{Event, Namespace};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::outbox::Outgoing;
use crate::plans::parse_tier;

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

/// The row [`Saga::load`] reads: a saga and its tenant.
struct SagaAndTenant {
    saga: SagaRow,
    tenant: TenantRow,
    /// Whether the message being applied was new to the inbox.
    fresh: bool,
}

/// What [`Saga::load_for_message`] found.
#[derive(Debug)]
pub enum Loaded {
    Saga(Box<Saga>),
    /// No such saga.
    Missing,
    /// The message was applied before.
    AlreadyApplied,
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
        Ok(Self { saga, tenant, fresh: row.try_get("fresh")? })
    }
}

/// A saga loaded for a transition.
#[derive(Debug)]
pub struct Saga {
    pub saga: SagaRow,
    pub tenant: TenantRow,
    pub steps: Vec<StepRow>,
    dirty: Vec<bool>,
    pub outgoing: Vec<Outgoing>,
    audit: Vec<(String, Value)>,
    /// Resources reported by steps that succeeded in this transition.
    created: Vec<(String, ResourceRecord)>,
    /// Steps whose resources were removed by a compensation.
    undone: Vec<String>,
    namespace: Namespace,
    now: OffsetDateTime,
    /// Tenant status and saga as loaded, to skip writing them back unchanged.
    loaded_status: String,
    loaded_saga: SagaRow,
}

fn ms(d: i64) -> time::Duration {
    time::Duration::milliseconds(d)
}

impl Saga {
    /// Loads and locks a saga. With `skip_locked`, a saga another
    /// transaction holds is skipped (`None`) instead of waited for.
    pub async fn load(tx: &mut Tx, namespace: &Namespace, id: Uuid, skip_locked: bool) -> sqlx::Result<Option<Self>> {
        Ok(Self::load_with(tx, namespace, id, skip_locked, None).await?.map(|(saga, _)| saga))
    }

    /// Records `msg_id` in the inbox and loads and locks the saga it is
    /// for, in one round trip; `AlreadyApplied` if the message was applied
    /// before.
    pub async fn load_for_message(tx: &mut Tx, namespace: &Namespace, id: Uuid, msg_id: &str) -> sqlx::Result<Loaded> {
        Ok(match Self::load_with(tx, namespace, id, false, Some(msg_id)).await? {
            None => Loaded::Missing,
            Some((_, false)) => Loaded::AlreadyApplied,
            Some((saga, true)) => Loaded::Saga(Box::new(saga)),
        })
    }

    async fn load_with(
        tx: &mut Tx,
        namespace: &Namespace,
        id: Uuid,
        skip_locked: bool,
        msg_id: Option<&str>,
    ) -> sqlx::Result<Option<(Self, bool)>> {
        // The tenant row is locked with its saga so that, after waiting for
        // another holder, both are read as that holder left them.
        let lock = if skip_locked { "FOR UPDATE OF s, t SKIP LOCKED" } else { "FOR UPDATE OF s, t" };
        let row: Option<SagaAndTenant> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "WITH fresh AS (
                INSERT INTO inbox (msg_id) SELECT $2 WHERE $2::text IS NOT NULL ON CONFLICT DO NOTHING RETURNING 1
             )
             SELECT s.id, s.tenant_id, s.state, s.cancel_reason, s.cancel_requested_by, s.failed_step,
                    s.failure_reason, t.key, t.display_name, t.plan, t.tier, t.status, t.domains, t.admin_email,
                    t.admin_first_name, t.admin_last_name, t.labels, EXISTS (SELECT FROM fresh) AS fresh
             FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE s.id = $1 {lock}"
        )))
        .bind(id)
        .bind(msg_id)
        .fetch_optional(&mut **tx)
        .await?;
        let Some(SagaAndTenant { saga, tenant, fresh }) = row else { return Ok(None) };
        if msg_id.is_some() && !fresh {
            return Ok(Some((Self::new(namespace, saga, tenant, Vec::new()), false)));
        }
        let steps: Vec<StepRow> = sqlx::query_as(
            "SELECT position, name, service, action, compensation, fatal, timeout_ms, max_attempts, backoff_ms,
                    params, state, attempts, command_id, redriven, deadline, started_at, finished_at, last_error,
                    output
             FROM saga_steps WHERE saga_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        Ok(Some((Self::new(namespace, saga, tenant, steps), true)))
    }

    fn new(namespace: &Namespace, saga: SagaRow, tenant: TenantRow, steps: Vec<StepRow>) -> Self {
        Self {
            loaded_saga: saga.clone(),
            saga,
            dirty: vec![false; steps.len()],
            steps,
            outgoing: Vec::new(),
            audit: Vec::new(),
            created: Vec::new(),
            undone: Vec::new(),
            namespace: namespace.clone(),
            now: OffsetDateTime::now_utc(),
            loaded_status: tenant.status.clone(),
            tenant,
        }
    }

    /// Writes back what changed, the audit trail and the outbox; returns the
    /// outbox rows to publish after commit.
    pub async fn save(self, tx: &mut Tx) -> sqlx::Result<Vec<crate::outbox::Pending>> {
        if self.saga != self.loaded_saga {
            sqlx::query(
                "UPDATE sagas SET state = $2, cancel_reason = $3, cancel_requested_by = $4, failed_step = $5,
                    failure_reason = $6, updated_at = now(),
                    finished_at = CASE WHEN $2 IN ('succeeded', 'failed', 'cancelled') THEN now() END
             WHERE id = $1",
            )
            .bind(self.saga.id)
            .bind(&self.saga.state)
            .bind(&self.saga.cancel_reason)
            .bind(&self.saga.cancel_requested_by)
            .bind(&self.saga.failed_step)
            .bind(&self.saga.failure_reason)
            .execute(&mut **tx)
            .await?;
        }
        if self.tenant.status != self.loaded_status {
            sqlx::query(
                "UPDATE tenants SET status = $2, failed_step = $3, failure_reason = $4, updated_at = now(),
                        version = version + 1
                 WHERE id = $1",
            )
            .bind(self.tenant.id)
            .bind(&self.tenant.status)
            .bind(&self.saga.failed_step)
            .bind(&self.saga.failure_reason)
            .execute(&mut **tx)
            .await?;
        }
        // Everything else in one statement: the changed steps, resources
        // created and undone, the audit trail and the outbox.
        let steps: Vec<&StepRow> =
            self.steps.iter().zip(&self.dirty).filter(|(_, dirty)| **dirty).map(|(step, _)| step).collect();
        let (audit_actions, audit_details): (Vec<String>, Vec<Value>) = self.audit.into_iter().unzip();
        let outbox = crate::outbox::Columns::of(&self.outgoing);
        let ids: Vec<i64> = sqlx::query_scalar(
            "WITH steps AS (
                UPDATE saga_steps st
                SET state = u.state, attempts = u.attempts, command_id = u.command_id, redriven = u.redriven,
                    deadline = u.deadline, started_at = u.started_at, finished_at = u.finished_at,
                    last_error = u.last_error, output = u.output
                FROM unnest($3::int[], $4::text[], $5::int[], $6::text[], $7::bool[], $8::timestamptz[],
                            $9::timestamptz[], $10::timestamptz[], $11::text[], $12::jsonb[])
                     AS u(position, state, attempts, command_id, redriven, deadline, started_at, finished_at,
                          last_error, output)
                WHERE st.saga_id = $1 AND st.position = u.position
             ), created AS (
                INSERT INTO resources (tenant_id, saga_id, step, kind, external_id, metadata)
                SELECT $2, $1, u.step, u.kind, u.external_id, u.metadata
                FROM unnest($13::text[], $14::text[], $15::text[], $16::jsonb[]) AS u(step, kind, external_id, metadata)
                ON CONFLICT (tenant_id, kind, external_id) DO UPDATE SET deleted_at = NULL
             ), undone AS (
                UPDATE resources SET deleted_at = now()
                WHERE saga_id = $1 AND step = ANY($17) AND deleted_at IS NULL
             ), audit AS (
                INSERT INTO audit_log (actor, tenant_id, saga_id, action, detail)
                SELECT 'orchestrator', $2, $1, a, d FROM unnest($18::text[], $19::jsonb[]) AS u(a, d)
             ), outbox AS (
                INSERT INTO outbox (subject, msg_id, ce_type, tenant_key, correlation_id, payload, traceparent,
                                    tracestate)
                SELECT a, b, c, d, e, f, g, h
                FROM unnest($20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $25::bytea[],
                            $26::text[], $27::text[]) WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, n)
                ORDER BY n
                RETURNING id
             )
             SELECT id FROM outbox",
        )
        .bind(self.saga.id)
        .bind(self.tenant.id)
        .bind(steps.iter().map(|s| s.position).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.state.as_str()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.attempts).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.command_id.as_deref()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.redriven).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.deadline).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.started_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.finished_at).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| s.last_error.as_deref()).collect::<Vec<_>>())
        .bind(steps.iter().map(|s| Json(&s.output.0)).collect::<Vec<_>>())
        .bind(self.created.iter().map(|(step, _)| step.as_str()).collect::<Vec<_>>())
        .bind(self.created.iter().map(|(_, r)| r.kind.as_str()).collect::<Vec<_>>())
        .bind(self.created.iter().map(|(_, r)| r.external_id.as_str()).collect::<Vec<_>>())
        .bind(self.created.iter().map(|(_, r)| Json(&r.metadata)).collect::<Vec<_>>())
        .bind(&self.undone)
        .bind(&audit_actions)
        .bind(&audit_details)
        .bind(&outbox.subjects)
        .bind(&outbox.msg_ids)
        .bind(&outbox.ce_types)
        .bind(&outbox.tenant_keys)
        .bind(&outbox.correlation_ids)
        .bind(&outbox.payloads)
        .bind(&outbox.traceparents)
        .bind(&outbox.tracestates)
        .fetch_all(&mut **tx)
        .await?;
        Ok(crate::outbox::pending(ids, &self.outgoing))
    }

    fn touch(&mut self, i: usize) -> &mut StepRow {
        self.dirty[i] = true;
        &mut self.steps[i]
    }

    fn audit(&mut self, action: &str, detail: Value) {
        self.audit.push((action.to_owned(), detail));
    }

    pub fn tier(&self) -> pb::Tier {
        parse_tier(&self.tenant.tier).unwrap_or(pb::Tier::Bridge)
    }

    fn spec(&self) -> pb::TenantSpec {
        pb::TenantSpec {
            tenant_id: self.tenant.id.to_string(),
            key: self.tenant.key.clone(),
            display_name: self.tenant.display_name.clone(),
            plan: self.tenant.plan.clone(),
            tier: self.tier() as i32,
            admin: Some(pb::AdminContact {
                email: self.tenant.admin_email.clone(),
                first_name: self.tenant.admin_first_name.clone(),
                last_name: self.tenant.admin_last_name.clone(),
            }),
            domains: self.tenant.domains.clone(),
            labels: self.tenant.labels.0.clone(),
        }
    }

    fn saga_id(&self) -> String {
        self.saga.id.to_string()
    }

    /// Publishes a lifecycle event (via the outbox) with a deterministic id.
    fn event<E: Event>(&mut self, id_suffix: &str, event: E) {
        let key = landlord_contract::TenantKey::parse(&self.tenant.key);
        let subject = match &key {
            Ok(key) => self.namespace.event_subject(key, E::KIND),
            Err(_) => self.namespace.invalid_key_event_subject(E::KIND),
        };
        let id = format!("{}.{}.{id_suffix}", self.saga.id, E::KIND.name());
        let saga_id = self.saga_id();
        self.audit(E::KIND.name(), serde_json::json!({ "event": id }));
        self.outgoing.push(Outgoing::new(subject, id, &event).about(&self.tenant.key, Some(&saga_id)));
    }

    pub fn progress(&self) -> pb::Progress {
        let forward = self.steps.len().max(1);
        let done = self.steps.iter().filter(|s| matches!(s.state.as_str(), "succeeded" | "skipped")).count();
        let current = self
            .steps
            .iter()
            .find(|s| matches!(s.state.as_str(), "running" | "retry_wait" | "compensating"))
            .or_else(|| self.steps.iter().rev().find(|s| s.state != "pending"))
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let timestamp = |t: Option<OffsetDateTime>| {
            t.map(|t| prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 })
        };
        pb::Progress {
            current_step: current,
            percent: u32::try_from(done * 100 / forward).unwrap_or(100),
            steps: self
                .steps
                .iter()
                .map(|s| pb::StepProgress {
                    name: s.name.clone(),
                    state: step_state(&s.state) as i32,
                    attempts: u32::try_from(s.attempts).unwrap_or(0),
                    started_at: timestamp(s.started_at),
                    finished_at: timestamp(s.finished_at),
                    duration_ms: match (s.started_at, s.finished_at) {
                        (Some(a), Some(b)) => u64::try_from((b - a).whole_milliseconds()).unwrap_or(0),
                        _ => 0,
                    },
                    last_error: s.last_error.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Inputs for a step: the outputs of the steps completed so far.
    fn inputs(&self) -> HashMap<String, String> {
        self.steps
            .iter()
            .filter(|s| s.state == "succeeded" || s.state == "compensating")
            .flat_map(|s| s.output.0.outputs.clone())
            .collect()
    }

    fn command(&self, i: usize, compensate: bool) -> pb::StepCommand {
        let step = &self.steps[i];
        pb::StepCommand {
            saga_id: self.saga_id(),
            step: step.name.clone(),
            compensate,
            attempt: u32::try_from(step.attempts).unwrap_or(0),
            tenant: Some(self.spec()),
            inputs: self.inputs(),
            resources: if compensate { step.output.0.resources.iter().map(Into::into).collect() } else { Vec::new() },
            params: step.params.0.clone(),
            failure: None,
        }
    }

    fn send_command(&mut self, i: usize, compensate: bool) {
        let command = self.command(i, compensate);
        let step = &self.steps[i];
        let action = if compensate { step.compensation.clone().unwrap_or_default() } else { step.action.clone() };
        let subject = self.namespace.command_subject(&step.service, &action);
        let id = step.command_id.clone().unwrap_or_default();
        let saga_id = self.saga_id();
        self.outgoing.push(Outgoing::new(subject, id, &command).about(&self.tenant.key, Some(&saga_id)));
    }

    /// Starts saga work: the tenant is provisioning and the first step runs.
    pub fn begin(&mut self) {
        self.tenant.status = "PROVISIONING".into();
        let progress = self.progress();
        self.event(
            "0",
            pb::ProvisioningStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                progress: Some(progress),
            },
        );
        self.advance();
    }

    /// (Re)starts forward step `i` as a new attempt.
    fn start_attempt(&mut self, i: usize) {
        let now = self.now;
        let saga_id = self.saga.id;
        let step = self.touch(i);
        step.attempts += 1;
        step.state = "running".into();
        step.redriven = false;
        step.command_id = Some(format!("{saga_id}.{}.do.{}", step.name, step.attempts));
        step.deadline = Some(now + ms(step.timeout_ms));
        step.started_at.get_or_insert(now);
        let (name, attempt) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0));
        let progress = self.progress();
        self.event(
            &format!("{}.{attempt}", self.steps[i].position),
            pb::StepStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                attempt,
                progress: Some(progress),
            },
        );
        self.send_command(i, false);
    }

    /// After a forward step ended: the next one, compensation if a cancel
    /// came in meanwhile, or activation.
    fn advance(&mut self) {
        if self.saga.cancel_reason.is_some() {
            let reason = self.saga.cancel_reason.clone().unwrap_or_default();
            self.begin_compensation(None, &format!("cancelled: {reason}"));
            return;
        }
        match self.steps.iter().position(|s| s.state == "pending") {
            Some(i) => self.start_attempt(i),
            None => self.activate(),
        }
    }

    fn activate(&mut self) {
        self.saga.state = "succeeded".into();
        self.tenant.status = "ACTIVE".into();
        let resources = self.steps.iter().flat_map(|s| s.output.0.resources.iter().map(Into::into)).collect();
        let progress = self.progress();
        self.event(
            "0",
            pb::TenantActivated {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                resources,
                progress: Some(progress),
            },
        );
    }

    /// Applies a worker's answer. Answers to commands no longer in flight
    /// (an older attempt, a re-drive's twin) change nothing.
    pub fn on_result(&mut self, result: &pb::StepResult) {
        let Some(i) = self.steps.iter().position(|s| s.name == result.step) else { return };
        let step = &self.steps[i];
        let expected_state = if result.compensate { "compensating" } else { "running" };
        if step.state != expected_state || step.command_id.as_deref() != Some(result.command_id.as_str()) {
            tracing::debug!(step = %result.step, command = %result.command_id, "stale result ignored");
            return;
        }
        match (&result.outcome, result.compensate) {
            (Some(Outcome::Ok(ok)), false) => self.forward_succeeded(i, ok),
            (Some(Outcome::Ok(_)), true) => self.compensated(i),
            (Some(Outcome::Retryable(error)), compensate) => self.failed_attempt(i, compensate, error, true),
            (Some(Outcome::Permanent(error)), compensate) => self.failed_attempt(i, compensate, error, false),
            (None, compensate) => {
                let error = pb::StepError {
                    code: "no_outcome".into(),
                    message: "result without outcome".into(),
                    retryable: false,
                };
                self.failed_attempt(i, compensate, &error, false);
            }
        }
    }

    fn forward_succeeded(&mut self, i: usize, ok: &pb::StepOk) {
        let now = self.now;
        let step = self.touch(i);
        step.state = "succeeded".into();
        step.deadline = None;
        step.finished_at = Some(now);
        step.last_error = None;
        step.output = Json(ok.into());
        let (name, attempt) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0));
        let records = step.output.0.resources.clone();
        self.created.extend(records.into_iter().map(|r| (name.clone(), r)));
        let progress = self.progress();
        self.event(
            &format!("{}", self.steps[i].position),
            pb::StepSucceeded {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                attempt,
                resources: ok.resources.clone(),
                progress: Some(progress),
            },
        );
        self.advance();
    }

    /// A failed attempt (an error answer or a time-out after re-drive).
    fn failed_attempt(&mut self, i: usize, compensate: bool, error: &pb::StepError, retryable: bool) {
        let now = self.now;
        let step = self.touch(i);
        step.last_error = Some(format!("{}: {}", error.code, error.message));
        let position = step.position;
        if compensate {
            // Compensations are retried until they succeed: leaving a
            // tenant's resources behind is worse than trying again.
            let delay = backoff(&step.backoff_ms, step.attempts);
            step.deadline = Some(now + ms(delay));
            step.command_id = None;
            let name = step.name.clone();
            let attempt = u32::try_from(step.attempts).unwrap_or(0);
            let progress = self.progress();
            self.event(
                &format!("{position}.undo.{attempt}"),
                pb::StepFailed {
                    tenant_id: self.tenant.id.to_string(),
                    saga_id: self.saga_id(),
                    step: name,
                    attempt,
                    error: Some(error.clone()),
                    will_retry: true,
                    fatal: true,
                    progress: Some(progress),
                },
            );
            return;
        }
        let will_retry = retryable && step.attempts < step.max_attempts && self.saga.cancel_reason.is_none();
        let step = &mut self.steps[i];
        if will_retry {
            step.state = "retry_wait".into();
            step.deadline = Some(now + ms(backoff(&step.backoff_ms, step.attempts)));
        } else {
            step.state = "failed".into();
            step.deadline = None;
            step.finished_at = Some(now);
        }
        step.command_id = None;
        let (name, attempt, fatal) = (step.name.clone(), u32::try_from(step.attempts).unwrap_or(0), step.fatal);
        let progress = self.progress();
        self.event(
            &format!("{position}.{attempt}"),
            pb::StepFailed {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name.clone(),
                attempt,
                error: Some(error.clone()),
                will_retry,
                fatal,
                progress: Some(progress),
            },
        );
        if will_retry {
            return;
        }
        if fatal {
            let reason = format!("{}: {}", error.code, error.message);
            self.begin_compensation(Some(&name), &reason);
        } else {
            // A non-fatal step (the welcome email) is reported, not undone.
            self.advance();
        }
    }

    /// A deadline passed: a step's answer is late, or its retry is due.
    pub fn on_deadline(&mut self, position: i32) {
        let Some(i) = self.steps.iter().position(|s| s.position == position) else { return };
        let step = &self.steps[i];
        let Some(deadline) = step.deadline else { return };
        if deadline > self.now {
            return;
        }
        match step.state.as_str() {
            "retry_wait" => self.start_attempt(i),
            "compensating" if step.command_id.is_none() => self.start_compensation(i),
            "running" | "compensating" if !step.redriven => {
                // Maybe the command or its answer was lost: send the same
                // command again, with the same message id.
                let compensate = step.state == "compensating";
                let now = self.now;
                let step = self.touch(i);
                step.redriven = true;
                step.deadline = Some(now + ms(step.timeout_ms));
                let detail = serde_json::json!({ "step": step.name, "command": step.command_id });
                self.audit("step_redriven", detail);
                self.send_command(i, compensate);
            }
            "running" | "compensating" => {
                let compensate = step.state == "compensating";
                let error = pb::StepError {
                    code: "timeout".into(),
                    message: format!(
                        "no answer within {:?}, re-driven once",
                        Duration::from_millis(step.timeout_ms as u64)
                    ),
                    retryable: true,
                };
                self.failed_attempt(i, compensate, &error, true);
            }
            _ => {}
        }
    }

    /// Cancels a running saga: compensation starts as soon as no step is in
    /// flight (now, or when the running step answers).
    pub fn cancel(&mut self, reason: &str, by: &str) -> bool {
        if self.saga.state != "running" || self.saga.cancel_reason.is_some() {
            return false;
        }
        self.saga.cancel_reason = Some(reason.to_owned());
        self.saga.cancel_requested_by = Some(by.to_owned());
        self.audit("cancel_requested", serde_json::json!({ "reason": reason, "by": by }));
        if let Some(i) = self.steps.iter().position(|s| s.state == "retry_wait") {
            let now = self.now;
            let step = self.touch(i);
            step.state = "failed".into();
            step.deadline = None;
            step.finished_at = Some(now);
            self.begin_compensation(None, &format!("cancelled: {reason}"));
        }
        true
    }

    fn begin_compensation(&mut self, failed_step: Option<&str>, reason: &str) {
        self.saga.state = "compensating".into();
        self.tenant.status = "COMPENSATING".into();
        self.saga.failed_step = failed_step.map(str::to_owned);
        self.saga.failure_reason = Some(reason.to_owned());
        let progress = self.progress();
        self.event(
            "0",
            pb::CompensationStarted {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                failed_step: failed_step.unwrap_or_default().to_owned(),
                reason: reason.to_owned(),
                progress: Some(progress),
            },
        );
        self.compensate_next();
    }

    /// Compensates the newest completed step that has a compensation, or
    /// finishes the saga when none is left.
    fn compensate_next(&mut self) {
        let next = self.steps.iter().rposition(|s| s.state == "succeeded" && s.compensation.is_some());
        match next {
            Some(i) => {
                let step = self.touch(i);
                step.state = "compensating".into();
                step.attempts = 0;
                self.start_compensation(i);
            }
            None => self.finish_failed(),
        }
    }

    fn start_compensation(&mut self, i: usize) {
        let now = self.now;
        let saga_id = self.saga.id;
        let step = self.touch(i);
        step.attempts += 1;
        step.redriven = false;
        step.command_id = Some(format!("{saga_id}.{}.undo.{}", step.name, step.attempts));
        step.deadline = Some(now + ms(step.timeout_ms));
        self.send_command(i, true);
    }

    fn compensated(&mut self, i: usize) {
        let now = self.now;
        let step = self.touch(i);
        step.state = "compensated".into();
        step.deadline = None;
        step.command_id = None;
        step.finished_at = Some(now);
        let name = step.name.clone();
        let position = step.position;
        self.undone.push(name.clone());
        let progress = self.progress();
        self.event(
            &format!("{position}"),
            pb::StepCompensated {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                step: name,
                progress: Some(progress),
            },
        );
        self.compensate_next();
    }

    fn finish_failed(&mut self) {
        let progress = Some(self.progress());
        let reason = self.saga.failure_reason.clone().unwrap_or_default();
        if let Some(cancel) = self.saga.cancel_reason.clone() {
            self.saga.state = "cancelled".into();
            self.tenant.status = "CANCELLED".into();
            let by = self.saga.cancel_requested_by.clone().unwrap_or_default();
            self.event(
                "0",
                pb::TenantCancelled {
                    tenant_id: self.tenant.id.to_string(),
                    saga_id: self.saga_id(),
                    reason: cancel,
                    requested_by: by,
                    progress,
                },
            );
            return;
        }
        self.saga.state = "failed".into();
        self.tenant.status = "FAILED".into();
        let failed_step = self.saga.failed_step.clone().unwrap_or_default();
        self.event(
            "0",
            pb::ProvisioningFailed {
                tenant_id: self.tenant.id.to_string(),
                saga_id: self.saga_id(),
                failed_step: failed_step.clone(),
                reason: reason.clone(),
                progress,
            },
        );
        // Tell the admin. Mail trouble never changes the outcome, so this is
        // sent and not tracked as a step.
        let command = pb::StepCommand {
            saga_id: self.saga_id(),
            step: "failure_email".into(),
            attempt: 1,
            tenant: Some(self.spec()),
            failure: Some(pb::Failure { step: failed_step, reason }),
            ..Default::default()
        };
        let action = landlord_contract::Action::NOTIFICATION_SEND_FAILURE;
        let subject = self.namespace.command_subject(action.service, action.name);
        let id = format!("{}.failure_email", self.saga.id);
        let saga_id = self.saga_id();
        self.outgoing.push(Outgoing::new(subject, id, &command).about(&self.tenant.key, Some(&saga_id)));
    }
}

fn backoff(backoff_ms: &[i64], attempts: i32) -> i64 {
    let index = usize::try_from(attempts.saturating_sub(1)).unwrap_or(0);
    backoff_ms.get(index).or(backoff_ms.last()).copied().unwrap_or(1000)
}

fn step_state(state: &str) -> StepState {
    match state {
        "pending" => StepState::Pending,
        "running" | "retry_wait" => StepState::Running,
        "succeeded" => StepState::Succeeded,
        "failed" => StepState::Failed,
        "compensating" => StepState::Compensating,
        "compensated" => StepState::Compensated,
        "skipped" => StepState::Skipped,
        _ => StepState::Unspecified,
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

impl From<&pb::StepOk> for StepOutput {
    fn from(ok: &pb::StepOk) -> Self {
        Self {
            resources: ok
                .resources
                .iter()
                .map(|r| ResourceRecord {
                    kind: r.kind.clone(),
                    external_id: r.external_id.clone(),
                    metadata: r.metadata.clone(),
                })
                .collect(),
            outputs: ok.outputs.clone(),
        }
    }
}

impl From<&ResourceRecord> for pb::Resource {
    fn from(r: &ResourceRecord) -> Self {
        Self { kind: r.kind.clone(), external_id: r.external_id.clone(), metadata: r.metadata.clone() }
    }
}
