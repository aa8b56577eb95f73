//! Step results, applied in batches.
//!
//! Each result the consumer hands over waits in a queue; an applier takes
//! everything waiting (up to a batch) and applies it.
//!
//! A saga this orchestrator saved last — when intake started it, or at its
//! last result — is kept in memory ([`Kept`]), so the result it waits for
//! is applied without loading it: one statement,
//! outside any transaction, writes the transition, the message id in the
//! inbox and the outbox, on condition that the saga's version is still the
//! kept one (no replica, timer or cancellation moved it since) and that the
//! message is new. One round trip and one commit per step instead of five
//! round trips — what a saga step costs the orchestrator, one at a time
//! (bench/results/saga.md).
//!
//! Everything else — a saga not kept (another replica saved it last, or
//! this one restarted), a version that moved, a repeated message — takes
//! the locking path: one transaction in which one statement records the
//! message ids in the inbox and locks the sagas, one loads their steps, one
//! writes every change and the outbox. Under load the commit and the
//! statements are shared by the whole batch. A batch that fails is applied
//! again one result at a time, so one bad result cannot hold up the others,
//! and each result is acked only after what applied it has committed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use landlord_contract::pb;
use landlord_runtime::{Delivery, Handler, HandlerError};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::saga::Saga;
use crate::{Core, db_error};

/// Most results applied in one transaction.
const MAX_BATCH: usize = 64;

/// Appliers per orchestrator: transactions in flight at once.
const APPLIERS: usize = 4;

/// Connections for applying results to kept sagas, one per applier: apart
/// from the pool the locking path, the timer and the outbox share, so a
/// step's one statement never waits for a connection behind them.
pub(crate) fn kept_pool(pool: &sqlx::PgPool) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(u32::try_from(APPLIERS).unwrap_or(4))
        // As the service's pool: a broken connection fails its statement,
        // and the result goes the locking path; a ping before each acquire
        // would cost every step a round trip.
        .test_before_acquire(false)
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// Most sagas kept in memory; beyond it, results take the locking path.
const KEPT_SAGAS: usize = 10_000;

/// Sagas in progress as this orchestrator last saved them, by id, with
/// when they were kept.
#[derive(Debug, Default)]
pub(crate) struct Kept(std::sync::Mutex<HashMap<Uuid, (Saga, Instant)>>);

/// A kept saga untouched for this long is dropped: another replica, the
/// timer or a cancel moved it on (its next result would take the locking
/// path anyway), or it is stuck waiting for an operator.
const KEPT_FOR: Duration = Duration::from_secs(600);

impl Kept {
    /// Keeps `saga` as saved — unless it is finished, or a newer version of
    /// it is kept already.
    pub(crate) fn keep(&self, saga: Saga) {
        let id = saga.saga.id;
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if saga.is_finished() {
            kept.remove(&id);
            return;
        }
        let newer = kept.get(&id).is_some_and(|(k, _)| k.version >= saga.version);
        if !newer && (kept.len() < KEPT_SAGAS || kept.contains_key(&id)) {
            kept.insert(id, (saga, Instant::now()));
        }
    }

    fn take(&self, id: &Uuid) -> Option<Saga> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(id).map(|(saga, _)| saga)
    }

    /// Drops the copy of a saga that was saved by another path.
    pub(crate) fn forget(&self, id: &Uuid) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }

    /// Drops copies kept longer than [`KEPT_FOR`].
    pub(crate) fn prune(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|_, (_, at)| at.elapsed() < KEPT_FOR);
    }
}

struct Item {
    saga_id: Uuid,
    msg_id: String,
    result: pb::StepResult,
    /// The handler's trace context: what the result decides continues it.
    trace: Option<(String, Option<String>)>,
    reply: oneshot::Sender<Result<(), HandlerError>>,
}

/// The results consumer's handler: queues a result and waits for the
/// transaction that applied it.
pub(crate) struct Results {
    queue: mpsc::Sender<Item>,
}

/// The handler and the appliers to spawn next to it.
pub(crate) fn batched(
    core: Arc<Core>,
    shutdown: &CancellationToken,
) -> (Results, Vec<impl Future<Output = ()> + Send + 'static>) {
    let (queue, receiver) = mpsc::channel(MAX_BATCH * APPLIERS);
    let receiver = Arc::new(Mutex::new(receiver));
    let appliers = (0..APPLIERS).map(|_| applier(core.clone(), receiver.clone(), shutdown.clone())).collect::<Vec<_>>();
    (Results { queue }, appliers)
}

