//! `just bench-lifecycle`: the lifecycle of bridge-tier tenants through the
//! whole system — the service binaries and the gateway as processes, NATS,
//! a durable PostgreSQL, s3s-fs, aiosmtpd and the Keycloak contract double
//! — next to the floor: the same backend calls (the workers' own step code)
//! made directly, in sequence per tenant, at the same concurrency.
//!
//! Three operations per tenant, each timed on its own:
//! - **suspend**: `POST /v1/tenants/{key}/suspend` → `TenantSuspended`
//!   received; floor: idp, database and storage `suspend` and the
//!   notification `send_suspended`;
//! - **resume**: `POST …/resume` → `TenantResumed`; floor: the `resume`
//!   steps and `send_resumed`;
//! - **delete**: `DELETE /v1/tenants/{key}` with no grace period and no
//!   export (the scope `tenants:purge`) → `TenantDeleted`: the offboard
//!   saga (the suspend steps, the mail), the purge timer, the purge saga;
//!   floor: the same suspend steps, `send_deletion_scheduled`, then idp,
//!   database and storage `purge` and `send_deleted`.
//!
//! The stack runs the shipped graphs (tests/e2e/src/lib.rs as
//! deploy/plans.toml: the backends' suspends and resumes side by side, the
//! mail after them; the offboard's exports after their suspends).
//!
//! `BENCH_TENANTS` (default 60, 200 with `BENCH_FULL=1`) tenants per level
//! and side, `BENCH_LEVELS` (default 1,16). The stack and the floor take turns per level. Writes
//! bench/results/lifecycle.{json,md}.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::{Operation, Stack};
use landlord_runtime::{DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretsKey, StepService};
use landlord_testkit::bench::{Run, command_output, machine, summary, write_results};
use tokio::sync::{Semaphore, oneshot};

const LEVELS: [usize; 2] = [1, 16];
const OPERATIONS: [&str; 3] = ["suspend", "resume", "delete"];
const PROVISION: [(&str, &str); 6] = [
    ("idp", "create_realm"),
    ("idp", "create_client"),
    ("idp", "create_admin_user"),
    ("database", "provision"),
    ("storage", "create_bucket"),
    ("notification", "send_welcome"),
];

/// The floor's steps of each operation, in pipeline order.
fn floor_steps(operation: &str) -> &'static [(&'static str, &'static str)] {
    match operation {
        "suspend" => {
            &[("idp", "suspend"), ("database", "suspend"), ("storage", "suspend"), ("notification", "send_suspended")]
        }
        "resume" => {
            &[("idp", "resume"), ("database", "resume"), ("storage", "resume"), ("notification", "send_resumed")]
        }
        _ => &[
            ("idp", "suspend"),
            ("database", "suspend"),
            ("storage", "suspend"),
            ("notification", "send_deletion_scheduled"),
            ("idp", "purge"),
            ("database", "purge"),
            ("storage", "purge"),
            ("notification", "send_deleted"),
        ],
    }
}

/// The event that ends an operation through the stack.
fn end_event(operation: &str) -> EventKind {
    match operation {
        "suspend" => EventKind::Suspended,
        "resume" => EventKind::Resumed,
        _ => EventKind::Deleted,
    }
}

type Waiters = Arc<Mutex<HashMap<(String, EventKind), oneshot::Sender<bool>>>>;

/// Asks the gateway and waits for the operation's end event.
struct Driver {
    waiters: Waiters,
    dispatch: tokio::task::JoinHandle<()>,
    publisher: Publisher,
}

