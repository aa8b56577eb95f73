//! `just bench-saga`: sagas of the shipped six-step pipeline against
//! instant in-process workers, on a real nats-server and a durable
//! PostgreSQL (fsync on). Reports sagas/s with many sagas in flight, saga
//! latency one at a time, and the orchestration overhead per step — from
//! the step's command being decided to its result being applied, with a
//! worker that does nothing — next to the floor: the same six command →
//! result round trips over the bus with no orchestrator at all. Measured
//! after 200 warm-up sagas and an ANALYZE, as in a control plane that has
//! been running (autovacuum keeps its tables analyzed).
//! 200 sagas one at a time by default, 1,000 with `BENCH_FULL=1`
//! (`BENCH_SAGAS` to choose). Writes bench/results/saga.{json,md}.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt;
use landlord_contract::{EventKind, StreamKind, TenantKey, pb};
use landlord_control_plane::Plans;
use landlord_orchestrator::{Timing, attach};
use landlord_runtime::{Config, DeliveryInfo, Env, Envelope, Publisher, Service, StepFailure, StepService, StepWorker};
use landlord_testkit::bench::{Run, load_average, machine, percentile, write_results};
use landlord_testkit::{NatsServer, Postgres, unique_namespace};
use sqlx::PgPool;

const THROUGHPUT_SAGAS: usize = 1_000;
/// Sagas one at a time: the default run, and `BENCH_FULL=1`'s.
const SERIAL_SAGAS: (usize, usize) = (200, 1000);
const WARM_UP_SAGAS: usize = 200;
const STEPS: usize = 6;
/// WAL written and checkpointed before measuring (see `Postgres::warm_wal`).
const WARM_WAL_MB: u32 = 256;

struct Instantly;

impl StepService for Instantly {
    type Action = String;

    async fn execute(
        &self,
        _: String,
        _: &pb::TenantSpec,
        _: &pb::StepCommand,
        _: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        Ok(pb::StepOk::default())
    }
}

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

struct Bench {
    publisher: Publisher,
    client: async_nats::Client,
    namespace: landlord_contract::Namespace,
    pool: PgPool,
}

impl Bench {
    async fn publish(&self, key: &str) -> Result<()> {
        let tenant = TenantKey::parse(key)?;
        let subject = self.namespace.event_subject(&tenant, EventKind::Requested);
        self.publisher.publish(subject, &request(key), &Envelope::new(format!("req-{key}"))).await?;
        Ok(())
    }

