//! The orchestrator's business metrics on `/metrics` (docs/observability.md):
//! sagas started and finished per operation, how long they took, steps
//! retried — counted as transitions are saved — and tenants by status and
//! tier, sagas in progress and stuck sagas — read from the control plane
//! every [`Settings::refresh`].
//!
//! The counters count what this process saved: a dashboard sums them over
//! the replicas. The gauges are the control plane's state, the same from
//! every replica: a dashboard takes their `max`. Read from the database
//! rather than counted on each transition, they are right from the first
//! refresh after a restart, whoever moved the tenants meanwhile (the
//! gateway's purge of a tombstone, an operator's SQL, another replica).
//!
//! The counters are process-wide (one orchestrator per process in
//! production; tests that run several in one process see their sum), so
//! that the save path — one function for every way a saga moves — can
//! count without each caller passing them along.

use std::sync::LazyLock;
use std::time::Duration;

use landlord_control_plane::{Operation, SagaState, TenantStatus};
use landlord_runtime::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The tiers a tenant can be on (`tenants.tier`).
const TIERS: [&str; 3] = ["pooled", "bridge", "silo"];

/// Why a saga counts as stuck, in the order they are looked for.
const STUCK_REASONS: [&str; 3] = ["compensation_stuck", "overdue_step", "too_long"];

/// How far past its deadline a step must be to count as overdue: the timer
/// looks every 100 ms, so a minute means it is not getting to it.
const OVERDUE_AFTER: Duration = Duration::from_secs(60);

/// How the gauges are read.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the gauges are read from the control plane
    /// (`LANDLORD_METRICS_INTERVAL`).
    pub refresh: Duration,
    /// A saga at work for longer than this counts as stuck
    /// (`LANDLORD_SAGA_STUCK_AFTER`).
    pub stuck_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { refresh: Duration::from_secs(15), stuck_after: Duration::from_secs(30 * 60) }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    operation: String,
    /// `succeeded`, `failed` or `cancelled`.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    operation: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    status: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    operation: String,
    /// `running` or `compensating`.
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StuckLabels {
    operation: String,
    /// One of [`STUCK_REASONS`].
    reason: String,
}

type DurationFamily = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 10 ms to 11 min, doubling: a saga of quick steps to a slow export.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// Counted as transitions are saved.
#[derive(Debug)]
struct Counted {
    started: Family<OperationLabel, Counter>,
    finished: Family<OutcomeLabels, Counter>,
    duration: DurationFamily,
    retried: Family<StepLabels, Counter>,
}

static COUNTED: LazyLock<Counted> = LazyLock::new(|| {
    let counted = Counted {
        started: Family::default(),
        finished: Family::default(),
        duration: Family::new_with_constructor(duration_histogram),
        retried: Family::default(),
    };
    // Every operation's counters exist from the start, at zero: a rate or
    // a ratio over them is defined before the first saga.
    for operation in Operation::ALL {
        let operation = operation.as_str().to_owned();
        drop(counted.started.get_or_create(&OperationLabel { operation: operation.clone() }));
        for outcome in [SagaState::Succeeded, SagaState::Failed, SagaState::Cancelled] {
            let outcome = outcome.as_str().to_owned();
            drop(counted.finished.get_or_create(&OutcomeLabels { operation: operation.clone(), outcome }));
        }
    }
    counted
});

/// What one saved transition of a saga did, for the counters
/// ([`crate::saga::Saga::observed`]).
#[derive(Debug)]
pub(crate) struct Observed<'a> {
    pub(crate) operation: Operation,
    /// The saga started in this transition.
    pub(crate) started: bool,
    /// Forward steps whose failed attempt will be tried again.
    pub(crate) retried: &'a [String],
    /// The saga ended in this transition: how, and how long after its
    /// first step started.
    pub(crate) finished: Option<(SagaState, Option<Duration>)>,
}

/// Counts a transition that was saved.
pub(crate) fn record(observed: &Observed<'_>) {
    let counted = &*COUNTED;
    let operation = observed.operation.as_str();
    if observed.started {
        counted.started.get_or_create(&OperationLabel { operation: operation.to_owned() }).inc();
    }
    for step in observed.retried {
        counted.retried.get_or_create(&StepLabels { operation: operation.to_owned(), step: step.clone() }).inc();
    }
    if let Some((state, took)) = observed.finished {
        let labels = OutcomeLabels { operation: operation.to_owned(), outcome: state.as_str().to_owned() };
        counted.finished.get_or_create(&labels).inc();
        if let Some(took) = took {
            counted.duration.get_or_create(&labels).observe(took.as_secs_f64());
        }
    }
}

