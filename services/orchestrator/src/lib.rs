//! The orchestrator turns each TenantRequested into a provisioning saga and
//! drives it to ACTIVE, or undoes it (DESIGN.md, "Saga semantics"); each
//! OperationRequested into a lifecycle saga — suspend, resume, update,
//! offboard, restore, export, purge — run by the same engine
//! (docs/lifecycle.md), and it asks for the purges whose grace period is
//! over ([`purge`]).
//!
//! PostgreSQL is the source of truth. Every handler runs one transaction:
//! the message id goes into the inbox (a repeat changes nothing), the saga is
//! locked, the transition applied and the messages it decides written to the
//! outbox, which the handler publishes after commit ([`outbox`]). A timer re-drives
//! steps whose answers are late and starts retries that are due, so a lost
//! command or result delays a saga but never strands it. Several replicas
//! can run: the broker spreads messages, row locks serialise each saga.

pub mod intake;
pub mod metrics;
pub mod operate;
pub mod purge;
mod results;
pub mod saga;

use std::sync::Arc;
use std::time::Duration;

use landlord_contract::{Action, EventKind, Namespace, StreamKind, pb};
use landlord_control_plane::{Operation, SagaState, StepState};
use landlord_control_plane::{Plans, migrator, outbox};
use landlord_runtime::{Delivery, Handler, HandlerError, Service};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SERVICE: &str = "orchestrator";

/// Timer and relay pacing.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often due deadlines are looked for.
    pub timer_interval: Duration,
    /// How often the outbox is swept for rows left behind.
    pub relay_poll: Duration,
    /// How old a row must be before the sweep publishes it: the handler that
    /// wrote it normally has by then.
    pub relay_grace: Duration,
    /// How long applied message ids stay in the inbox. A message is acked
    /// right after its transaction commits, so only a redelivery after a
    /// crash in between — or a result from a long-finished saga, which the
    /// saga ignores anyway — can come later than this.
    pub inbox_retention: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            timer_interval: Duration::from_millis(100),
            relay_poll: Duration::from_millis(500),
            relay_grace: Duration::from_secs(2),
            inbox_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How often the purge timer looks for grace periods that are over.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub purge_interval: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self { purge_interval: Duration::from_secs(5) }
    }
}

struct Core {
    pool: PgPool,
    namespace: Namespace,
    plans: Plans,
    /// Publishes what a committed transaction wrote to the outbox.
    dispatcher: outbox::Dispatcher,
    /// Sagas in progress as this orchestrator last saved them.
    kept: results::Kept,
    /// Connections for results applied to kept sagas ([`results`]).
    kept_pool: PgPool,
}

