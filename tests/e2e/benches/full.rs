//! `just bench`: bridge-tier tenants through the whole system — the five
//! service binaries as processes, NATS, a durable PostgreSQL, s3s-fs,
//! aiosmtpd and the Keycloak contract double — at 1, 16 and 64 in flight,
//! next to two floors: the same backend operations (the workers' own step
//! code for realm, client, admin user, database, bucket and welcome mail)
//! run directly, without the bus or the orchestrator, at the same
//! concurrency — one after another per tenant (sequential), and in the
//! plan's graph (realm → client → admin user beside the database and the
//! bucket, the mail after all). The three take turns in rounds ([`order`]).
//!
//! Measured after 100 warm-up tenants and an ANALYZE of the control plane.
//! Bounded by default (a few minutes; [`plan`]), `BENCH_FULL=1` for the
//! long run (1,000 tenants per level and side); `BENCH_TENANTS` sets the
//! tenants per level, `BENCH_LEVELS` (default 1,16,64) the levels. At one
//! in flight it also shows where the time goes: intake, each step next to
//! the floors' calls of it, the branches, and activation ([`breakdown`]).
//! Writes bench/results/full.{json,md}.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::Stack;
use landlord_runtime::{DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretsKey, StepService};
use landlord_testkit::bench::{Run, command_output, machine, percentile, summary, write_results};
use tokio::sync::{Semaphore, oneshot};

const LEVELS: [usize; 3] = [1, 16, 64];
/// The bridge tier's pipeline (deploy/plans.toml), as the floor calls it.
/// The floors' branches are the first three, the fourth and the fifth;
/// the last runs after all of them.
const STEPS: [(&str, &str); 6] = [
    ("idp", "create_realm"),
    ("idp", "create_client"),
    ("idp", "create_admin_user"),
    ("database", "provision"),
    ("storage", "create_bucket"),
    ("notification", "send_welcome"),
];
const WARM_UP_TENANTS: usize = 100;
/// WAL written and checkpointed before measuring (see `Postgres::warm_wal`).
const WARM_WAL_MB: u32 = 1024;

/// Whether the tenant became ACTIVE, and when its last event arrived.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<(bool, f64)>>>>;

/// Milliseconds since the epoch: comparable with the orchestrator's step
/// timestamps, on the same machine.
fn wall_ms() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// One tenant through the stack: its latency, and the wall-clock times of
/// its publish and of its TenantActivated event.
struct Trip {
    key: String,
    ms: f64,
    published: f64,
    activated: f64,
}

/// Requests tenants through the stack: publishes TenantRequested and waits
/// for the tenant's last event, on one connection for the whole run.
struct Driver {
    publisher: Publisher,
    waiters: Waiters,
    dispatch: tokio::task::JoinHandle<()>,
}

