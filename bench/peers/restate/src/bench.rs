//! `just bench-peers`: bridge-tier tenants through Landlord's full stack,
//! through the Restate peer, and through the floor (the same step code
//! called directly in the same graph), on the same backends (the ones
//! tests/support starts for the stack), at 1, 16 and 64 in flight. The
//! three take turns in rounds, the order rotated each round. Writes
//! bench/results/peers.{json,md}.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::Stack;
use landlord_runtime::{Env, Envelope, Publisher};
use landlord_testkit::Process;
use landlord_testkit::bench::{Run, command_output, machine, summary, write_results};
use tokio::sync::{Semaphore, oneshot};

use crate::cpu::{self, Usage};
use crate::pipeline::{self, GRAPH, Outcome, Tenant};
use crate::steps::{Direct, Steps};

const LEVELS: [usize; 3] = [1, 16, 64];
const WARM_UP_TENANTS: usize = 48;
const SDK_VERSION: &str = "0.13.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Side {
    Landlord,
    Restate,
    Floor,
}

impl Side {
    const ALL: [Side; 3] = [Side::Landlord, Side::Restate, Side::Floor];

    fn name(self) -> &'static str {
        match self {
            Side::Landlord => "landlord",
            Side::Restate => "restate",
            Side::Floor => "floor",
        }
    }

    fn key(self, level: usize, i: usize) -> String {
        let prefix = match self {
            Side::Landlord => "l",
            Side::Restate => "r",
            Side::Floor => "f",
        };
        format!("{prefix}{level}-{i}")
    }
}

/// The order of the three in round `round`: rotated, so that each goes
/// first, second and third equally often.
fn order(round: usize) -> [Side; 3] {
    let mut sides = Side::ALL;
    sides.rotate_left(round % 3);
    sides
}

/// One side's figures at one level.
#[derive(Debug, Default)]
struct Tally {
    ms: Vec<f64>,
    seconds: f64,
    cpu: Usage,
    /// Per step name: the call's milliseconds (Restate, the floor) or the
    /// orchestrator's step span (Landlord).
    steps: BTreeMap<String, Vec<f64>>,
    /// Per tenant: its latency minus the longest of its branches and the
    /// mail, i.e. the time outside the step calls.
    outside: Vec<f64>,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.ms.len() as f64 / self.seconds.max(1e-9)
    }

    fn p(&self, q: &str) -> f64 {
        summary(self.ms.clone())[q].as_f64().unwrap_or(0.0)
    }

    fn add_steps(&mut self, total: f64, steps: &HashMap<String, f64>) {
        for (name, ms) in steps {
            self.steps.entry(name.clone()).or_default().push(*ms);
        }
        if let Some(path) = critical_path(steps) {
            self.outside.push(total - path);
        }
    }
}

/// The longest branch (realm + client + admin, database, bucket) plus
/// the mail: what the graph's step calls alone take.
fn critical_path(steps: &HashMap<String, f64>) -> Option<f64> {
    let get = |i: usize| steps.get(GRAPH[i].name).copied();
    let chain = get(0)? + get(1)? + get(2)?;
    Some(chain.max(get(3)?).max(get(4)?) + get(5)?)
}

fn p50(ms: &[f64]) -> f64 {
    summary(ms.to_vec())["p50"].as_f64().unwrap_or(0.0)
}

/// Landlord: publishes TenantRequested and waits for the tenant's
/// TenantActivated event, as tests/e2e/benches/full.rs does.
struct Landlord {
    publisher: Publisher,
    waiters: Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>>,
    dispatch: tokio::task::JoinHandle<()>,
}

impl Landlord {
    async fn connect(stack: &Stack) -> Result<Self> {
        // As the operator, as tests/e2e/benches/full.rs's driver: it
        // publishes requests and follows the events stream (the stack's NATS
        // has the bus users on, issue 28, and a bus user may not subscribe
        // to event subjects plainly).
        let broker = stack.connect("bench-peers").await?;
        let publisher = Publisher::new(&broker, "bench");
        let waiters: Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>> = Arc::default();
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
                        let _ = waiter.send(ok);
                    }
                }
            })
        };
        Ok(Self { publisher, waiters, dispatch })
    }

    async fn provision(&self, key: String) -> Result<f64> {
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
        let began = Instant::now();
        self.publisher
            .publish_event(&TenantKey::parse(&key)?, &request, &Envelope::new(request.idempotency_id.clone()))
            .await?;
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(true)) => Ok(began.elapsed().as_secs_f64() * 1000.0),
            other => anyhow::bail!("tenant {key} did not become ACTIVE: {other:?}"),
        }
    }
}