/// A database error as the message loop should treat it. The control
/// plane being down or busy is never a reason to dead-letter a message the
/// saga needs (a lost step result costs an attempt, issue 22): those are
/// [`HandlerError::unavailable`], kept and tried again until the database
/// answers. Anything else — a concurrent insert of the same key, which
/// resolves on redelivery, or an error that will not — is retryable with
/// the usual bounded redeliveries.
fn db_error(error: sqlx::Error) -> HandlerError {
    let message = format!("database: {error}");
    let handler_error =
        if is_unavailable(&error) { HandlerError::unavailable(message) } else { HandlerError::retryable(message) };
    handler_error.with_source(error)
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // Connection trouble (08), serialisation failures and deadlocks
        // (40), out of resources (53), shutdown or crash recovery (57P),
        // system errors (58).
        sqlx::Error::Database(e) => {
            e.code().is_some_and(|code| ["08", "40", "53", "57", "58"].iter().any(|class| code.starts_with(class)))
        }
        _ => false,
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

impl Core {
    /// Opens the transaction for message `msg_id`, or `None` if that message
    /// was applied before (its id is in the inbox).
    async fn begin_once(&self, msg_id: &str) -> Result<Option<Tx>, HandlerError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let fresh = sqlx::query("INSERT INTO inbox (msg_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(msg_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected()
            == 1;
        if fresh {
            Ok(Some(tx))
        } else {
            tracing::debug!(msg_id, "already applied");
            Ok(None)
        }
    }

    /// Commits, keeps the saga `saved` (if any) for its next result, then
    /// publishes what the transaction wrote to the outbox.
    async fn commit(
        &self,
        tx: Tx,
        pending: Vec<outbox::Pending>,
        saved: Option<saga::Saga>,
    ) -> Result<(), HandlerError> {
        tx.commit().await.map_err(db_error)?;
        if let Some(saga) = saved {
            self.kept.keep(saga);
        }
        self.dispatcher.dispatch(pending).await;
        Ok(())
    }
}

struct Intake(Arc<Core>);

impl Handler for Intake {
    type Message = pb::TenantRequested;

    async fn handle(&self, delivery: Delivery<pb::TenantRequested>) -> Result<(), HandlerError> {
        let core = &self.0;
        let request_id = delivery.info.message_id();
        let request = delivery.message;
        let Some(mut tx) = core.begin_once(&format!("intake.{request_id}")).await? else { return Ok(()) };
        // The request contract is checked where it arrives (issue 23).
        let arrival = intake::Arrival::of(&delivery.info);
        let applied = intake::apply_arrived(&mut tx, &core.namespace, &core.plans, &request, &request_id, &arrival)
            .await
            .map_err(db_error)?;
        core.commit(tx, applied.pending, applied.started).await?;
        tracing::info!(key = %request.key, outcome = ?applied.outcome, "tenant requested");
        Ok(())
    }
}

struct Operate(Arc<Core>);

impl Handler for Operate {
    type Message = pb::OperationRequested;

    async fn handle(&self, delivery: Delivery<pb::OperationRequested>) -> Result<(), HandlerError> {
        let core = &self.0;
        let request = delivery.message;
        let Some(mut tx) = core.begin_once(&format!("operate.{}", delivery.info.message_id())).await? else {
            return Ok(());
        };
        let now = time::OffsetDateTime::now_utc();
        let applied =
            operate::apply(&mut tx, &core.namespace, &core.plans, &request, now).await.map_err(|e| match e {
                operate::OperateError::Malformed(message) => HandlerError::permanent(message),
                operate::OperateError::Database(error) => db_error(error),
            })?;
        core.commit(tx, applied.pending, applied.started).await?;
        tracing::info!(
            key = %request.tenant_key,
            operation = %request.operation,
            saga = %request.saga_id,
            outcome = ?applied.outcome,
            "operation requested"
        );
        Ok(())
    }
}

struct Cancel(Arc<Core>);

impl Handler for Cancel {
    type Message = pb::CancelSaga;

    async fn handle(&self, delivery: Delivery<pb::CancelSaga>) -> Result<(), HandlerError> {
        let core = &self.0;
        let cancel = delivery.message;
        let Some(mut tx) = core.begin_once(&delivery.info.message_id()).await? else { return Ok(()) };
        // A cancel names its saga: one that arrives late, after the tenant
        // was retried under a new saga, must not cancel the new one.
        let named = match cancel.saga_id.as_str() {
            "" => None,
            id => Some(
                Uuid::parse_str(id).map_err(|_| HandlerError::permanent(format!("saga id {id:?} is not a UUID")))?,
            ),
        };
        let running: Option<(Uuid,)> = sqlx::query_as(
            "SELECT s.id FROM sagas s JOIN tenants t ON t.id = s.tenant_id
             WHERE t.key = $1 AND s.state = $3 AND ($2::uuid IS NULL OR s.id = $2)",
        )
        .bind(&cancel.tenant_key)
        .bind(named)
        .bind(SagaState::Running)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some((saga_id,)) = running else {
            return Err(HandlerError::permanent(match named {
                Some(id) => format!("saga {id} of tenant {:?} is not running: nothing to cancel", cancel.tenant_key),
                None => format!("tenant {:?} has no operation in progress to cancel", cancel.tenant_key),
            }));
        };
        let mut pending = Vec::new();
        if let Some(mut saga) = saga::Saga::load(&mut tx, &core.namespace, saga_id, false).await.map_err(db_error)? {
            if saga.saga.operation == Operation::Purge {
                // A purge is never undone: what it deleted cannot come
                // back. The refusal is in the audit log and the dead-letter
                // stream.
                saga.refuse_cancel(&cancel.reason, &cancel.requested_by);
                let pending = saga.save(&mut tx).await.map_err(db_error)?;
                core.commit(tx, pending, None).await?;
                core.kept.forget(&saga_id);
                return Err(HandlerError::permanent(format!(
                    "saga {saga_id} of tenant {:?} is a purge: a purge is never cancelled",
                    cancel.tenant_key
                )));
            }
            if saga.past_cancelling() {
                return Err(HandlerError::permanent(format!(
                    "saga {saga_id} of tenant {:?} can no longer be cancelled: every step that could fail it has \
                     succeeded and the tenant is being activated",
                    cancel.tenant_key
                )));
            }
            saga.cancel(&cancel.reason, &cancel.requested_by);
            pending = saga.save(&mut tx).await.map_err(db_error)?;
        }
        core.commit(tx, pending, None).await?;
        // The kept copy (if any) is a version behind now.
        core.kept.forget(&saga_id);
        Ok(())
    }
}

struct Resolve(Arc<Core>);

impl Handler for Resolve {
    type Message = pb::ResolveCompensation;

    async fn handle(&self, delivery: Delivery<pb::ResolveCompensation>) -> Result<(), HandlerError> {
        let core = &self.0;
        let order = delivery.message;
        let saga_id = Uuid::parse_str(&order.saga_id)
            .map_err(|_| HandlerError::permanent(format!("saga id {:?} is not a UUID", order.saga_id)))?;
        if order.reason.trim().is_empty() || order.requested_by.trim().is_empty() {
            return Err(HandlerError::permanent("resolving a compensation needs a reason and who asked"));
        }
        let Some(mut tx) = core.begin_once(&delivery.info.message_id()).await? else { return Ok(()) };
        let Some(mut saga) = saga::Saga::load(&mut tx, &core.namespace, saga_id, false).await.map_err(db_error)? else {
            return Err(HandlerError::permanent(format!("no saga {saga_id}")));
        };
        if !saga.resolve(&order.step, order.skip, &order.reason, &order.requested_by) {
            return Err(HandlerError::permanent(format!(
                "step {:?} of saga {saga_id} is not a stuck compensation",
                order.step
            )));
        }
        let pending = saga.save(&mut tx).await.map_err(db_error)?;
        core.commit(tx, pending, None).await?;
        core.kept.forget(&saga_id);
        Ok(())
    }
}

/// Applies due deadlines: late answers are re-driven or counted as failed
/// attempts, due retries and compensation retries start.
async fn timer(
    core: Arc<Core>,
    interval: Duration,
    stuck: prometheus_client::metrics::gauge::Gauge,
    shutdown: CancellationToken,
) {
    let mut pruned = std::time::Instant::now();
    let mut counted: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        if let Err(error) = fire_due(&core).await {
            tracing::warn!(%error, "saga timer failed; retrying");
        }
        if pruned.elapsed() > Duration::from_secs(60) {
            core.kept.prune();
            pruned = std::time::Instant::now();
        }
        // Stuck compensations wait for an operator: count them for alerts
        // (landlord_compensations_stuck), every few seconds.
        if counted.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
            counted = Some(std::time::Instant::now());
            match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM saga_steps WHERE state = $1")
                .bind(StepState::Stuck)
                .fetch_one(&core.pool)
                .await
            {
                Ok(n) => {
                    stuck.set(n);
                }
                Err(error) => tracing::warn!(%error, "counting stuck compensations failed"),
            }
        }
    }
}