fn shutting_down() -> HandlerError {
    // Handed back to the broker for another replica (or this one after its
    // restart), never dead-lettered.
    HandlerError::unavailable("the orchestrator is shutting down")
}

/// Commands sent outside any saga name their origin instead of a saga id
/// (the sign-up verification mail: `signup:<sign-up id>`); their results
/// are acknowledged and change nothing. Any other saga id that is not a
/// UUID is refused (dead-lettered with the reason).
const OUTSIDE_SAGA_PREFIXES: [&str; 1] = ["signup:"];

fn outside_any_saga(saga_id: &str) -> bool {
    OUTSIDE_SAGA_PREFIXES.iter().any(|prefix| saga_id.starts_with(prefix))
}

impl Handler for Results {
    type Message = pb::StepResult;

    async fn handle(&self, delivery: Delivery<pb::StepResult>) -> Result<(), HandlerError> {
        let result = delivery.message;
        if outside_any_saga(&result.saga_id) {
            tracing::debug!(saga = %result.saga_id, step = %result.step, "result of a command outside any saga");
            return Ok(());
        }
        let Ok(saga_id) = Uuid::parse_str(&result.saga_id) else {
            return Err(HandlerError::permanent(format!("saga id {:?} is not a UUID", result.saga_id)));
        };
        let (reply, answer) = oneshot::channel();
        let item = Item {
            saga_id,
            msg_id: delivery.info.message_id(),
            result,
            trace: landlord_runtime::telemetry::current_trace(),
            reply,
        };
        self.queue.send(item).await.map_err(|_| shutting_down())?;
        answer.await.unwrap_or_else(|_| Err(shutting_down()))
    }
}

async fn applier(core: Arc<Core>, queue: Arc<Mutex<mpsc::Receiver<Item>>>, shutdown: CancellationToken) {
    loop {
        let items = {
            let mut queue = queue.lock().await;
            let first = tokio::select! {
                // Results still queued are answered "retry" by their handlers.
                () = shutdown.cancelled() => return,
                item = queue.recv() => match item {
                    Some(item) => item,
                    None => return,
                },
            };
            let mut items = vec![first];
            while items.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            items
        };
        apply(&core, items).await;
    }
}

async fn apply(core: &Core, items: Vec<Item>) {
    let items = apply_kept(core, items).await;
    if items.len() > 1 {
        match apply_batch(core, &items).await {
            Ok(outcomes) => {
                for (item, outcome) in items.into_iter().zip(outcomes) {
                    let _ = item.reply.send(outcome);
                }
                return;
            }
            Err(error) => tracing::info!(%error, size = items.len(), "a batch of results failed; applying one by one"),
        }
    }
    for item in items {
        let outcome = match apply_batch(core, std::slice::from_ref(&item)).await {
            Ok(mut outcomes) => outcomes.pop().unwrap_or(Ok(())),
            Err(error) => Err(db_error(error)),
        };
        let _ = item.reply.send(outcome);
    }
}

/// Applies the items whose saga is kept, one per saga, in one statement
/// ([`Saga::save_kept`]); returns the items left for the locking path.
async fn apply_kept(core: &Core, items: Vec<Item>) -> Vec<Item> {
    let mut kept = Vec::new();
    let mut rest = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        match seen.insert(item.saga_id).then(|| core.kept.take(&item.saga_id)).flatten() {
            Some(saga) => kept.push((item, saga.resumed())),
            None => rest.push(item),
        }
    }
    if kept.is_empty() {
        return rest;
    }
    for (item, saga) in &mut kept {
        saga.on_result(&item.result);
        for message in &mut saga.outgoing {
            message.trace.clone_from(&item.trace);
        }
    }
    let (items, sagas): (Vec<Item>, Vec<Saga>) = kept.into_iter().unzip();
    let msg_ids: Vec<&str> = items.iter().map(|i| i.msg_id.as_str()).collect();
    match Saga::save_kept(&sagas, &msg_ids, &core.kept_pool).await {
        Ok((pending, written)) => {
            // Kept before the commands go out: a fast worker's result can
            // reach another applier before this dispatch has its acks, and
            // must find the saga kept, not take the locking path.
            let mut applied = Vec::new();
            for (item, saga) in items.into_iter().zip(sagas) {
                if written.contains(&item.saga_id) {
                    core.kept.keep(saga.saved());
                    applied.push(item);
                } else {
                    rest.push(item);
                }
            }
            core.dispatcher.dispatch(pending).await;
            for item in applied {
                let _ = item.reply.send(Ok(()));
            }
        }
        Err(error) => {
            tracing::debug!(%error, "applying results to kept sagas failed; loading them instead");
            rest.extend(items);
        }
    }
    rest
}