impl Driver {
    async fn connect(stack: &Stack) -> Result<Self> {
        // As the operator, following the events stream (a bus user may not
        // subscribe to event subjects plainly).
        let broker = stack.connect("bench").await?;
        let publisher = Publisher::new(&broker, "bench");
        let waiters: Waiters = Arc::default();
        let kinds = [
            EventKind::Activated,
            EventKind::ProvisioningFailed,
            EventKind::Suspended,
            EventKind::Resumed,
            EventKind::Deleted,
            EventKind::OperationFailed,
            EventKind::OperationRejected,
        ];
        let filters = kinds.map(|kind| stack.namespace.event_filter(None, Some(kind))).to_vec();
        let mut events = landlord_testkit::follow_events(&broker, filters).await?;
        let dispatch = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                while let Some(next) = events.next().await {
                    let Ok(message) = next else { continue };
                    let mut tokens = message.subject.rsplit('.');
                    let Some(kind) = tokens.next().and_then(EventKind::from_name) else { continue };
                    let key = tokens.next().unwrap_or_default().to_owned();
                    let mut waiters = waiters.lock().unwrap_or_else(|p| p.into_inner());
                    let failed = matches!(
                        kind,
                        EventKind::ProvisioningFailed | EventKind::OperationFailed | EventKind::OperationRejected
                    );
                    if failed {
                        let mine: Vec<_> = waiters.keys().filter(|(k, _)| *k == key).cloned().collect();
                        for waiter in mine {
                            if let Some(tx) = waiters.remove(&waiter) {
                                let _ = tx.send(false);
                            }
                        }
                    } else if let Some(tx) = waiters.remove(&(key, kind)) {
                        let _ = tx.send(true);
                    }
                }
            })
        };
        Ok(Self { waiters, dispatch, publisher })
    }

    fn expect(&self, key: &str, kind: EventKind) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert((key.to_owned(), kind), tx);
        rx
    }

    /// Provisions `keys` through the stack, `in_flight` at a time.
    async fn provision(self: &Arc<Self>, keys: &[String], in_flight: usize) -> Result<()> {
        let gate = Arc::new(Semaphore::new(in_flight));
        let mut tasks = Vec::new();
        for key in keys {
            let permit = gate.clone().acquire_owned().await?;
            let request = pb::TenantRequested {
                idempotency_id: format!("bench-{key}"),
                key: key.clone(),
                display_name: key.clone(),
                plan: "standard".into(),
                admin: Some(admin(key)),
                domains: vec![format!("{key}.example.com")],
                source: "bench".into(),
                ..Default::default()
            };
            let done = self.expect(key, EventKind::Activated);
            self.publisher
                .publish_event(&TenantKey::parse(key)?, &request, &Envelope::new(request.idempotency_id.clone()))
                .await?;
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let ok = tokio::time::timeout(Duration::from_secs(120), done).await;
                drop(permit);
                anyhow::ensure!(matches!(ok, Ok(Ok(true))), "{key} did not become ACTIVE");
                Ok(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }

    /// One operation on `keys` through the stack, `in_flight` at a time:
    /// each latency from the request to the end event, in ms.
    async fn run(
        self: &Arc<Self>,
        stack: &Arc<Stack>,
        operation: &str,
        keys: &[String],
        in_flight: usize,
    ) -> Result<Vec<f64>> {
        let gate = Arc::new(Semaphore::new(in_flight));
        let mut tasks = Vec::new();
        for key in keys {
            let permit = gate.clone().acquire_owned().await?;
            let (driver, stack, key, operation) = (self.clone(), stack.clone(), key.clone(), operation.to_owned());
            tasks.push(tokio::spawn(async move {
                let asked = match operation.as_str() {
                    "suspend" => Operation::suspend(),
                    "resume" => Operation::Resume,
                    _ => Operation::Offboard { reason: "bench".into(), grace: Some(0), export: false },
                };
                let done = driver.expect(&key, end_event(&operation));
                let began = Instant::now();
                let answer = stack.ask(&key, &asked).await?;
                anyhow::ensure!(answer.status == 202, "{key}: {operation} answered {answer}");
                let ok = tokio::time::timeout(Duration::from_secs(120), done).await;
                let ms = began.elapsed().as_secs_f64() * 1000.0;
                drop(permit);
                anyhow::ensure!(matches!(ok, Ok(Ok(true))), "{key}: {operation} did not end well: {ok:?}");
                Ok(ms)
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        for task in tasks {
            latencies.push(task.await??);
        }
        Ok(latencies)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.dispatch.abort();
    }
}

fn admin(key: &str) -> pb::AdminContact {
    pb::AdminContact { email: format!("admin@{key}.test"), first_name: "Ada".into(), last_name: "Lovelace".into() }
}

/// The workers' own step code, in process.
struct Direct {
    idp: landlord_idp::Idp,
    database: landlord_database::Provisioner,
    storage: landlord_storage::Storage,
    notifier: landlord_notification::Notifier,
    serial: std::sync::atomic::AtomicU64,
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
            serial: Default::default(),
        })
    }

    /// `steps` for the tenant, in sequence, each fed the outputs before it.
    async fn steps(&self, spec: &pb::TenantSpec, steps: &[(&str, &str)], saga: &str) -> Result<()> {
        let mut inputs = HashMap::new();
        for (service, action) in steps {
            let command = pb::StepCommand {
                saga_id: saga.to_owned(),
                step: (*action).into(),
                attempt: 1,
                tenant: Some(spec.clone()),
                inputs: inputs.clone(),
                ..Default::default()
            };
            // Unique per command: the mail ledger de-duplicates on it.
            let delivery = DeliveryInfo::direct(self.serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
            let outcome = match *service {
                "idp" => self.idp.run(action, &command, &delivery).await,
                "database" => self.database.run(action, &command, &delivery).await,
                "storage" => self.storage.run(action, &command, &delivery).await,
                _ => self.notifier.run(action, &command, &delivery).await,
            };
            let ok = outcome.map_err(|f| anyhow::anyhow!("{} {service}.{action}: {f}", spec.key))?;
            inputs.extend(ok.outputs);
        }
        Ok(())
    }

    fn spec(key: &str) -> pb::TenantSpec {
        pb::TenantSpec {
            tenant_id: tenant_id(key),
            key: key.to_owned(),
            display_name: key.to_owned(),
            plan: "standard".into(),
            tier: pb::Tier::Bridge as i32,
            admin: Some(admin(key)),
            domains: vec![format!("{key}.example.com")],
            labels: HashMap::new(),
        }
    }
}

/// The floor tenant's id: the same for the same key (the markers name it),
/// a valid v4 UUID.
fn tenant_id(key: &str) -> String {
    let digest = landlord_testkit::sha256_hex(key.as_bytes());
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digest[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// `operation` on `keys` through the floor, `in_flight` at a time (ms each).
async fn floor(direct: &Arc<Direct>, operation: &str, keys: &[String], in_flight: usize) -> Result<Vec<f64>> {
    let gate = Arc::new(Semaphore::new(in_flight));
    let mut tasks = Vec::new();
    for key in keys {
        let permit = gate.clone().acquire_owned().await?;
        let (direct, key, operation) = (direct.clone(), key.clone(), operation.to_owned());
        tasks.push(tokio::spawn(async move {
            let spec = Direct::spec(&key);
            let began = Instant::now();
            direct.steps(&spec, floor_steps(&operation), &format!("floor-{operation}-{key}")).await?;
            let ms = began.elapsed().as_secs_f64() * 1000.0;
            drop(permit);
            anyhow::Ok(ms)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await??);
    }
    Ok(latencies)
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let n = run.size("BENCH_TENANTS", 60, 200);
    let levels: Vec<usize> = match std::env::var("BENCH_LEVELS") {
        Ok(list) => {
            list.split(',').map(|l| l.trim().parse().context("BENCH_LEVELS, e.g. 1,16")).collect::<Result<_>>()?
        }
        Err(_) => LEVELS.to_vec(),
    };
    let mut stack = Stack::servers_with(true).await?;
    stack.overrides = vec![
        ("LANDLORD_TENANT_DATABASE_TIMEOUT".into(), "60s".into()),
        ("LANDLORD_KEYCLOAK_TIMEOUT".into(), "30s".into()),
        ("LANDLORD_SMTP_TIMEOUT".into(), "30s".into()),
    ];
    stack.start_services().await?;
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let stack = Arc::new(stack);
    let direct = Arc::new(Direct::new(&stack).await?);
    let driver = Arc::new(Driver::connect(&stack).await?);

    let mut json_levels = Vec::new();
    let mut rows = Vec::new();
    for &in_flight in &levels {
        let stack_keys: Vec<String> = (0..n).map(|i| format!("ls{in_flight}-{i}")).collect();
        let floor_keys: Vec<String> = (0..n).map(|i| format!("lf{in_flight}-{i}")).collect();
        // The tenants first: through the stack for the stack, through the
        // workers' provisioning steps for the floor.
        driver.provision(&stack_keys, 16).await?;
        let gate = Arc::new(Semaphore::new(16));
        let mut made = Vec::new();
        for key in &floor_keys {
            let permit = gate.clone().acquire_owned().await?;
            let (direct, key) = (direct.clone(), key.clone());
            made.push(tokio::spawn(async move {
                let done = direct.steps(&Direct::spec(&key), &PROVISION, &format!("floor-provision-{key}")).await;
                drop(permit);
                done
            }));
        }
        for task in made {
            task.await??;
        }
        sqlx::query("ANALYZE").execute(&mut stack.control().await?).await?;
        for (round, operation) in OPERATIONS.into_iter().enumerate() {
            // Alternate which side goes first.
            let (mut through_stack, mut through_floor) = (Vec::new(), Vec::new());
            for stack_turn in [round % 2 == 0, round % 2 == 1] {
                if stack_turn {
                    through_stack = driver.run(&stack, operation, &stack_keys, in_flight).await?;
                } else {
                    through_floor = floor(&direct, operation, &floor_keys, in_flight).await?;
                }
            }
            let (s, f) = (summary(through_stack), summary(through_floor));
            let p50 = |v: &serde_json::Value| v["p50"].as_f64().unwrap_or(0.0);
            let p99 = |v: &serde_json::Value| v["p99"].as_f64().unwrap_or(0.0);
            let ratio = p50(&s) / p50(&f).max(0.001);
            println!(
                "{operation:>8} {in_flight:>2} in flight: stack p50 {:.1} p99 {:.1} ms | floor p50 {:.1} p99 {:.1} ms | ratio {ratio:.2}",
                p50(&s),
                p99(&s),
                p50(&f),
                p99(&f)
            );
            rows.push(format!(
                "| {operation} | {in_flight} | {:.1} / {:.1} | {:.1} / {:.1} | {ratio:.2} |",
                p50(&s),
                p99(&s),
                p50(&f),
                p99(&f)
            ));
            json_levels.push(serde_json::json!({
                "operation": operation, "in_flight": in_flight,
                "stack_ms": s, "floor_ms": f, "p50_ratio": ratio,
            }));
        }
    }
    let versions = serde_json::json!({
        "rustc": command_output("rustc", &["--version"]),
        "nats-server": command_output(&landlord_testkit::nats_server_binary()?.display().to_string(), &["--version"]),
        "postgres": command_output(&landlord_testkit::pg_bin_dir()?.join("postgres").display().to_string(), &["--version"]),
        "s3s-fs": "0.14.1",
        "keycloak": "contract double (tests/support)",
        "landlord": command_output("git", &["rev-parse", "--short", "HEAD"]),
    });
    let results = serde_json::json!({
        "bench": "lifecycle",
        "tier": "bridge",
        "tenants_per_level": n,
        "results": json_levels,
        "goal": "p50 ratio ≤ 1.5 at one in flight",
        "machine": machine(),
        "versions": versions,
    });
    let md = format!(
        "# bench-lifecycle\n\n{n} bridge-tier tenants per level and side. Through the stack: the gateway's API (suspend, resume; delete = `DELETE` with no grace period and no export, so the offboard saga, the purge timer and the purge saga) until the operation's event (`TenantSuspended`, `TenantResumed`, `TenantDeleted`) arrives; the plans are the shipped graphs (the backends' suspends and resumes side by side, the mail after them; the offboard's exports after their suspends). The floor: the workers' own step code for the same backend calls, in process, in sequence per tenant (suspend: idp, database, storage suspend + the mail; resume likewise; delete: the suspend steps and the deletion-scheduled mail, then idp, database, storage purge and the deleted mail). Durable PostgreSQL. The stack and the floor alternate which goes first per operation.\n\n| operation | in flight | stack p50 / p99 ms | floor p50 / p99 ms | p50 ratio (goal ≤ 1.5 at 1) |\n|---|---|---|---|---|\n{}\n\nMachine: {}.\n\nVersions: {}\n",
        rows.join("\n"),
        machine(),
        versions
    );
    write_results("lifecycle", results, &md, &run)
}