async fn fire_due(core: &Core) -> sqlx::Result<()> {
    let due: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT saga_id, position FROM saga_steps WHERE deadline <= now() ORDER BY deadline LIMIT 200")
            .fetch_all(&core.pool)
            .await?;
    for (saga_id, position) in due {
        // One saga that fails (a bad row, a conflict) must not hold up the
        // others due in the same round.
        if let Err(error) = fire_one(core, saga_id, position).await {
            tracing::warn!(%error, %saga_id, position, "applying a due deadline failed; it will be tried again");
        }
    }
    Ok(())
}

async fn fire_one(core: &Core, saga_id: Uuid, position: i32) -> sqlx::Result<()> {
    let mut tx = core.pool.begin().await?;
    // Another replica or handler holds it: it will be looked at again.
    let Some(mut saga) = saga::Saga::load(&mut tx, &core.namespace, saga_id, true).await? else { return Ok(()) };
    saga.on_deadline(position);
    let pending = saga.save(&mut tx).await?;
    tx.commit().await?;
    // The kept copy (if any) is a version behind now.
    core.kept.forget(&saga_id);
    core.dispatcher.dispatch(pending).await;
    Ok(())
}

/// Applies migrations and attaches the orchestrator's consumers, relay and
/// timers to `service`, the purge timer at its default pace.
pub async fn attach(service: &mut Service, plans: Plans, timing: Timing) -> anyhow::Result<()> {
    attach_with(service, plans, timing, Lifecycle::default()).await
}