/// Applies `items` in one transaction; the outcome of each, in order.
async fn apply_batch(core: &Core, items: &[Item]) -> sqlx::Result<Vec<Result<(), HandlerError>>> {
    let mut tx = core.pool.begin().await?;
    let messages: Vec<(Uuid, &str)> = items.iter().map(|i| (i.saga_id, i.msg_id.as_str())).collect();
    let mut batch = Saga::load_for_messages(&mut tx, &core.namespace, &messages).await?;
    let outcomes = items
        .iter()
        .map(|item| {
            if batch.missing.contains(&item.saga_id) {
                return Err(HandlerError::permanent(format!("no saga {}", item.saga_id)));
            }
            // Applied before, or twice in this batch.
            if !batch.fresh.remove(&item.msg_id) {
                tracing::debug!(msg_id = %item.msg_id, "already applied");
                return Ok(());
            }
            if let Some(saga) = batch.sagas.get_mut(&item.saga_id) {
                let decided = saga.outgoing.len();
                saga.on_result(&item.result);
                for message in &mut saga.outgoing[decided..] {
                    message.trace.clone_from(&item.trace);
                }
            }
            Ok(())
        })
        .collect();
    let sagas: Vec<Saga> = batch.sagas.into_values().collect();
    let saved: Vec<Saga> = sagas.iter().map(Saga::saved).collect();
    let pending = Saga::save_all(sagas, &mut tx).await?;
    tx.commit().await?;
    for saga in saved {
        core.kept.keep(saga);
    }
    core.dispatcher.dispatch(pending).await;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_of_commands_outside_any_saga_are_recognised() {
        assert!(super::outside_any_saga("signup:0f0e1d2c"));
        assert!(!super::outside_any_saga("6c616e64-6c6f-7264-0000-000000000001"));
        assert!(!super::outside_any_saga("not-a-uuid"));
    }

    use std::time::Duration;

    use landlord_runtime::{Broker, Publisher};
    use landlord_testkit::{NatsServer, Postgres, unique_namespace};

    use super::*;
    use crate::intake::{self, Intake};
    use landlord_control_plane::{Plans, outbox};

    fn request(key: &str) -> pb::TenantRequested {
        pb::TenantRequested {
            idempotency_id: key.to_owned(),
            key: key.to_owned(),
            display_name: key.to_owned(),
            plan: "standard".into(),
            admin: Some(pb::AdminContact { email: format!("admin@{key}.test"), ..Default::default() }),
            ..Default::default()
        }
    }

    fn item(
        saga_id: Uuid,
        msg_id: &str,
        step: &str,
        command_id: &str,
    ) -> (Item, oneshot::Receiver<Result<(), HandlerError>>) {
        let (reply, answer) = oneshot::channel();
        let result = pb::StepResult {
            saga_id: saga_id.to_string(),
            step: step.to_owned(),
            command_id: command_id.to_owned(),
            outcome: Some(pb::step_result::Outcome::Ok(pb::StepOk::default())),
            ..Default::default()
        };
        (Item { saga_id, msg_id: msg_id.to_owned(), result, trace: None, reply }, answer)
    }

    async fn core() -> anyhow::Result<(Core, sqlx::PgPool)> {
        let nats = NatsServer::shared().await;
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let pool = sqlx::PgPool::connect(&database.url).await?;
        landlord_control_plane::migrator().run(&pool).await?;
        let namespace = unique_namespace();
        let broker = Broker::connect(&nats.url(), "test", namespace.clone()).await?;
        let (dispatcher, _published) = outbox::Dispatcher::new(Publisher::new(&broker, "test"));
        let plans = Plans::load(&landlord_testkit::workspace_root().join("deploy/plans.toml").display().to_string())?;
        let kept_pool = kept_pool(&pool);
        Ok((Core { pool: pool.clone(), namespace, plans, dispatcher, kept: Kept::default(), kept_pool }, pool))
    }

    async fn start(core: &Core, key: &str) -> anyhow::Result<Uuid> {
        let mut tx = core.pool.begin().await?;
        let outcome = intake::apply(&mut tx, &core.namespace, &core.plans, &request(key), key).await?.outcome;
        tx.commit().await?;
        let Intake::Accepted { saga_id, .. } = outcome else { anyhow::bail!("{key} not accepted: {outcome:?}") };
        Ok(saga_id)
    }

    /// The first running step of `saga` (several run at once: the plan is
    /// a graph) and its command id.
    async fn running(pool: &sqlx::PgPool, saga: Uuid) -> anyhow::Result<(String, String)> {
        Ok(sqlx::query_as(
            "SELECT name, command_id FROM saga_steps WHERE saga_id = $1 AND state = 'running' ORDER BY position LIMIT 1",
        )
            .bind(saga)
            .fetch_one(pool)
            .await?)
    }

    async fn version(pool: &sqlx::PgPool, saga: Uuid) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT version FROM sagas WHERE id = $1").bind(saga).fetch_one(pool).await?)
    }

    /// Applies `items` as one batch; the outcome of each.
    async fn apply_all(
        core: &Core,
        items: Vec<(Item, oneshot::Receiver<Result<(), HandlerError>>)>,
    ) -> anyhow::Result<Vec<Result<(), HandlerError>>> {
        let (items, answers): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        apply(core, items).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await?);
        }
        Ok(outcomes)
    }

    async fn states(pool: &sqlx::PgPool, saga: Uuid) -> anyhow::Result<Vec<(String, i32)>> {
        Ok(sqlx::query_as("SELECT state, attempts FROM saga_steps WHERE saga_id = $1 ORDER BY position LIMIT 3")
            .bind(saga)
            .fetch_all(pool)
            .await?)
    }

    /// A saga saved by this orchestrator is kept, and its next result is
    /// written by the one conditional statement; a kept saga whose version
    /// moved meanwhile (another replica, the timer) and a repeated message
    /// go through the locking path, each result applied exactly once.
    #[tokio::test]
    async fn a_kept_saga_is_written_in_one_statement_unless_its_version_moved() -> anyhow::Result<()> {
        let (core, pool) = core().await?;
        let (a, b) = (start(&core, "kept-a").await?, start(&core, "kept-b").await?);
        let mut first = Vec::new();
        for (saga, msg) in [(a, "a-1"), (b, "b-1")] {
            let (step, command) = running(&pool, saga).await?;
            first.push(item(saga, msg, &step, &command));
        }
        assert!(apply_all(&core, first).await?.iter().all(Result::is_ok));
        let kept_version = |saga| core.kept.0.lock().unwrap().get(&saga).map(|(s, _)| s.version);
        assert_eq!(kept_version(a), Some(version(&pool, a).await?), "saved by the locking path, kept");
        // Something else moves `b` on after this orchestrator kept it.
        sqlx::query("UPDATE sagas SET version = version + 1 WHERE id = $1").bind(b).execute(&pool).await?;
        let (a_before, b_before) = (version(&pool, a).await?, version(&pool, b).await?);

        let (a_step, a_cmd) = running(&pool, a).await?;
        let (b_step, b_cmd) = running(&pool, b).await?;
        let outcomes = apply_all(&core, vec![item(a, "a-2", &a_step, &a_cmd), item(b, "b-2", &b_step, &b_cmd)]).await?;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        let moved = vec![("succeeded".to_owned(), 1), ("succeeded".to_owned(), 1), ("running".to_owned(), 1)];
        assert_eq!(states(&pool, a).await?, moved);
        assert_eq!(states(&pool, b).await?, moved, "the stale kept copy wrote nothing; the locking path applied it");
        assert_eq!(version(&pool, a).await?, a_before + 1);
        assert_eq!(version(&pool, b).await?, b_before + 1);
        assert_eq!(kept_version(a), Some(a_before + 1));
        assert_eq!(kept_version(b), Some(b_before + 1));

        // The same message again: the kept path finds it in the inbox.
        let outcomes = apply_all(&core, vec![item(a, "a-2", &a_step, &a_cmd)]).await?;
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        assert_eq!(states(&pool, a).await?, moved, "applied once");
        let inbox: Vec<String> = sqlx::query_scalar("SELECT msg_id FROM inbox WHERE msg_id LIKE '_-_' ORDER BY msg_id")
            .fetch_all(&pool)
            .await?;
        assert_eq!(inbox, ["a-1", "a-2", "b-1", "b-2"]);
        Ok(())
    }

    /// Intake keeps the saga it started as saved — as loading it would
    /// give it — so its first result is written by the one statement: it
    /// goes through while another transaction holds the tenant row, which
    /// the locking path would wait for.
    #[tokio::test]
    async fn intake_keeps_the_saga_it_started_and_its_first_result_needs_no_lock() -> anyhow::Result<()> {
        use anyhow::Context as _;
        let (core, pool) = core().await?;
        let mut tx = core.pool.begin().await?;
        let applied = intake::apply(&mut tx, &core.namespace, &core.plans, &request("kept-new"), "kept-new").await?;
        tx.commit().await?;
        let started = applied.started.context("intake started a saga")?;
        let saga = started.saga.id;
        let mut tx = core.pool.begin().await?;
        let loaded = Saga::load(&mut tx, &core.namespace, saga, false).await?.context("the saga is stored")?;
        tx.rollback().await?;
        assert_eq!(started.saga, loaded.saga);
        assert_eq!((started.version, loaded.version), (1, 1));
        assert_eq!(format!("{:?}", started.tenant), format!("{:?}", loaded.tenant));
        let steps = |s: &Saga| {
            s.steps
                .iter()
                .map(|st| {
                    let at = |t: Option<time::OffsetDateTime>| t.map(|t| t.unix_timestamp_nanos() / 1000);
                    let spec = (st.position, st.name.clone(), st.service.clone(), st.action.clone(), st.after.clone());
                    let policy =
                        (st.compensation.clone(), st.fatal, st.timeout_ms, st.max_attempts, st.backoff_ms.clone());
                    let state = (st.state, st.attempts, st.command_id.clone(), at(st.deadline), at(st.started_at));
                    (spec, policy, st.params.0.clone(), state)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(steps(&started), steps(&loaded));
        core.kept.keep(started);

        let mut holder = pool.begin().await?;
        sqlx::query("SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(loaded.tenant.id)
            .execute(&mut *holder)
            .await?;
        let (step, command) = running(&pool, saga).await?;
        let outcomes =
            tokio::time::timeout(Duration::from_secs(10), apply_all(&core, vec![item(saga, "new-1", &step, &command)]))
                .await
                .context("the first result waited for the tenant's lock: it took the locking path")??;
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        holder.rollback().await?;
        assert_eq!(states(&pool, saga).await?[..2], [("succeeded".to_owned(), 1), ("running".to_owned(), 1)]);
        assert_eq!(version(&pool, saga).await?, 2);
        Ok(())
    }

    /// One transaction applies results for several sagas: each saga moves
    /// one step, a message repeated within the batch or applied before
    /// changes nothing, a result for an unknown saga is refused alone.
    #[tokio::test]
    async fn a_batch_applies_each_fresh_result_once_and_refuses_only_the_unknown_saga() -> anyhow::Result<()> {
        let (core, pool) = core().await?;
        let mut sagas = Vec::new();
        for key in ["batch-a", "batch-b", "batch-c"] {
            let saga_id = start(&core, key).await?;
            let (step, command_id) = running(&pool, saga_id).await?;
            sagas.push((saga_id, step, command_id));
        }
        let [(a, a_step, a_cmd), (b, b_step, b_cmd), (c, c_step, c_cmd)] =
            <[_; 3]>::try_from(sagas).map_err(|_| anyhow::anyhow!("three sagas"))?;
        // `c`'s result was applied before this batch.
        sqlx::query("INSERT INTO inbox (msg_id) VALUES ('m-c')").execute(&pool).await?;
        let unknown = Uuid::new_v4();
        let (items, answers): (Vec<_>, Vec<_>) = [
            item(a, "m-a", &a_step, &a_cmd),
            item(b, "m-b", &b_step, &b_cmd),
            item(a, "m-a", &a_step, &a_cmd),
            item(unknown, "m-x", "idp-realm", "nothing"),
            item(c, "m-c", &c_step, &c_cmd),
        ]
        .into_iter()
        .unzip();
        apply(&core, items).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await?);
        }
        assert!(
            outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[2].is_ok() && outcomes[4].is_ok(),
            "{outcomes:?}"
        );
        let refused = outcomes[3].as_ref().err().map(ToString::to_string).unwrap_or_default();
        assert!(refused.contains(&format!("no saga {unknown}")), "{refused}");

        let progress = |saga: Uuid| {
            let pool = pool.clone();
            async move {
                sqlx::query_as::<_, (String, i32)>(
                    "SELECT state, attempts FROM saga_steps WHERE saga_id = $1 ORDER BY position LIMIT 2",
                )
                .bind(saga)
                .fetch_all(&pool)
                .await
            }
        };
        let moved = vec![("succeeded".to_owned(), 1), ("running".to_owned(), 1)];
        assert_eq!(progress(a).await?, moved, "applied once although it came twice");
        assert_eq!(progress(b).await?, moved);
        assert_eq!(progress(c).await?, vec![("running".to_owned(), 1), ("pending".to_owned(), 0)], "applied before");
        let inbox: Vec<String> =
            sqlx::query_scalar("SELECT msg_id FROM inbox ORDER BY msg_id").fetch_all(&pool).await?;
        assert_eq!(inbox, ["m-a", "m-b", "m-c", "m-x"]);
        Ok(())
    }
}