impl Driver {
    async fn connect(stack: &Stack) -> Result<Self> {
        // As the operator: it publishes requests and follows the events
        // stream (a bus user may not subscribe to event subjects plainly).
        let broker = stack.connect("bench").await?;
        let publisher = Publisher::new(&broker, "bench");
        let waiters: Waiters = Arc::default();
        // Only the events that end a request: the bench's own load on the
        // bus should not include a copy of every progress event.
        let ends = [EventKind::Activated, EventKind::ProvisioningFailed, EventKind::Rejected];
        let filters = ends.map(|kind| stack.namespace.event_filter(None, Some(kind))).to_vec();
        let mut finished = landlord_testkit::follow_events(&broker, filters).await?;
        let dispatch = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                while let Some(next) = finished.next().await {
                    let Ok(message) = next else { continue };
                    let mut tokens = message.subject.rsplit('.');
                    let kind = tokens.next().and_then(EventKind::from_name);
                    let key = tokens.next().unwrap_or_default().to_owned();
                    let ok = match kind {
                        Some(EventKind::Activated) => true,
                        Some(EventKind::ProvisioningFailed | EventKind::Rejected) => false,
                        _ => continue,
                    };
                    if let Some(waiter) = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&key) {
                        let _ = waiter.send((ok, wall_ms()));
                    }
                }
            })
        };
        Ok(Self { publisher, waiters, dispatch })
    }

    /// Requests tenants `tenants` of `level`, `in_flight` at a time; each
    /// latency runs from the publish to the TenantActivated event. Returns
    /// the trips and the seconds the whole batch took.
    async fn run(&self, level: usize, tenants: Range<usize>, in_flight: usize) -> Result<(Vec<Trip>, f64)> {
        let gate = Arc::new(Semaphore::new(in_flight));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in tenants {
            let permit = gate.clone().acquire_owned().await?;
            let key = format!("b{level}-{i}");
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), tx);
            let request = pb::TenantRequested {
                idempotency_id: format!("bench-{key}"),
                key: key.clone(),
                display_name: key.clone(),
                plan: "standard".into(),
                admin: Some(pb::AdminContact {
                    email: format!("admin@{key}.test"),
                    first_name: "Ada".into(),
                    last_name: "Lovelace".into(),
                }),
                domains: vec![format!("{key}.example.com")],
                source: "bench".into(),
                ..Default::default()
            };
            let tenant_key = TenantKey::parse(&key)?;
            let (begin, published) = (Instant::now(), wall_ms());
            self.publisher.publish_event(&tenant_key, &request, &Envelope::new(request.idempotency_id.clone())).await?;
            tasks.push(tokio::spawn(async move {
                let ok = tokio::time::timeout(Duration::from_secs(120), rx).await;
                drop(permit);
                match ok {
                    Ok(Ok((true, activated))) => {
                        Ok(Trip { ms: begin.elapsed().as_secs_f64() * 1000.0, key, published, activated })
                    }
                    other => Err(anyhow::anyhow!("tenant {key} did not become ACTIVE: {other:?}")),
                }
            }));
        }
        let mut trips = Vec::with_capacity(tasks.len());
        for task in tasks {
            trips.push(task.await??);
        }
        Ok((trips, started.elapsed().as_secs_f64()))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.dispatch.abort();
    }
}

/// The workers' own step code, in process, called in pipeline order.
struct Direct {
    idp: landlord_idp::Idp,
    database: landlord_database::Provisioner,
    storage: landlord_storage::Storage,
    notifier: landlord_notification::Notifier,
}