/// [`attach`], with the purge timer's pace.
pub async fn attach_with(
    service: &mut Service,
    plans: Plans,
    timing: Timing,
    lifecycle: Lifecycle,
) -> anyhow::Result<()> {
    attach_with_metrics(service, plans, timing, lifecycle, metrics::Settings::default()).await
}

/// [`attach_with`], with how the metrics' gauges are read.
pub async fn attach_with_metrics(
    service: &mut Service,
    plans: Plans,
    timing: Timing,
    lifecycle: Lifecycle,
    gauges: metrics::Settings,
) -> anyhow::Result<()> {
    let pool =
        service.database.clone().ok_or_else(|| anyhow::anyhow!("the orchestrator needs LANDLORD_DATABASE_URL"))?;
    migrator().run(&pool).await?;
    let namespace = service.broker.namespace.clone();
    let (dispatcher, published) = outbox::Dispatcher::new(service.publisher.clone());
    let core = Arc::new(Core {
        pool: pool.clone(),
        namespace: namespace.clone(),
        plans,
        dispatcher,
        kept: results::Kept::default(),
        kept_pool: results::kept_pool(&pool),
    });
    service.spawn(outbox::cleaner(pool.clone(), published, outbox::CLEAN_WINDOW, service.shutdown_token()));
    service.spawn(outbox::sweep(
        pool,
        service.publisher.clone(),
        outbox::Relay::Orchestrator,
        timing.relay_grace,
        timing.relay_poll,
        Some(timing.inbox_retention),
        service.shutdown_token(),
    ));
    let stuck = service.metrics.gauge(
        "compensations_stuck",
        "Compensations that failed permanently and wait for an operator (cmd.orchestrator.resolve)",
    );
    service.spawn(timer(core.clone(), timing.timer_interval, stuck, service.shutdown_token()));
    service.spawn(metrics::attach(&service.metrics, core.pool.clone(), gauges, service.shutdown_token()));
    service.spawn(purge::timer(core.clone(), lifecycle.purge_interval, service.shutdown_token()));
    let requested = namespace.event_filter(None, Some(EventKind::Requested));
    service.consume(StreamKind::Events, "orchestrator-intake", vec![requested], Intake(core.clone())).await?;
    let results = namespace.stream_subjects(StreamKind::Results);
    let (handler, appliers) = results::batched(core.clone(), &service.shutdown_token());
    for applier in appliers {
        service.spawn(applier);
    }
    service.consume(StreamKind::Results, "orchestrator-results", vec![results], handler).await?;
    let cancel = namespace.command_subject(Action::ORCHESTRATOR_CANCEL.service, Action::ORCHESTRATOR_CANCEL.name);
    service.consume(StreamKind::Commands, "orchestrator-commands", vec![cancel], Cancel(core.clone())).await?;
    let resolve = namespace.command_subject(Action::ORCHESTRATOR_RESOLVE.service, Action::ORCHESTRATOR_RESOLVE.name);
    service.consume(StreamKind::Commands, "orchestrator-resolve", vec![resolve], Resolve(core.clone())).await?;
    let operate = namespace.command_subject(Action::ORCHESTRATOR_OPERATE.service, Action::ORCHESTRATOR_OPERATE.name);
    service.consume(StreamKind::Commands, "orchestrator-operate", vec![operate], Operate(core)).await?;
    Ok(())
}
