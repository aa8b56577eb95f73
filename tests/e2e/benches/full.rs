//! `just bench`: bridge-tier tenants through the whole system — the five
//! service binaries as processes, NATS, a durable PostgreSQL, s3s-fs,
//! aiosmtpd and the Keycloak contract double — at 1, 16 and 64 in flight,
//! next to the floor: the same backend operations (the workers' own step
//! code for realm, client, admin user, database, bucket and welcome mail)
//! run directly, in sequence per tenant, without the bus or the
//! orchestrator, at the same concurrency. The two take turns in rounds
//! ([`rounds`]).
//!
//! Measured after 100 warm-up tenants and an ANALYZE of the control plane.
//! `BENCH_TENANTS` (default 1000) tenants per concurrency level,
//! `BENCH_LEVELS` (default 1,16,64) the levels. At one in flight it also
//! shows where the time goes: intake, each step next to the floor's call of
//! it, and activation ([`breakdown`]). Writes bench/results/full.{json,md}.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::Stack;
use landlord_runtime::{Broker, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretsKey, StepService};
use landlord_testkit::bench::{command_output, machine, summary};
use tokio::sync::{Semaphore, oneshot};

const LEVELS: [usize; 3] = [1, 16, 64];
/// The bridge tier's pipeline (deploy/plans.toml), as the floor calls it.
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
        let broker = Broker::connect(&stack.nats.url(), "bench", stack.namespace.clone()).await?;
        let publisher = Publisher::new(&broker, "bench");
        let waiters: Waiters = Arc::default();
        // Only the events that end a request: the bench's own load on the
        // bus should not include a copy of every progress event.
        let mut ends = Vec::new();
        for kind in [EventKind::Activated, EventKind::ProvisioningFailed, EventKind::Rejected] {
            ends.push(broker.client.subscribe(stack.namespace.event_filter(None, Some(kind))).await?);
        }
        let mut finished = futures_util::stream::select_all(ends);
        let dispatch = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                while let Some(message) = finished.next().await {
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
        let broker = Broker::connect(&stack.nats.url(), "floor", stack.namespace.clone()).await?;
        let root = stack.namespace.root();
        let idp_settings = landlord_idp::Settings::from_env(&env)?;
        let secrets = landlord_idp::Idp::open_secrets(&idp_settings, &broker.jetstream, root, 1).await?;
        let notification = landlord_notification::Settings::from_env(&env)?;
        let ledger = landlord_notification::Ledger::open(
            &broker.jetstream,
            root,
            1,
            Duration::from_secs(3600),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = SecretsKey::from_base64(&env.raw("LANDLORD_SECRETS_KEY").context("no key")?)
            .map_err(|e| anyhow::anyhow!(e))?;
        let mail_secrets = KvSecrets::open(&broker.jetstream, root, 1, Duration::from_secs(3600), key).await?;
        // As the worker does: a sealed copy of the password for the welcome mail.
        let database = landlord_database::Settings::from_env(&env)?;
        let delivery = landlord_database::open_delivery(&database, &broker, 1).await?;
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

    /// One tenant's six steps, each fed the outputs before it: the whole
    /// time and each step's, in milliseconds.
    async fn provision(&self, key: &str, serial: u64) -> Result<(f64, Vec<f64>)> {
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
        let mut steps = Vec::with_capacity(STEPS.len());
        let mut inputs = HashMap::new();
        for (i, (service, action)) in STEPS.into_iter().enumerate() {
            let step_began = Instant::now();
            let command = pb::StepCommand {
                saga_id: format!("floor-{key}"),
                step: action.into(),
                attempt: 1,
                tenant: Some(spec.clone()),
                inputs: inputs.clone(),
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
            inputs.extend(ok.outputs);
            steps.push(step_began.elapsed().as_secs_f64() * 1000.0);
        }
        Ok((begin.elapsed().as_secs_f64() * 1000.0, steps))
    }
}

/// Tenants `tenants` of `level` through [`Direct`], `in_flight` at a time:
/// each one's whole time and step times, and the seconds the batch took.
async fn floor(
    direct: &Arc<Direct>,
    level: usize,
    tenants: Range<usize>,
    in_flight: usize,
) -> Result<(Vec<(f64, Vec<f64>)>, f64)> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in tenants {
        let permit = gate.clone().acquire_owned().await?;
        let direct = direct.clone();
        tasks.push(tokio::spawn(async move {
            let serial = u64::try_from(level * 1_000_000 + i).unwrap_or(0);
            let latency = direct.provision(&format!("f{level}-{i}"), serial).await;
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

/// How many rounds a level is split into. The stack and the floor take
/// turns, and every other round the floor goes first (stack, floor, floor,
/// stack, ...), so that a drift during the level — the tenant database's
/// catalog grows with every tenant, a shared machine's speed wanders —
/// weighs on both alike rather than on whichever runs second. At least two
/// rounds; more while each still holds [`WAVES_PER_ROUND`] waves of
/// `in_flight` tenants: ten at one in flight, two at 16 and 64. Filling and
/// draining the pipeline at the ends of a round takes about one latency of
/// each side, the same share of both sides' time, so it leaves the ratio be.
fn rounds(n: usize, in_flight: usize) -> usize {
    (n / (in_flight * WAVES_PER_ROUND)).clamp(2, MAX_ROUNDS)
}

const WAVES_PER_ROUND: usize = 50;
const MAX_ROUNDS: usize = 10;

/// Where the time goes, p50 in milliseconds: from the publish to the
/// orchestrator deciding the first command (intake); each step, from its
/// command being decided to its result being taken up, next to the floor's
/// call of the same step; from the last result to the TenantActivated event
/// arriving (activation). The parts add up to a tenant's latency. Step
/// times are the orchestrator's own timestamps (`saga_steps`), on the
/// bench's clock: one machine.
async fn breakdown(
    stack: &Stack,
    trips: &[Trip],
    floor: &[(f64, Vec<f64>)],
) -> Result<Vec<(String, f64, Option<f64>)>> {
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
    let (mut intake, mut activation, mut steps) = (Vec::new(), Vec::new(), vec![Vec::new(); STEPS.len()]);
    for trip in trips {
        let Some(span) = spans.get(&trip.key).filter(|s| s.len() == STEPS.len()) else { continue };
        intake.push(span[0].0 - trip.published);
        activation.push(trip.activated - span[STEPS.len() - 1].1);
        for (times, (started, finished)) in steps.iter_mut().zip(span) {
            times.push(finished - started);
        }
    }
    let p50 = |ms: Vec<f64>| summary(ms)["p50"].as_f64().unwrap_or(0.0);
    let mut parts = vec![("intake: publish → first command decided".to_owned(), p50(intake), None)];
    for (j, (service, action)) in STEPS.into_iter().enumerate() {
        let floor_ms = floor.iter().filter_map(|(_, steps)| steps.get(j).copied()).collect();
        parts.push((format!("{service}.{action}"), p50(std::mem::take(&mut steps[j])), Some(p50(floor_ms))));
    }
    parts.push(("activation: last result → TenantActivated received".to_owned(), p50(activation), None));
    Ok(parts)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = std::env::var("BENCH_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
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
        let rounds = rounds(n, in_flight);
        let (mut trips, mut floor_runs, mut stack_s, mut floor_s) = (Vec::new(), Vec::new(), 0.0, 0.0);
        for round in 0..rounds {
            let tenants = n * round / rounds..n * (round + 1) / rounds;
            // The stack first in even rounds, the floor in odd ones.
            for stack_turn in [round % 2 == 0, round % 2 == 1] {
                if stack_turn {
                    let (t, s) = driver.run(in_flight, tenants.clone(), in_flight).await?;
                    trips.extend(t);
                    stack_s += s;
                } else {
                    let (f, s) = floor(&direct, in_flight, tenants.clone(), in_flight).await?;
                    floor_runs.extend(f);
                    floor_s += s;
                }
            }
        }
        let (stack_rate, floor_rate) = (n as f64 / stack_s, n as f64 / floor_s);
        if in_flight == 1 {
            parts = breakdown(&stack, &trips, &floor_runs).await?;
        }
        let stack_summary = summary(trips.iter().map(|t| t.ms).collect());
        let floor_summary = summary(floor_runs.iter().map(|(ms, _)| *ms).collect());
        let p50_ratio = stack_summary["p50"].as_f64().unwrap_or(0.0) / floor_summary["p50"].as_f64().unwrap_or(1.0);
        let rate_ratio = stack_rate / floor_rate;
        println!(
            "{in_flight:>3} in flight: stack {stack_rate:.1}/s p50 {:.1} ms p99 {:.1} ms | floor {floor_rate:.1}/s p50 {:.1} ms p99 {:.1} ms",
            stack_summary["p50"].as_f64().unwrap_or(0.0),
            stack_summary["p99"].as_f64().unwrap_or(0.0),
            floor_summary["p50"].as_f64().unwrap_or(0.0),
            floor_summary["p99"].as_f64().unwrap_or(0.0),
        );
        rows.push(format!(
            "| {in_flight} | {rounds} | {stack_rate:.1} | {:.1} / {:.1} | {floor_rate:.1} | {:.1} / {:.1} | {p50_ratio:.2} | {rate_ratio:.2} |",
            stack_summary["p50"].as_f64().unwrap_or(0.0),
            stack_summary["p99"].as_f64().unwrap_or(0.0),
            floor_summary["p50"].as_f64().unwrap_or(0.0),
            floor_summary["p99"].as_f64().unwrap_or(0.0),
        ));
        json_rows.push(serde_json::json!({
            "in_flight": in_flight,
            "rounds": rounds,
            "stack": { "tenants_per_s": stack_rate, "latency_ms": stack_summary },
            "floor": { "tenants_per_s": floor_rate, "latency_ms": floor_summary },
            "p50_ratio": p50_ratio,
            "throughput_ratio": rate_ratio,
        }));
    }
    let mut part_rows = Vec::new();
    for (part, stack_ms, floor_ms) in &parts {
        let (floor_cell, over) = match floor_ms {
            Some(f) => (format!("{f:.1}"), format!("{:+.1}", stack_ms - f)),
            None => ("–".to_owned(), format!("{stack_ms:+.1}")),
        };
        println!("  {part}: stack {stack_ms:.1} ms, floor {floor_cell} ms");
        part_rows.push(format!("| {part} | {stack_ms:.1} | {floor_cell} | {over} |"));
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
        "tenants_per_level": n,
        "tier": "bridge",
        "postgres": format!("durable; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit"),
        "levels": json_rows,
        "one_in_flight_p50_ms": parts.iter().map(|(part, stack_ms, floor_ms)| serde_json::json!({ "part": part, "stack": stack_ms, "floor": floor_ms })).collect::<Vec<_>>(),
        "machine": machine(),
        "versions": versions,
        "goals": { "p50_ratio_at_1": "≤ 1.25", "throughput_ratio_at_64": "≥ 0.8" },
    });
    let dir = landlord_testkit::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("full.json"), serde_json::to_string_pretty(&results)?)?;
    let md = format!(
        "# bench (full stack)\n\n{n} bridge-tier tenants per level through the whole system (five service binaries, NATS, durable PostgreSQL, s3s-fs, aiosmtpd, the Keycloak contract double), latency from the TenantRequested publish to the TenantActivated event; next to the floor: the workers' own step code for the same six operations called directly, in sequence per tenant, at the same concurrency. The stack and the floor take turns in rounds, every other round the floor first (stack, floor, floor, stack, ...; ten rounds at one in flight, two at 16 and 64), so that a drift during a level — the tenant database's catalog grows with every tenant — weighs on both alike. Measured after {WARM_UP_TENANTS} warm-up tenants and an ANALYZE of the control plane; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit.\n\n| in flight | rounds | stack tenants/s | stack p50 / p99 ms | floor tenants/s | floor p50 / p99 ms | p50 ratio (goal ≤ 1.25 at 1) | throughput ratio (goal ≥ 0.8 at 64) |\n|---|---|---|---|---|---|---|---|\n{}\n\nWhere the time goes at one in flight, p50 ms of each part (the orchestrator's step timestamps against the bench's clock; the parts of one tenant add up to its latency, their p50s roughly):\n\n| part | stack | floor | over the floor |\n|---|---|---|---|\n{}\n\nMachine: {}\n\nVersions: {}\n",
        rows.join("\n"),
        part_rows.join("\n"),
        machine(),
        versions
    );
    std::fs::write(dir.join("full.md"), md)?;
    println!("wrote bench/results/full.{{json,md}}");
    Ok(())
}