    /// Step durations (command decided → result applied) of `keys`, in ms.
    async fn step_durations(&self, prefix: &str) -> Result<Vec<f64>> {
        let rows: Vec<(f64,)> = sqlx::query_as(
            "SELECT extract(epoch FROM st.finished_at - st.started_at)::float8 * 1000
             FROM saga_steps st JOIN sagas s ON s.id = st.saga_id JOIN tenants t ON t.id = s.tenant_id
             WHERE t.key LIKE $1 || '%'",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        let mut v: Vec<f64> = rows.into_iter().map(|(d,)| d).collect();
        v.sort_by(f64::total_cmp);
        Ok(v)
    }
}

/// The floor: six command → result round trips over the bus per saga, with
/// the same instant workers and no orchestrator or database.
async fn floor(server: &NatsServer, sagas: usize) -> Result<(Vec<f64>, f64)> {
    let namespace = unique_namespace();
    let env =
        Env::from_pairs([("LANDLORD_NATS_URL", server.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let mut workers = Service::build(Config::from("bench-workers", &env)?).await?;
    let subjects = vec![namespace.service_commands("floor")];
    workers
        .consume(StreamKind::Commands, "floor", subjects, StepWorker::new(Instantly, workers.publisher.clone()))
        .await?;
    let stop = workers.shutdown_token();
    tokio::spawn(workers.run());
    let client = async_nats::connect(server.url()).await?;
    let publisher =
        Publisher::new(&landlord_runtime::Broker::connect(&server.url(), "floor", namespace.clone()).await?, "floor");
    let mut results = client.subscribe(format!("{}.v1.result.floor.>", namespace.root())).await?;
    let mut per_step = Vec::new();
    let started = Instant::now();
    for saga in 0..sagas {
        for step in 0..STEPS {
            let t = Instant::now();
            let command =
                pb::StepCommand { saga_id: format!("floor-{saga}"), step: format!("s{step}"), ..Default::default() };
            publisher
                .publish(
                    namespace.command_subject("floor", "run"),
                    &command,
                    &Envelope::new(format!("f-{saga}-{step}")),
                )
                .await?;
            tokio::time::timeout(Duration::from_secs(10), results.next()).await?.context("floor result")?;
            per_step.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let sagas_per_s = sagas as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    per_step.sort_by(f64::total_cmp);
    Ok((per_step, sagas_per_s))
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let serial_sagas = run.size("BENCH_SAGAS", SERIAL_SAGAS.0, SERIAL_SAGAS.1);
    let load_before = load_average();
    let server = NatsServer::start().await?;
    let postgres = tokio::task::spawn_blocking(|| Postgres::start_with(true)).await??;
    // Steady state: WAL segments recycled, as on a server that has run.
    let wal_ahead = postgres.warm_wal(WARM_WAL_MB).await?;
    let database = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let env = Env::from_pairs([
        ("LANDLORD_NATS_URL", server.url()),
        ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
        ("LANDLORD_DATABASE_URL", database.url.clone()),
        ("LANDLORD_MAX_IN_FLIGHT", std::env::var("LANDLORD_MAX_IN_FLIGHT").unwrap_or_else(|_| "64".into())),
        ("LANDLORD_DATABASE_POOL_SIZE", std::env::var("LANDLORD_DATABASE_POOL_SIZE").unwrap_or_else(|_| "16".into())),
    ]);
    let plans = Plans::load(&landlord_testkit::workspace_root().join("deploy/plans.toml").display().to_string())?;
    let mut orchestrator = Service::build(Config::from("orchestrator", &env)?).await?;
    attach(&mut orchestrator, plans, Timing::default()).await?;
    let pool = orchestrator.database.clone().context("pool")?;
    let stop_orchestrator = orchestrator.shutdown_token();
    tokio::spawn(orchestrator.run());
    let mut workers = Service::build(Config::from("bench-workers", &env)?).await?;
    for service in ["idp", "database", "storage", "notification"] {
        let subjects = vec![namespace.service_commands(service)];
        let worker = StepWorker::new(Instantly, workers.publisher.clone());
        workers.consume(StreamKind::Commands, service, subjects, worker).await?;
    }
    let stop_workers = workers.shutdown_token();
    tokio::spawn(workers.run());
    let client = async_nats::connect(server.url()).await?;
    let broker = landlord_runtime::Broker::connect(&server.url(), "bench", namespace.clone()).await?;
    let bench = Bench { publisher: Publisher::new(&broker, "bench"), client, namespace: namespace.clone(), pool };
    let mut activated = bench.client.subscribe(namespace.event_filter(None, Some(EventKind::Activated))).await?;

    // Warm up, then let PostgreSQL see the tables as they are, as
    // autovacuum keeps them analyzed in any running control plane: a table
    // it still believes empty is planned with sequential scans.
    for i in 0..WARM_UP_SAGAS {
        bench.publish(&format!("warm-{i}")).await?;
    }
    for _ in 0..WARM_UP_SAGAS {
        tokio::time::timeout(Duration::from_secs(60), activated.next()).await?.context("activated")?;
    }
    sqlx::query("ANALYZE").execute(&bench.pool).await?;

    // One at a time: saga latency and per-step overhead without queueing.
    let mut latencies = Vec::new();
    for i in 0..serial_sagas {
        let t = Instant::now();
        bench.publish(&format!("serial-{i}")).await?;
        tokio::time::timeout(Duration::from_secs(30), activated.next()).await?.context("activated")?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let serial_steps = bench.step_durations("serial-").await?;

    // Many in flight: throughput.
    let started = Instant::now();
    for i in 0..THROUGHPUT_SAGAS {
        bench.publish(&format!("load-{i}")).await?;
    }
    for _ in 0..THROUGHPUT_SAGAS {
        tokio::time::timeout(Duration::from_secs(60), activated.next()).await?.context("activated")?;
    }
    let elapsed = started.elapsed();
    let sagas_per_s = THROUGHPUT_SAGAS as f64 / elapsed.as_secs_f64();
    let load_steps = bench.step_durations("load-").await?;
    stop_orchestrator.cancel();
    stop_workers.cancel();

    let (floor_steps, floor_sagas_per_s) = floor(&server, serial_sagas).await?;
    let load_after = load_average();

    let report = serde_json::json!({
        "benchmark": "saga",
        "pipeline": "deploy/plans.toml, plan standard: 6 steps, instant workers",
        "postgres": format!("durable (fsync on, synchronous_commit on); {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit"),
        "nats": "default fsync policy",
        "goal": "at least 300 six-step sagas/s; orchestration overhead per step p99 under 5 ms",
        "one_at_a_time": {
            "sagas": serial_sagas,
            "saga_latency_ms": { "p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99) },
            "step_overhead_ms": { "p50": percentile(&serial_steps, 0.5), "p99": percentile(&serial_steps, 0.99) },
            "floor_step_round_trip_ms": { "p50": percentile(&floor_steps, 0.5), "p99": percentile(&floor_steps, 0.99) },
            "floor_sagas_per_s": floor_sagas_per_s,
        },
        "many_in_flight": {
            "sagas": THROUGHPUT_SAGAS,
            "sagas_per_s": sagas_per_s,
            "step_overhead_ms": { "p50": percentile(&load_steps, 0.5), "p99": percentile(&load_steps, 0.99) },
        },
        "machine": machine(),
        "load_average": { "before": load_before, "after": load_after },
        "versions": {
            "nats_server": String::from_utf8_lossy(&std::process::Command::new(landlord_testkit::nats_server_binary()?).arg("--version").output()?.stdout).trim().to_owned(),
            "postgres": String::from_utf8_lossy(&std::process::Command::new(landlord_testkit::pg_bin_dir()?.join("postgres")).arg("--version").output()?.stdout).trim().to_owned(),
            "rustc": String::from_utf8_lossy(&std::process::Command::new("rustc").arg("--version").output()?.stdout).trim().to_owned(),
        },
    });
    let md = format!(
        "# bench-saga\n\nThe shipped six-step pipeline against instant in-process workers; NATS with its default fsync policy, PostgreSQL durable (fsync on; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit), measured after {WARM_UP_SAGAS} warm-up sagas and an ANALYZE. Step overhead = from the step's command being decided to its result being applied. Floor = the same six command → result round trips over the bus, no orchestrator, no database.\n\n| measure | Landlord | floor | goal |\n|---|---|---|---|\n| sagas/s, {THROUGHPUT_SAGAS} in flight | {sagas_per_s:.0} | — | ≥ 300 |\n| sagas/s, one at a time | {:.0} | {floor_sagas_per_s:.0} | |\n| saga latency p50 / p99 ms, {serial_sagas} one at a time | {:.2} / {:.2} | | |\n| step overhead p50 / p99 ms, one at a time | {:.2} / {:.2} | {:.2} / {:.2} | p99 < 5 |\n| step overhead p50 / p99 ms, {THROUGHPUT_SAGAS} in flight | {:.2} / {:.2} | | |\n\nLoad average (1/5/15 min) before: {load_before}; after: {load_after}. Machine: {}. Versions: {}\n",
        1000.0 / percentile(&latencies, 0.5),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&serial_steps, 0.5),
        percentile(&serial_steps, 0.99),
        percentile(&floor_steps, 0.5),
        percentile(&floor_steps, 0.99),
        percentile(&load_steps, 0.5),
        percentile(&load_steps, 0.99),
        report["machine"],
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("saga", report, &md, &run)
}