/// The gauges read from the control plane.
#[derive(Debug, Clone, Default)]
struct Read {
    tenants: Family<TenantLabels, Gauge>,
    in_progress: Family<StateLabels, Gauge>,
    stuck: Family<StuckLabels, Gauge>,
}

/// Registers the orchestrator's metrics with `metrics` and starts the task
/// that reads the gauges; it stops with `shutdown`.
pub(crate) fn attach(
    metrics: &Metrics,
    pool: PgPool,
    settings: Settings,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let counted = &*COUNTED;
    metrics.register("sagas_started", "Sagas started, by operation", counted.started.clone());
    metrics.register(
        "sagas_finished",
        "Sagas ended, by operation and outcome (succeeded, failed: undone after a failure, cancelled)",
        counted.finished.clone(),
    );
    metrics.register(
        "saga_duration_seconds",
        "Time from a saga's first step starting to its end, by operation and outcome",
        counted.duration.clone(),
    );
    metrics.register(
        "saga_steps_retried",
        "Failed attempts of a step that will be tried again, by operation and step",
        counted.retried.clone(),
    );
    let read = Read::default();
    metrics.register(
        "tenants",
        "Tenants by status and tier, read from the control plane (every replica reports the same: take the max)",
        read.tenants.clone(),
    );
    metrics.register(
        "sagas_in_progress",
        "Sagas running or compensating, by operation, read from the control plane",
        read.in_progress.clone(),
    );
    metrics.register(
        "sagas_stuck",
        "Sagas at work that need a look, by operation and reason: compensation_stuck (a compensation waits for an \
         operator), overdue_step (a step's deadline passed over a minute ago), too_long (at work longer than \
         LANDLORD_SAGA_STUCK_AFTER)",
        read.stuck.clone(),
    );
    refresher(read, pool, settings, shutdown)
}

async fn refresher(read: Read, pool: PgPool, settings: Settings, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(settings.refresh);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = refresh(&read, &pool, &settings).await {
            tracing::warn!(%error, "reading the metrics' gauges from the control plane failed; trying again");
        }
    }
}