impl Drop for Landlord {
    fn drop(&mut self) {
        self.dispatch.abort();
    }
}

/// restate-server and the peer's service, registered with it.
struct Restate {
    _server: Process,
    _service: Process,
    ingress: String,
    client: reqwest::Client,
    version: String,
}

/// Where `just bench-peers` installs restate-server (npm), unless
/// `RESTATE_SERVER` names another binary.
fn restate_server_binary() -> PathBuf {
    std::env::var_os("RESTATE_SERVER").map(PathBuf::from).unwrap_or_else(|| {
        let arch = if std::env::consts::ARCH == "aarch64" { "arm64" } else { "x64" };
        landlord_testkit::landlord_home()
            .join(format!("restate/node_modules/@restatedev/restate-server-linux-{arch}/bin/restate-server"))
    })
}

impl Restate {
    async fn start(stack: &Stack) -> Result<Self> {
        let binary = restate_server_binary();
        anyhow::ensure!(binary.exists(), "no restate-server at {} (just bench-peers installs it)", binary.display());
        let dir = landlord_testkit::scratch_dir("restate")?;
        let (ingress_port, admin_port, fabric_port) =
            (landlord_testkit::free_port(), landlord_testkit::free_port(), landlord_testkit::free_port());
        // Restate's defaults (durability included: the log fsyncs each
        // batch), on ports of its own; no telemetry or version check.
        let env: Vec<(String, String)> = [
            ("RESTATE_BASE_DIR", dir.display().to_string()),
            ("RESTATE_INGRESS__BIND_ADDRESS", format!("127.0.0.1:{ingress_port}")),
            ("RESTATE_ADMIN__BIND_ADDRESS", format!("127.0.0.1:{admin_port}")),
            ("RESTATE_BIND_ADDRESS", format!("127.0.0.1:{fabric_port}")),
            ("RESTATE_DISABLE_TELEMETRY", "true".into()),
            ("RESTATE_LOG_FILTER", "warn".into()),
            ("DO_NOT_TRACK", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let args: Vec<String> = ["--no-logo", "--node-name", "bench", "--listen-mode", "tcp"].map(String::from).into();
        let server = Process::start("restate-server", &binary, &args, &env, &dir)?;
        let client = landlord_runtime::http::client()?;
        let admin = format!("http://127.0.0.1:{admin_port}");
        let ingress = format!("http://127.0.0.1:{ingress_port}");
        landlord_testkit::eventually("restate-server's admin API", Duration::from_secs(60), || {
            let client = client.clone();
            let url = format!("{admin}/health");
            async move { client.get(url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await?;
        // The peer's service: this binary, `serve`, given what the stack's
        // workers are given.
        let service_port = landlord_testkit::free_port();
        let mut service_env = crate::steps::with_bus_users(stack);
        service_env.push(("RESTATE_PEER_ADDR".into(), format!("127.0.0.1:{service_port}")));
        service_env.push(("RUST_LOG".into(), "warn".into()));
        let service =
            Process::start("restate-peer-service", &std::env::current_exe()?, &["serve".into()], &service_env, &dir)?;
        landlord_testkit::eventually("the peer's service listening", Duration::from_secs(60), || async move {
            std::net::TcpStream::connect(("127.0.0.1", service_port)).ok().map(|_| ())
        })
        .await?;
        let registered = client
            .post(format!("{admin}/deployments"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "uri": format!("http://127.0.0.1:{service_port}") }).to_string())
            .send()
            .await?;
        anyhow::ensure!(
            registered.status().is_success(),
            "registering the service: {} {}",
            registered.status(),
            registered.text().await.unwrap_or_default()
        );
        let version = client.get(format!("{admin}/version")).send().await?.text().await?;
        let version = serde_json::from_str::<serde_json::Value>(&version)
            .ok()
            .and_then(|v| v["version"].as_str().map(str::to_owned))
            .unwrap_or(version);
        Ok(Self { _server: server, _service: service, ingress, client, version })
    }

    /// The workflow for `key`, through the ingress: its latency and its
    /// step times.
    async fn provision(&self, key: String) -> Result<(f64, HashMap<String, f64>)> {
        let began = Instant::now();
        let outcome = self.outcome(&key).await?;
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(outcome.activated, "tenant {key} not provisioned: {outcome:?}");
        Ok((ms, outcome.step_ms))
    }

    /// The workflow for `key`, through the ingress, however it ends.
    async fn outcome(&self, key: &str) -> Result<Outcome> {
        let response = self
            .client
            .post(format!("{}/Provisioning/{key}/run", self.ingress))
            .header("content-type", "application/json")
            .body(serde_json::to_string(&Tenant::new(key))?)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "tenant {key}: {status} {body}");
        serde_json::from_str(&body).with_context(|| format!("tenant {key}: {body}"))
    }
}

/// Everything one turn needs.
struct Sides {
    landlord: Landlord,
    restate: Restate,
    floor: Direct,
}

/// Tenants `tenants` of `level` through `side`, `in_flight` at a time:
/// each one's latency and step times, and the seconds the batch took.
async fn turn(
    sides: &Arc<Sides>,
    side: Side,
    level: usize,
    tenants: Range<usize>,
    in_flight: usize,
) -> Result<(Vec<(String, f64, HashMap<String, f64>)>, f64)> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in tenants {
        let permit = gate.clone().acquire_owned().await?;
        let sides = sides.clone();
        let key = side.key(level, i);
        tasks.push(tokio::spawn(async move {
            let result = match side {
                Side::Landlord => sides.landlord.provision(key.clone()).await.map(|ms| (ms, HashMap::new())),
                Side::Restate => sides.restate.provision(key.clone()).await,
                Side::Floor => {
                    let began = Instant::now();
                    let tenant = Tenant::new(&key);
                    let outcome =
                        pipeline::provision(&sides.floor, &format!("floor-{key}"), &tenant.spec(), Arc::default())
                            .await;
                    let ms = began.elapsed().as_secs_f64() * 1000.0;
                    if outcome.activated {
                        Ok((ms, outcome.step_ms))
                    } else {
                        Err(anyhow::anyhow!("floor tenant {key} not provisioned: {outcome:?}"))
                    }
                }
            };
            drop(permit);
            result.map(|(ms, steps)| (key, ms, steps))
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await??);
    }
    Ok((out, started.elapsed().as_secs_f64()))
}

/// The orchestrator's step spans (finished − started) of Landlord's
/// tenants `keys`, per step name.
async fn landlord_steps(stack: &Stack, keys: &[String]) -> Result<HashMap<String, HashMap<String, f64>>> {
    let rows: Vec<(String, String, Option<f64>)> = sqlx::query_as(
        "SELECT t.key, st.name, extract(epoch FROM st.finished_at - st.started_at)::float8 * 1000
         FROM tenants t JOIN sagas s ON s.tenant_id = t.id JOIN saga_steps st ON st.saga_id = s.id
         WHERE t.key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(&mut stack.control().await?)
    .await?;
    let mut out: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for (key, step, ms) in rows {
        if let Some(ms) = ms {
            out.entry(key).or_default().insert(step, ms);
        }
    }
    Ok(out)
}

/// What the backends hold: realms, buckets, schemas and roles.
async fn holdings(stack: &Stack) -> Result<[i64; 4]> {
    let mut db = stack.tenant_data().await?;
    let (schemas,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace").fetch_one(&mut db).await?;
    let (roles,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_roles").fetch_one(&mut db).await?;
    Ok([stack.keycloak.realm_names().len() as i64, stack.buckets()?.len() as i64, schemas, roles])
}

/// The same compensation on failure: one tenant whose admin user is
/// refused (Keycloak answers 400, a permanent failure) after the realm,
/// the client, the database and the bucket were made. It must end not
/// provisioned, with every step that ran undone — the failed one too —
/// and the backends holding what they held before.
async fn compensation_check(stack: &Stack, sides: &Sides, side: Side) -> Result<serde_json::Value> {
    let before = holdings(stack).await?;
    stack.keycloak.fail_next_to("POST", "/users", 1, 400);
    let key = side.key(9, 0);
    let outcome = match side {
        Side::Restate => sides.restate.outcome(&key).await?,
        _ => {
            pipeline::provision(&sides.floor, &format!("floor-{key}"), &Tenant::new(&key).spec(), Arc::default()).await
        }
    };
    stack.keycloak.clear_failures();
    let after = holdings(stack).await?;
    anyhow::ensure!(
        !outcome.activated && outcome.failed_step.as_deref() == Some("idp_admin_user"),
        "{}: the refused admin user did not fail the tenant: {outcome:?}",
        side.name()
    );
    anyhow::ensure!(outcome.compensated.len() == 5, "{}: not everything was undone: {outcome:?}", side.name());
    anyhow::ensure!(
        before == after,
        "{}: the backends hold realms/buckets/schemas/roles {after:?}, {before:?} before",
        side.name()
    );
    println!("{}: a failed admin user undone: {:?}", side.name(), outcome.compensated);
    Ok(
        serde_json::json!({ "failed_step": outcome.failed_step, "undone_in_order": outcome.compensated, "backends_as_before": true }),
    )
}

/// Rounds and tenants per side at `in_flight`: nine rounds at one in
/// flight (each side first three times), three at 16 (each first once),
/// seven at 64 (Landlord first three times, the others twice). The rounds
/// are what telling 10% apart needs at the per-round spread of the
/// 2026-12-06 run (peers.md: 8 at one in flight, 7 at 64); the default
/// sizes keep its rounds' sizes (20 and 192 tenants).
fn plan(run: &Run, in_flight: usize) -> (usize, usize) {
    let rounds = match in_flight {
        1 => 9,
        16 => 3,
        _ => 7,
    };
    let n = match in_flight {
        1 => run.size("BENCH_TENANTS_1", 180, 600),
        16 => run.size("BENCH_TENANTS_16", 384, 1200),
        _ => run.size("BENCH_TENANTS_64", 1344, 2240),
    };
    (rounds, n.max(rounds))
}

/// Mean and sample standard deviation of `values`.
fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Rounds for two standard errors of a mean ratio to be ≤ 0.10 at
/// per-round standard deviation `sd`: (2 sd / 0.10)², at least 1.
fn rounds_for_ten_percent(sd: f64) -> usize {
    ((2.0 * sd / 0.10).powi(2).ceil() as usize).max(1)
}

pub async fn main() -> Result<()> {
    let run = Run::start();
    let levels: Vec<usize> = match std::env::var("BENCH_LEVELS") {
        Ok(list) => list
            .split(',')
            .map(|l| l.trim().parse().context("BENCH_LEVELS: in-flight counts, e.g. 1,64"))
            .collect::<Result<_>>()?,
        Err(_) => LEVELS.to_vec(),
    };
    let mut stack = Stack::servers_with(true).await?;
    let wal_ahead = stack.pg.warm_wal(256).await?;
    stack.overrides = vec![
        ("LANDLORD_TENANT_DATABASE_TIMEOUT".into(), "60s".into()),
        ("LANDLORD_KEYCLOAK_TIMEOUT".into(), "30s".into()),
        ("LANDLORD_SMTP_TIMEOUT".into(), "30s".into()),
    ];
    stack.start_services().await?;
    let steps = Arc::new(Steps::new(&Env::from_pairs(crate::steps::with_bus_users(&stack)), "bench-floor").await?);
    let sides = Arc::new(Sides {
        landlord: Landlord::connect(&stack).await?,
        restate: Restate::start(&stack).await?,
        floor: Direct(steps),
    });
    // Warm up every side (connections, pools, Restate's partitions), then
    // let PostgreSQL see the control plane's tables as they are.
    for side in Side::ALL {
        turn(&sides, side, 0, 0..WARM_UP_TENANTS, 16).await.with_context(|| format!("warming up {}", side.name()))?;
    }
    sqlx::query("ANALYZE").execute(&mut stack.control().await?).await?;
    println!("warmed up ({:.0} s)", run.seconds());
    let mut compensation = serde_json::Map::new();
    for side in [Side::Restate, Side::Floor] {
        compensation.insert(side.name().into(), compensation_check(&stack, &sides, side).await?);
    }

    let mut levels_json = Vec::new();
    let mut rows = Vec::new();
    let mut breakdown = String::new();
    let mut cpu_rows = Vec::new();
    let mut resolution = Vec::new();
    for in_flight in levels {
        let (rounds, n) = plan(&run, in_flight);
        let mut tallies: BTreeMap<Side, Tally> = BTreeMap::new();
        let mut per_round: BTreeMap<Side, Vec<(f64, f64)>> = BTreeMap::new();
        for round in 0..rounds {
            let tenants = n * round / rounds..n * (round + 1) / rounds;
            for side in order(round) {
                let before = cpu::snapshot();
                let (trips, seconds) = turn(&sides, side, in_flight, tenants.clone(), in_flight).await?;
                let after = cpu::snapshot();
                let tally = tallies.entry(side).or_default();
                tally.cpu.add(&before, &after, trips.len());
                tally.seconds += seconds;
                let ms: Vec<f64> = trips.iter().map(|t| t.1).collect();
                per_round.entry(side).or_default().push((p50(&ms), ms.len() as f64 / seconds.max(1e-9)));
                let spans = if side == Side::Landlord && in_flight == 1 {
                    landlord_steps(&stack, &trips.iter().map(|t| t.0.clone()).collect::<Vec<_>>()).await?
                } else {
                    HashMap::new()
                };
                for (key, ms, steps) in trips {
                    tally.ms.push(ms);
                    let steps = spans.get(&key).unwrap_or(&steps);
                    if !steps.is_empty() {
                        tally.add_steps(ms, steps);
                    }
                }
            }
        }
        let [l, r, f] =
            Side::ALL.map(|s| tallies.get(&s).map_or((0.0, 0.0, 0.0), |t| (t.p("p50"), t.p("p99"), t.rate())));
        println!(
            "{in_flight:>3} in flight, {rounds} rounds x {} tenants: landlord {:.1}/s p50 {:.1} p99 {:.1} | restate {:.1}/s p50 {:.1} p99 {:.1} | floor {:.1}/s p50 {:.1} p99 {:.1} ({:.0} s so far)",
            n / rounds,
            l.2,
            l.0,
            l.1,
            r.2,
            r.0,
            r.1,
            f.2,
            f.0,
            f.1,
            run.seconds()
        );
        let spread = |side: Side, pick: fn(&(f64, f64), &(f64, f64)) -> f64| {
            let (Some(a), Some(b)) = (per_round.get(&Side::Landlord), per_round.get(&side)) else { return 0.0 };
            let ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| pick(x, y)).collect();
            let (min, max) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            let median = p50(&ratios);
            if median > 0.0 { (max - min) / median } else { 0.0 }
        };
        let p50_spread = spread(Side::Restate, |x, y| x.0 / y.0);
        let rate_spread = spread(Side::Restate, |x, y| x.1 / y.1);
        let ratios = |pick: fn(&(f64, f64), &(f64, f64)) -> f64| -> Vec<f64> {
            match (per_round.get(&Side::Landlord), per_round.get(&Side::Restate)) {
                (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| pick(x, y)).collect(),
                _ => Vec::new(),
            }
        };
        let (p50_mean, p50_sd) = mean_sd(&ratios(|x, y| x.0 / y.0));
        let (rate_mean, rate_sd) = mean_sd(&ratios(|x, y| x.1 / y.1));
        resolution.push(format!(
            "| {in_flight} | {rounds} | {p50_mean:.2} / {p50_sd:.2} | {} | {rate_mean:.2} / {rate_sd:.2} | {} |",
            rounds_for_ten_percent(p50_sd),
            rounds_for_ten_percent(rate_sd),
        ));
        rows.push(format!(
            "| {in_flight} | {rounds} × {} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.2} | {:.2} |",
            n / rounds,
            l.0, l.1, l.2, r.0, r.1, r.2, f.0, f.1, f.2,
            l.0 / r.0, p50_spread * 100.0,
            l.2 / r.2, rate_spread * 100.0,
            l.0 / f.0,
            l.2 / f.2,
        ));
        let mut sides_json = serde_json::Map::new();
        for (side, tally) in &tallies {
            let (cpu, cpu_total) = tally.cpu.per_tenant();
            sides_json.insert(
                side.name().into(),
                serde_json::json!({
                    "latency_ms": summary(tally.ms.clone()),
                    "tenants_per_s": (tally.rate() * 10.0).round() / 10.0,
                    "cpu_ms_per_tenant": cpu,
                    "cpu_ms_per_tenant_total": cpu_total,
                    "rounds_p50_and_rate": per_round.get(side),
                }),
            );
            if in_flight == 64 || (cpu_rows.is_empty() && in_flight == *LEVELS.last().unwrap_or(&64)) {
                let list: Vec<String> =
                    cpu.iter().filter(|(_, ms)| **ms >= 0.05).map(|(k, ms)| format!("{k} {ms:.1}")).collect();
                cpu_rows.push(format!("| {} | {cpu_total:.1} | {} |", side.name(), list.join("; ")));
            }
        }
        levels_json.push(serde_json::json!({
            "in_flight": in_flight,
            "rounds": rounds,
            "tenants_per_side": n,
            "sides": sides_json,
            "landlord_over_restate": {
                "p50": l.0 / r.0, "throughput": l.2 / r.2, "p50_spread": p50_spread, "throughput_spread": rate_spread,
                "per_round_p50": { "mean": p50_mean, "sd": p50_sd, "rounds_for_10_percent": rounds_for_ten_percent(p50_sd) },
                "per_round_throughput": { "mean": rate_mean, "sd": rate_sd, "rounds_for_10_percent": rounds_for_ten_percent(rate_sd) },
            },
            "landlord_over_floor": { "p50": l.0 / f.0, "throughput": l.2 / f.2 },
        }));
        if in_flight == 1 {
            let mut names: Vec<&str> = GRAPH.iter().map(|s| s.name).collect();
            names.push("outside the step calls");
            for name in names {
                let cell = |side: Side| {
                    tallies.get(&side).map_or("–".to_owned(), |t| {
                        let values =
                            if name == "outside the step calls" { Some(&t.outside) } else { t.steps.get(name) };
                        values.filter(|v| !v.is_empty()).map_or("–".to_owned(), |v| format!("{:.1}", p50(v)))
                    })
                };
                breakdown.push_str(&format!(
                    "| {name} | {} | {} | {} |\n",
                    cell(Side::Landlord),
                    cell(Side::Restate),
                    cell(Side::Floor)
                ));
            }
        }
    }
    if cpu_rows.is_empty() {
        cpu_rows.push("| (no level of 64 in flight ran) | | |".into());
    }
    let versions = serde_json::json!({
        "restate-server": sides.restate.version,
        "restate-server --version": command_output(&restate_server_binary().display().to_string(), &["--version"]),
        "restate-sdk": SDK_VERSION,
        "rustc": command_output("rustc", &["--version"]),
        "nats-server": command_output(&landlord_testkit::nats_server_binary()?.display().to_string(), &["--version"]),
        "postgres": command_output(&landlord_testkit::pg_bin_dir()?.join("postgres").display().to_string(), &["--version"]),
        "s3s-fs": "0.14.1",
        "keycloak": "contract double (tests/support)",
    });
    let load = landlord_testkit::bench::load_average();
    let results = serde_json::json!({
        "bench": "peers",
        "tier": "bridge",
        "graph": "idp realm → client → admin user, beside database and beside storage; welcome mail after all (deploy/plans.toml default)",
        "postgres": format!("durable (fsync on); 256 MB of WAL written and checkpointed first ({wal_ahead} segments ready)"),
        "durability": {
            "landlord": "every saga transition is a PostgreSQL commit (fsync on, synchronous_commit on) before its commands go out; commands and results on NATS JetStream file streams; a crash of any process or of the machine loses no acknowledged step",
            "restate": "restate-server 1.7 defaults: every journal entry (a ctx.run result) is appended to Bifrost, the replicated loglet on the node's log-server, whose RocksDB WAL is fsynced on every write batch (log-server.rocksdb-disable-wal-fsync = false), before the run's result is acknowledged to the service; the partition store (RocksDB) is not fsynced and is rebuilt from the log (and snapshots) after a crash; replication factor 1 (one node); a crash of the service or the server loses no acknowledged step",
            "floor": "none: nothing recorded; a crash loses the tenant's progress",
        },
        "compensation_check": compensation,
        "levels": levels_json,
        "machine": machine(),
        "versions": versions,
    });
    let md = format!(
        "# bench-peers: Landlord next to Restate\n\n\
Bridge-tier tenants through three sides on the same backends (one durable PostgreSQL, NATS, s3s-fs, aiosmtpd, the Keycloak contract double, all started by tests/support): \
**landlord** — the five service binaries, latency from the TenantRequested publish to the TenantActivated event; \
**restate** — restate-server (npm `@restatedev/restate-server`, defaults) and a workflow `Provisioning` (bench/peers/restate, restate-sdk {SDK_VERSION}) whose steps are the workers' own code in `ctx.run` blocks (the database's and the bucket's in child invocations of a service `ProvisioningBranch`, issued before the identity chain's runs and awaited after them: restate-sdk {SDK_VERSION} cannot await two runs at once — README.md), latency of the ingress call `POST /Provisioning/<key>/run` (it answers when the workflow ends); \
**floor** — the same step code called directly in the same graph (`join` of the three branches, the mail after them), nothing recorded. \
All three run the default pipeline as a graph (realm → client → admin user, beside the database and beside the bucket, the welcome mail after all) with the same compensation on failure. \
The sides take turns in rounds, the order rotated every round, so that a drift (the tenant database's catalog grows with every tenant; a shared machine's load wanders) weighs on all alike. \
After {WARM_UP_TENANTS} warm-up tenants per side and an ANALYZE of the control plane.\n\n\
Ratios are Landlord's over the other side's (p50: lower is better, goal ≤ 1.0 against Restate at one in flight; throughput: higher is better, goal ≥ 1.2 against Restate at 64). In brackets: the spread of the ratio over the rounds, (max − min) / median.\n\n\
| in flight | rounds × tenants | landlord p50 / p99 ms | landlord tenants/s | restate p50 / p99 ms | restate tenants/s | floor p50 / p99 ms | floor tenants/s | p50 landlord / restate | throughput landlord / restate | p50 landlord / floor | throughput landlord / floor |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|\n{}\n\n\
Whether the rounds tell 10% apart: the Landlord/Restate ratios per round, their mean and standard deviation, and the rounds that two standard errors ≤ 0.10 need at that spread, (2 sd / 0.10)²; enough when that is no more than the rounds run.\n\n\
| in flight | rounds run | p50 ratio mean / sd | rounds needed | tenants/s ratio mean / sd | rounds needed |\n|---|---|---|---|---|---|\n{}\n\n\
Where the time goes at one in flight, p50 ms per step: landlord, the orchestrator's span (command decided → result taken up: the call plus its bus hops and its transition); restate and the floor, the step call itself (inside the `ctx.run` block for restate). \
\"Outside the step calls\": per tenant, its latency minus the longest branch and the mail (restate: journaling each run and the ingress; landlord: intake, the hops of the mail, activation).\n\n\
| part | landlord | restate | floor |\n|---|---|---|---|\n{breakdown}\n\
CPU per tenant at 64 in flight, ms, of every process this bench started, measured during each side's own turns (a process idle in another side's turn still counts its background work there):\n\n\
| side | total | per process |\n|---|---|---|\n{}\n\n\
Durability each one promises:\n\n\
- **landlord**: {}.\n- **restate**: {}.\n- **floor**: {}.\n\n\
Compensation on failure, checked before measuring (the Keycloak double refuses one tenant's admin user with a 400, a permanent failure): restate undid {}; the floor undid {}; the backends (realms, buckets, schemas, roles) held what they held before, on both. Landlord's own compensation is covered by the e2e suite (tests/e2e/tests/e2e/failures.rs).\n\n\
Machine: {}; load average at the end {load} (a 2-core machine shared with other builds and benchmarks: figures wander, the turns keep the ratios fair).\n\n\
Versions: {}\n",
        rows.join("\n"),
        resolution.join("\n"),
        cpu_rows.join("\n"),
        results["durability"]["landlord"].as_str().unwrap_or_default(),
        results["durability"]["restate"].as_str().unwrap_or_default(),
        results["durability"]["floor"].as_str().unwrap_or_default(),
        results["compensation_check"]["restate"]["undone_in_order"],
        results["compensation_check"]["floor"]["undone_in_order"],
        results["machine"],
        results["versions"],
    );
    write_results("peers", results, &md, &run)
}