impl Direct {
    async fn new(stack: &Stack) -> Result<Self> {
        let env = Env::from_pairs(stack.service_env());
        // Each worker's code on the bus as that worker's user: the secrets
        // and the mail ledger are theirs alone.
        let idp_bus = stack.connect_as("idp", "floor-idp").await?;
        let database_bus = stack.connect_as("database", "floor-database").await?;
        let notification_bus = stack.connect_as("notification", "floor-notification").await?;
        let root = stack.namespace.root();
        let idp_settings = landlord_idp::Settings::from_env(&env)?;
        let secrets = landlord_idp::Idp::open_secrets(&idp_settings, &idp_bus.jetstream, root, 1).await?;
        let notification = landlord_notification::Settings::from_env(&env)?;
        let ledger = landlord_notification::Ledger::open(
            &notification_bus.jetstream,
            root,
            1,
            Duration::from_secs(3600),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = SecretsKey::from_base64(&env.raw("LANDLORD_SECRETS_KEY").context("no key")?)
            .map_err(|e| anyhow::anyhow!(e))?;
        let mail_secrets =
            KvSecrets::open(&notification_bus.jetstream, root, 1, Duration::from_secs(3600), key).await?;
        // As the worker does: a sealed copy of the password for the welcome mail.
        let database = landlord_database::Settings::from_env(&env)?;
        let delivery = landlord_database::open_delivery(&database, &database_bus, 1).await?;
        Ok(Self {
            idp: landlord_idp::Idp::new(idp_settings, secrets)?,
            database: landlord_database::Provisioner::connect(database)?.with_delivery(delivery),
            storage: landlord_storage::Storage::new(landlord_storage::Settings::from_env(&env)?),
            notifier: landlord_notification::Notifier::new(
                notification,
                landlord_notification::Templates::load(None)?,
                ledger,
            )
            .with_secrets(mail_secrets),
        })
    }

    /// One step of one tenant, fed `inputs`: its outputs and milliseconds.
    async fn step(
        &self,
        key: &str,
        spec: &pb::TenantSpec,
        serial: u64,
        i: usize,
        inputs: HashMap<String, String>,
    ) -> Result<(HashMap<String, String>, f64)> {
        let (service, action) = STEPS[i];
        let began = Instant::now();
        let command = pb::StepCommand {
            saga_id: format!("floor-{key}"),
            step: action.into(),
            attempt: 1,
            tenant: Some(spec.clone()),
            inputs,
            ..Default::default()
        };
        // Unique per command: the mail ledger de-duplicates on it.
        let delivery = DeliveryInfo::direct(serial * 8 + u64::try_from(i).unwrap_or(0) + 1);
        let outcome = match service {
            "idp" => self.idp.run(action, &command, &delivery).await,
            "database" => self.database.run(action, &command, &delivery).await,
            "storage" => self.storage.run(action, &command, &delivery).await,
            _ => self.notifier.run(action, &command, &delivery).await,
        };
        let ok = outcome.map_err(|f| anyhow::anyhow!("{key} {service}.{action}: {f}"))?;
        Ok((ok.outputs, began.elapsed().as_secs_f64() * 1000.0))
    }

    /// One tenant's six steps in `shape`: the whole time and each step's
    /// (in [`STEPS`] order), in milliseconds. Sequential: each step fed the
    /// outputs of all before it. Graph: the plan's graph (deploy/plans.toml)
    /// — realm → client → admin user beside the database and beside the
    /// bucket (`tokio::join!`), each branch fed only its own outputs, as the
    /// orchestrator feeds a step those of the steps it is after; the
    /// welcome mail after all three branches, fed everything.
    async fn provision(&self, key: &str, serial: u64, shape: Shape) -> Result<(f64, Vec<f64>)> {
        let spec = pb::TenantSpec {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            key: key.to_owned(),
            display_name: key.to_owned(),
            plan: "standard".into(),
            tier: pb::Tier::Bridge as i32,
            admin: Some(pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{key}.example.com")],
            labels: HashMap::new(),
        };
        let begin = Instant::now();
        let mut steps = vec![0.0; STEPS.len()];
        let mut inputs = HashMap::new();
        match shape {
            Shape::Sequential => {
                for (i, ms) in steps.iter_mut().enumerate() {
                    let (outputs, took) = self.step(key, &spec, serial, i, inputs.clone()).await?;
                    inputs.extend(outputs);
                    *ms = took;
                }
            }
            Shape::Graph => {
                let identity = async {
                    let (mut inputs, mut times) = (HashMap::new(), Vec::new());
                    for i in 0..3 {
                        let (outputs, took) = self.step(key, &spec, serial, i, inputs.clone()).await?;
                        inputs.extend(outputs);
                        times.push(took);
                    }
                    Ok::<_, anyhow::Error>((inputs, times))
                };
                let database = self.step(key, &spec, serial, 3, HashMap::new());
                let storage = self.step(key, &spec, serial, 4, HashMap::new());
                let (identity, database, storage) = tokio::join!(identity, database, storage);
                let ((identity, times), database, storage) = (identity?, database?, storage?);
                steps[..3].copy_from_slice(&times);
                (steps[3], steps[4]) = (database.1, storage.1);
                inputs.extend(identity);
                inputs.extend(database.0);
                inputs.extend(storage.0);
                steps[5] = self.step(key, &spec, serial, 5, inputs).await?.1;
            }
        }
        Ok((begin.elapsed().as_secs_f64() * 1000.0, steps))
    }
}

/// How the floor calls the steps of one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    /// One after another, in pipeline order: today's script.
    Sequential,
    /// The plan's graph, with the same parallelism as the stack.
    Graph,
}

/// Tenants `tenants` of `level` through [`Direct`] in `shape`,
/// `in_flight` at a time: each one's whole time and step times, and the
/// seconds the batch took.
async fn floor(
    direct: &Arc<Direct>,
    level: usize,
    tenants: Range<usize>,
    in_flight: usize,
    shape: Shape,
) -> Result<(Vec<(f64, Vec<f64>)>, f64)> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let (prefix, base) = match shape {
        Shape::Sequential => ("f", 0),
        Shape::Graph => ("g", 500_000),
    };
    for i in tenants {
        let permit = gate.clone().acquire_owned().await?;
        let direct = direct.clone();
        tasks.push(tokio::spawn(async move {
            let serial = u64::try_from(level * 1_000_000 + base + i).unwrap_or(0);
            let latency = direct.provision(&format!("{prefix}{level}-{i}"), serial, shape).await;
            drop(permit);
            latency
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok((latencies, started.elapsed().as_secs_f64()))
}

/// The three sides of a level: the stack and the two floors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Stack,
    Floor(Shape),
}

/// The order of the sides in round `round`: rotated by one each round
/// (stack, sequential, graph; sequential, graph, stack; graph, stack,
/// sequential; ...), so that over every three rounds each side runs once
/// first, once second and once last, and a drift during the level — the
/// tenant database's catalog grows with every tenant, a shared machine's
/// speed wanders — weighs on all three alike rather than on whichever runs
/// last.
fn order(round: usize) -> [Side; 3] {
    let mut sides = [Side::Stack, Side::Floor(Shape::Sequential), Side::Floor(Shape::Graph)];
    sides.rotate_left(round % 3);
    sides
}

/// Rounds and tenants per round of a level. The default (bounded) run:
/// nine rounds of 30 tenants at one in flight, three rounds of eight waves
/// at 16, three of four waves at 64 (270, 384 and 768 tenants per side).
/// `BENCH_FULL=1`: 1,000 tenants per level and side, nine rounds at one in
/// flight, three at 16 and 64. `BENCH_TENANTS` sets the tenants per level
/// (rounds as in the full run). Rounds are a multiple of three ([`order`]).
/// Filling and draining the pipeline at the ends of a round takes about
/// one latency of each side, the same share of each side's time, so it
/// leaves the ratios be.
fn plan(run: &Run, tenants: Option<usize>, in_flight: usize) -> (usize, usize) {
    let rounds = |n: usize| (n / (in_flight * 50)).clamp(1, 3) * 3;
    match tenants {
        Some(n) => (rounds(n), n),
        None if run.full() => (rounds(1000), 1000),
        None => match in_flight {
            1 => (9, 270),
            l if l <= 16 => (3, 24 * l),
            l => (3, 12 * l),
        },
    }
}

/// Where the time goes, p50 in milliseconds: from the publish to the
/// orchestrator deciding the first commands (intake); each step, from its
/// command being decided to its result being taken up, next to the
/// floors' calls of the same step; the three branches (realm → client →
/// admin user, database, bucket) from the first command decided to the
/// last of them taken up, next to the graph floor's longest branch; from
/// the last result to the TenantActivated event arriving (activation).
/// Intake, the branches, the welcome mail and activation add up to a
/// tenant's latency. Step times are the orchestrator's own timestamps
/// (`saga_steps`), on the bench's clock: one machine.
async fn breakdown(
    stack: &Stack,
    trips: &[Trip],
    sequential: &[(f64, Vec<f64>)],
    graph: &[(f64, Vec<f64>)],
) -> Result<Vec<Part>> {
    let keys: Vec<&str> = trips.iter().map(|t| t.key.as_str()).collect();
    let rows: Vec<(String, Option<f64>, Option<f64>)> = sqlx::query_as(
        "SELECT t.key, extract(epoch FROM st.started_at)::float8 * 1000, extract(epoch FROM st.finished_at)::float8 * 1000
         FROM tenants t JOIN sagas s ON s.tenant_id = t.id JOIN saga_steps st ON st.saga_id = s.id
         WHERE t.key = ANY($1) ORDER BY t.key, st.position",
    )
    .bind(&keys)
    .fetch_all(&mut stack.control().await?)
    .await?;
    let mut spans: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for (key, started, finished) in rows {
        if let (Some(started), Some(finished)) = (started, finished) {
            spans.entry(key).or_default().push((started, finished));
        }
    }
    let (mut intake, mut activation, mut branches, mut steps) =
        (Vec::new(), Vec::new(), Vec::new(), vec![Vec::new(); STEPS.len()]);
    for trip in trips {
        let Some(span) = spans.get(&trip.key).filter(|s| s.len() == STEPS.len()) else { continue };
        let first = span.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
        let last_branch = span[..STEPS.len() - 1].iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
        intake.push(first - trip.published);
        branches.push(last_branch - first);
        activation.push(trip.activated - span[STEPS.len() - 1].1);
        for (times, (started, finished)) in steps.iter_mut().zip(span) {
            times.push(finished - started);
        }
    }
    let p50 = |ms: Vec<f64>| summary(ms)["p50"].as_f64().unwrap_or(0.0);
    let floor_step =
        |runs: &[(f64, Vec<f64>)], j: usize| p50(runs.iter().filter_map(|(_, s)| s.get(j).copied()).collect());
    // The graph floor's branches: the longest of the identity chain, the
    // database and the bucket.
    let graph_branches = p50(graph.iter().map(|(_, s)| (s[0] + s[1] + s[2]).max(s[3]).max(s[4])).collect());
    let mut parts = vec![Part {
        name: "intake: publish → first commands decided".into(),
        stack: p50(intake),
        sequential: None,
        graph: None,
    }];
    for (j, (service, action)) in STEPS.into_iter().enumerate() {
        if j == STEPS.len() - 1 {
            parts.push(Part {
                name: "branches: first command decided → last of realm/client/admin, database, bucket taken up".into(),
                stack: p50(std::mem::take(&mut branches)),
                sequential: Some(p50(sequential
                    .iter()
                    .map(|(_, s)| s[..STEPS.len() - 1].iter().sum::<f64>())
                    .collect())),
                graph: Some(graph_branches),
            });
        }
        parts.push(Part {
            name: format!("{service}.{action}"),
            stack: p50(std::mem::take(&mut steps[j])),
            sequential: Some(floor_step(sequential, j)),
            graph: Some(floor_step(graph, j)),
        });
    }
    parts.push(Part {
        name: "activation: last result → TenantActivated received".into(),
        stack: p50(activation),
        sequential: None,
        graph: None,
    });
    Ok(parts)
}

/// One row of [`breakdown`]: p50 ms of the stack and of each floor.
struct Part {
    name: String,
    stack: f64,
    sequential: Option<f64>,
    graph: Option<f64>,
}

/// p50 of milliseconds.
fn p50_of(ms: impl Iterator<Item = f64>) -> f64 {
    summary(ms.collect())["p50"].as_f64().unwrap_or(0.0)
}

/// The spread of per-round ratios: (max − min) / median, as a fraction.
fn spread(mut ratios: Vec<f64>) -> f64 {
    ratios.sort_by(f64::total_cmp);
    let median = percentile(&ratios, 0.5);
    match (ratios.first(), ratios.last()) {
        (Some(min), Some(max)) if median > 0.0 => (max - min) / median,
        _ => 0.0,
    }
}

/// One side's figures in one level.
#[derive(Default)]
struct Tally {
    /// Per round: p50 ms and tenants/s.
    rounds: Vec<(f64, f64)>,
    latencies: Vec<f64>,
    seconds: f64,
}

impl Tally {
    fn add(&mut self, latencies: Vec<f64>, seconds: f64) {
        let n = latencies.len() as f64;
        self.rounds.push((p50_of(latencies.iter().copied()), n / seconds));
        self.latencies.extend(latencies);
        self.seconds += seconds;
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn p50(&self) -> f64 {
        p50_of(self.latencies.iter().copied())
    }

    fn p99(&self) -> f64 {
        summary(self.latencies.clone())["p99"].as_f64().unwrap_or(0.0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "tenants_per_s": self.rate(),
            "latency_ms": summary(self.latencies.clone()),
            "rounds": self.rounds.iter().map(|(p50, rate)| serde_json::json!({ "p50_ms": p50, "tenants_per_s": rate })).collect::<Vec<_>>(),
        })
    }
}

/// The stack's figures over a floor's: overall p50 and throughput ratios,
/// and the spread of the same ratios round by round ([`spread`]).
fn ratios(stack: &Tally, floor: &Tally) -> serde_json::Value {
    let per_round = |f: fn(&(f64, f64), &(f64, f64)) -> f64| {
        spread(stack.rounds.iter().zip(&floor.rounds).map(|(s, fl)| f(s, fl)).collect())
    };
    serde_json::json!({
        "p50_ratio": stack.p50() / floor.p50(),
        "throughput_ratio": stack.rate() / floor.rate(),
        "p50_ratio_spread": per_round(|s, f| s.0 / f.0),
        "throughput_ratio_spread": per_round(|s, f| s.1 / f.1),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let tenants: Option<usize> = std::env::var("BENCH_TENANTS").ok().and_then(|s| s.parse().ok());
    let levels: Vec<usize> = match std::env::var("BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .map(|l| l.trim().parse().context("BENCH_LEVELS: in-flight counts, e.g. 1,64"))
            .collect::<Result<_>>()?,
        Err(_) => LEVELS.to_vec(),
    };
    let mut stack = Stack::servers_with(true).await?;
    // Steady state: WAL segments recycled, as on a server that has run.
    let wal_ahead = stack.pg.warm_wal(WARM_WAL_MB).await?;
    // The tests' short deadlines are for failing fast; a deployment waits
    // for a pooled connection rather than failing a step under load.
    stack.overrides = vec![
        ("LANDLORD_TENANT_DATABASE_TIMEOUT".into(), "60s".into()),
        ("LANDLORD_KEYCLOAK_TIMEOUT".into(), "30s".into()),
        ("LANDLORD_SMTP_TIMEOUT".into(), "30s".into()),
    ];
    stack.start_services().await?;
    let direct = Arc::new(Direct::new(&stack).await?);
    let driver = Driver::connect(&stack).await?;
    // Warm up, then let PostgreSQL see the control plane's tables as they
    // are, as autovacuum keeps a running one analyzed: tables it still
    // believes empty are planned with sequential scans.
    driver.run(0, 0..WARM_UP_TENANTS, 16).await?;
    sqlx::query("ANALYZE").execute(&mut stack.control().await?).await?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    let mut parts = Vec::new();
    for in_flight in levels {
        let (rounds, n) = plan(&run, tenants, in_flight);
        let (mut trips, mut runs) = (Vec::new(), HashMap::<Shape, Vec<(f64, Vec<f64>)>>::new());
        let (mut stack_tally, mut sequential, mut graph) = (Tally::default(), Tally::default(), Tally::default());
        for round in 0..rounds {
            let tenants = n * round / rounds..n * (round + 1) / rounds;
            for side in order(round) {
                match side {
                    Side::Stack => {
                        let (t, s) = driver.run(in_flight, tenants.clone(), in_flight).await?;
                        stack_tally.add(t.iter().map(|t| t.ms).collect(), s);
                        trips.extend(t);
                    }
                    Side::Floor(shape) => {
                        let (f, s) = floor(&direct, in_flight, tenants.clone(), in_flight, shape).await?;
                        let tally = if shape == Shape::Sequential { &mut sequential } else { &mut graph };
                        tally.add(f.iter().map(|(ms, _)| *ms).collect(), s);
                        runs.entry(shape).or_default().extend(f);
                    }
                }
            }
        }
        if in_flight == 1 {
            parts = breakdown(
                &stack,
                &trips,
                runs.get(&Shape::Sequential).map_or(&[][..], |r| &r[..]),
                runs.get(&Shape::Graph).map_or(&[][..], |r| &r[..]),
            )
            .await?;
        }
        let (to_sequential, to_graph) = (ratios(&stack_tally, &sequential), ratios(&stack_tally, &graph));
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "{in_flight:>3} in flight, {rounds} rounds of {} tenants: stack {:.1}/s p50 {:.1} ms | sequential floor {:.1}/s p50 {:.1} ms | graph floor {:.1}/s p50 {:.1} ms | p50 ratios {:.2} / {:.2}, throughput ratios {:.2} / {:.2} ({:.0} s so far)",
            n / rounds,
            stack_tally.rate(),
            stack_tally.p50(),
            sequential.rate(),
            sequential.p50(),
            graph.rate(),
            graph.p50(),
            f(&to_sequential, "p50_ratio"),
            f(&to_graph, "p50_ratio"),
            f(&to_sequential, "throughput_ratio"),
            f(&to_graph, "throughput_ratio"),
            run.seconds(),
        );
        rows.push(format!(
            "| {in_flight} | {rounds} × {} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.2} ({:.0}%) |",
            n / rounds,
            stack_tally.rate(),
            stack_tally.p50(),
            stack_tally.p99(),
            sequential.rate(),
            sequential.p50(),
            sequential.p99(),
            graph.rate(),
            graph.p50(),
            graph.p99(),
            f(&to_sequential, "p50_ratio"),
            100.0 * f(&to_sequential, "p50_ratio_spread"),
            f(&to_graph, "p50_ratio"),
            100.0 * f(&to_graph, "p50_ratio_spread"),
            f(&to_sequential, "throughput_ratio"),
            100.0 * f(&to_sequential, "throughput_ratio_spread"),
            f(&to_graph, "throughput_ratio"),
            100.0 * f(&to_graph, "throughput_ratio_spread"),
        ));
        json_rows.push(serde_json::json!({
            "in_flight": in_flight,
            "rounds": rounds,
            "tenants_per_side": n,
            "stack": stack_tally.json(),
            "sequential_floor": sequential.json(),
            "graph_floor": graph.json(),
            "to_sequential_floor": to_sequential,
            "to_graph_floor": to_graph,
        }));
    }
    let mut part_rows = Vec::new();
    let cell = |ms: Option<f64>| ms.map_or_else(|| "–".to_owned(), |f| format!("{f:.1}"));
    for part in &parts {
        let over = match part.graph {
            Some(g) => format!("{:+.1}", part.stack - g),
            None => format!("{:+.1}", part.stack),
        };
        println!(
            "  {}: stack {:.1} ms, sequential floor {} ms, graph floor {} ms",
            part.name,
            part.stack,
            cell(part.sequential),
            cell(part.graph)
        );
        part_rows.push(format!(
            "| {} | {:.1} | {} | {} | {over} |",
            part.name,
            part.stack,
            cell(part.sequential),
            cell(part.graph)
        ));
    }
    let versions = serde_json::json!({
        "rustc": command_output("rustc", &["--version"]),
        "nats-server": command_output(&landlord_testkit::nats_server_binary()?.display().to_string(), &["--version"]),
        "postgres": command_output(&landlord_testkit::pg_bin_dir()?.join("postgres").display().to_string(), &["--version"]),
        "s3s-fs": "0.14.1",
        "keycloak": "contract double (tests/support)",
    });
    let results = serde_json::json!({
        "bench": "full",
        "tier": "bridge",
        "plans": "the e2e stack's plans (tests/e2e/src/lib.rs): the default pipeline as a graph, as deploy/plans.toml ships it",
        "postgres": format!("durable; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit"),
        "levels": json_rows,
        "one_in_flight_p50_ms": parts.iter().map(|p| serde_json::json!({ "part": p.name, "stack": p.stack, "sequential_floor": p.sequential, "graph_floor": p.graph })).collect::<Vec<_>>(),
        "machine": machine(),
        "versions": versions,
        "goals": {
            "p50_ratio_to_sequential_floor_at_1": "≤ 1.0",
            "p50_ratio_to_graph_floor_at_1": "≤ 1.25",
            "throughput_ratio_at_64": "≥ 0.8",
        },
    });
    let md = format!(
        "# bench (full stack)\n\nBridge-tier tenants through the whole system (five service binaries, NATS, durable PostgreSQL, s3s-fs, aiosmtpd, the Keycloak contract double; the default pipeline as a graph: realm → client → admin user beside the database and beside the bucket, the welcome mail after all), latency from the TenantRequested publish to the TenantActivated event; next to two floors, the workers' own step code for the same six operations called directly at the same concurrency: **sequential** (one step after the other, as a script would) and **graph** (the same graph, `tokio::join!` of the three branches, the mail after them). The three sides take turns in rounds, the order rotated every round (stack, sequential, graph; sequential, graph, stack; ...), so that a drift during a level — the tenant database's catalog grows with every tenant — weighs on all alike. Measured after {WARM_UP_TENANTS} warm-up tenants and an ANALYZE of the control plane; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit.\n\nRatios are the stack's over a floor's (p50: lower is better; throughput: higher is better); in brackets the spread of the same ratio over the rounds, (max − min) / median.\n\n| in flight | rounds × tenants | stack tenants/s | stack p50 / p99 ms | sequential floor tenants/s | sequential p50 / p99 ms | graph floor tenants/s | graph p50 / p99 ms | p50 ratio to sequential (goal ≤ 1.0 at 1) | p50 ratio to graph (goal ≤ 1.25 at 1) | throughput ratio to sequential (goal ≥ 0.8 at 64) | throughput ratio to graph |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n{}\n\nWhere the time goes at one in flight, p50 ms of each part (the orchestrator's step timestamps against the bench's clock; intake, branches, the welcome mail and activation add up to a tenant's latency, their p50s roughly):\n\n| part | stack | sequential floor | graph floor | stack over the graph floor |\n|---|---|---|---|---|\n{}\n\nMachine: {}\n\nVersions: {}\n",
        rows.join("\n"),
        part_rows.join("\n"),
        machine(),
        versions
    );
    write_results("full", results, &md, &run)
}