/// Reads the gauges: every series that may exist is set, to zero when
/// the query found none (a status no tenant is in any more must not keep
/// its last count).
async fn refresh(read: &Read, pool: &PgPool, settings: &Settings) -> sqlx::Result<()> {
    let tenants: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT status, tier, count(*) FROM tenants GROUP BY status, tier").fetch_all(pool).await?;
    let at_work: Vec<SagaState> = SagaState::ALL.iter().copied().filter(|s| s.is_at_work()).collect();
    let sagas: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT s.operation, s.state,
                CASE WHEN EXISTS (SELECT 1 FROM saga_steps st WHERE st.saga_id = s.id AND st.state = 'stuck')
                       THEN 'compensation_stuck'
                     WHEN EXISTS (SELECT 1 FROM saga_steps st WHERE st.saga_id = s.id
                                  AND st.deadline < now() - make_interval(secs => $2))
                       THEN 'overdue_step'
                     WHEN s.created_at < now() - make_interval(secs => $3) THEN 'too_long'
                END,
                count(*)
         FROM sagas s WHERE s.state = ANY($1)
         GROUP BY 1, 2, 3",
    )
    .bind(&at_work)
    .bind(OVERDUE_AFTER.as_secs_f64())
    .bind(settings.stuck_after.as_secs_f64())
    .fetch_all(pool)
    .await?;

    let mut counts = std::collections::HashMap::new();
    for (status, tier, n) in tenants {
        counts.insert(TenantLabels { status, tier }, n);
    }
    for status in TenantStatus::ALL {
        for tier in TIERS {
            let labels = TenantLabels { status: status.as_str().to_owned(), tier: tier.to_owned() };
            counts.entry(labels).or_insert(0);
        }
    }
    for (labels, n) in counts {
        read.tenants.get_or_create(&labels).set(n);
    }

    let mut in_progress = std::collections::HashMap::new();
    let mut stuck = std::collections::HashMap::new();
    for operation in Operation::ALL {
        let operation = operation.as_str().to_owned();
        for state in &at_work {
            in_progress.insert(StateLabels { operation: operation.clone(), state: state.as_str().to_owned() }, 0);
        }
        for reason in STUCK_REASONS {
            stuck.insert(StuckLabels { operation: operation.clone(), reason: reason.to_owned() }, 0);
        }
    }
    for (operation, state, reason, n) in sagas {
        *in_progress.entry(StateLabels { operation: operation.clone(), state }).or_insert(0) += n;
        if let Some(reason) = reason {
            *stuck.entry(StuckLabels { operation, reason }).or_insert(0) += n;
        }
    }
    for (labels, n) in in_progress {
        read.in_progress.get_or_create(&labels).set(n);
    }
    for (labels, n) in stuck {
        read.stuck.get_or_create(&labels).set(n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use landlord_contract::pb;
    use landlord_control_plane::Plans;
    use landlord_testkit::{Postgres, unique_namespace};

    use super::*;
    use crate::intake::{self, Intake};

    fn value<L: EncodeLabelSet + Clone + std::hash::Hash + Eq>(family: &Family<L, Gauge>, labels: L) -> i64 {
        family.get_or_create(&labels).get()
    }

    fn stuck(read: &Read, reason: &str) -> i64 {
        value(&read.stuck, StuckLabels { operation: "provision".into(), reason: reason.into() })
    }

    /// The gauges follow the control plane: a saga at work, then too long,
    /// with an overdue step, with a stuck compensation; tenants by status.
    #[tokio::test]
    async fn the_gauges_are_read_from_the_control_plane() -> anyhow::Result<()> {
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let pool = PgPool::connect(&database.url).await?;
        landlord_control_plane::migrator().run(&pool).await?;
        let plans = Plans::load(&landlord_testkit::workspace_root().join("deploy/plans.toml").display().to_string())?;
        let request = pb::TenantRequested {
            idempotency_id: "gauges".into(),
            key: "gauges".into(),
            display_name: "Gauges".into(),
            plan: "standard".into(),
            admin: Some(pb::AdminContact { email: "admin@gauges.test".into(), ..Default::default() }),
            ..Default::default()
        };
        let mut tx = pool.begin().await?;
        let outcome = intake::apply(&mut tx, &unique_namespace(), &plans, &request, "gauges").await?.outcome;
        tx.commit().await?;
        let Intake::Accepted { saga_id, .. } = outcome else { anyhow::bail!("not accepted: {outcome:?}") };
        let tier: String = sqlx::query_scalar("SELECT tier FROM tenants").fetch_one(&pool).await?;

        let read = Read::default();
        let settings = Settings { refresh: Duration::from_secs(1), stuck_after: Duration::from_secs(3600) };
        refresh(&read, &pool, &settings).await?;
        let tenants = |status: &str| value(&read.tenants, TenantLabels { status: status.into(), tier: tier.clone() });
        assert_eq!(tenants("PROVISIONING"), 1);
        assert_eq!(tenants("ACTIVE"), 0, "every status and tier is reported, at zero when empty");
        let running = StateLabels { operation: "provision".into(), state: "running".into() };
        assert_eq!(value(&read.in_progress, running.clone()), 1);
        assert_eq!(STUCK_REASONS.map(|reason| stuck(&read, reason)), [0, 0, 0]);

        sqlx::query("UPDATE sagas SET created_at = now() - interval '2 hours'").execute(&pool).await?;
        refresh(&read, &pool, &settings).await?;
        assert_eq!(STUCK_REASONS.map(|reason| stuck(&read, reason)), [0, 0, 1], "at work for longer than an hour");

        let overdue =
            "UPDATE saga_steps SET deadline = now() - interval '5 minutes' WHERE saga_id = $1 AND state = 'running'";
        let moved = sqlx::query(overdue).bind(saga_id).execute(&pool).await?.rows_affected();
        assert!(moved >= 1, "a step runs");
        refresh(&read, &pool, &settings).await?;
        assert_eq!(STUCK_REASONS.map(|reason| stuck(&read, reason)), [0, 1, 0], "counted once, for its first reason");

        sqlx::query("UPDATE saga_steps SET state = 'stuck', deadline = NULL WHERE saga_id = $1 AND position = 0")
            .bind(saga_id)
            .execute(&pool)
            .await?;
        refresh(&read, &pool, &settings).await?;
        assert_eq!(stuck(&read, "compensation_stuck"), 1);

        sqlx::query("UPDATE sagas SET state = 'failed'").execute(&pool).await?;
        sqlx::query("UPDATE tenants SET status = 'FAILED'").execute(&pool).await?;
        refresh(&read, &pool, &settings).await?;
        assert_eq!((tenants("PROVISIONING"), tenants("FAILED")), (0, 1), "a status left is set back to zero");
        assert_eq!(value(&read.in_progress, running), 0);
        assert_eq!(STUCK_REASONS.map(|reason| stuck(&read, reason)), [0, 0, 0]);
        Ok(())
    }
}
