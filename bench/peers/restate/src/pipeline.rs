//! The default provisioning pipeline (deploy/plans.toml) as a graph, run by
//! an [`Exec`]: Restate's `ctx.run` blocks ([`crate::service`]) or the
//! workers' step code called directly (the floor, [`crate::steps`]).
//!
//! The graph: idp realm → client → admin user, in parallel with the
//! database and with the bucket; the welcome mail after all of them, and
//! not fatal. On a fatal failure no new step starts (a step about to start
//! sees the stop and records itself skipped, inside its `ctx.run` block, so
//! that a replay decides the same); the steps still running are awaited;
//! then everything that ran — the failed step too: it may have done part
//! of its work — is compensated one at a time in reverse order of
//! completion, as the orchestrator does (docs/saga.md, "Steps as a graph").

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use landlord_contract::pb;
use serde::{Deserialize, Serialize};

/// One step of the graph.
#[derive(Debug)]
pub struct Step {
    pub name: &'static str,
    pub service: &'static str,
    pub action: &'static str,
    pub compensation: Option<&'static str>,
    /// A failure does not fail the tenant (the welcome mail).
    pub fatal: bool,
}

/// deploy/plans.toml's `default` pipeline, in file order.
pub const GRAPH: [Step; 6] = [
    Step { name: "idp_realm", service: "idp", action: "create_realm", compensation: Some("delete_realm"), fatal: true },
    Step {
        name: "idp_client",
        service: "idp",
        action: "create_client",
        compensation: Some("delete_client"),
        fatal: true,
    },
    Step {
        name: "idp_admin_user",
        service: "idp",
        action: "create_admin_user",
        compensation: Some("delete_admin_user"),
        fatal: true,
    },
    Step { name: "database", service: "database", action: "provision", compensation: Some("deprovision"), fatal: true },
    Step {
        name: "storage",
        service: "storage",
        action: "create_bucket",
        compensation: Some("delete_bucket"),
        fatal: true,
    },
    Step { name: "welcome_email", service: "notification", action: "send_welcome", compensation: None, fatal: false },
];
/// The idp chain, each after the one before.
const CHAIN: [usize; 3] = [0, 1, 2];
const DATABASE: usize = 3;
const STORAGE: usize = 4;
const MAIL: usize = 5;

/// A created resource, as a step reports it (journaled as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub kind: String,
    pub external_id: String,
    pub metadata: HashMap<String, String>,
}

/// What one call of a step (forward or compensation) left: journaled by
/// Restate as the `ctx.run` block's result, so a replay sees the same.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub ok: bool,
    /// Not started: a fatal failure elsewhere came first.
    pub skipped: bool,
    pub outputs: HashMap<String, String>,
    pub resources: Vec<Resource>,
    pub error: String,
    /// Milliseconds the call took, and when it ended (since the epoch):
    /// the order of completion that compensation reverses.
    pub ms: f64,
    pub finished_ms: f64,
}

impl Record {
    pub fn succeeded(ok: pb::StepOk, ms: f64) -> Self {
        Self {
            ok: true,
            outputs: ok.outputs,
            resources: ok
                .resources
                .into_iter()
                .map(|r| Resource { kind: r.kind, external_id: r.external_id, metadata: r.metadata })
                .collect(),
            ms,
            finished_ms: wall_ms(),
            ..Self::default()
        }
    }

    pub fn failed(error: String, ms: f64) -> Self {
        Self { error, ms, finished_ms: wall_ms(), ..Self::default() }
    }

    pub fn skipped() -> Self {
        Self { skipped: true, finished_ms: wall_ms(), ..Self::default() }
    }
}

/// The tenant a provisioning is for (the workflow's input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub tenant_id: String,
    pub key: String,
    pub plan: String,
    pub email: String,
}

impl Tenant {
    pub fn new(key: &str) -> Self {
        Self {
            tenant_id: uuid::Uuid::new_v4().to_string(),
            key: key.to_owned(),
            plan: "standard".into(),
            email: format!("admin@{key}.test"),
        }
    }

    /// Back from [`Tenant::spec`] (what a child invocation is given).
    pub fn from_spec(spec: &pb::TenantSpec) -> Self {
        Self {
            tenant_id: spec.tenant_id.clone(),
            key: spec.key.clone(),
            plan: spec.plan.clone(),
            email: spec.admin.as_ref().map(|a| a.email.clone()).unwrap_or_default(),
        }
    }

    /// As the orchestrator sends it: a bridge-tier tenant.
    pub fn spec(&self) -> pb::TenantSpec {
        pb::TenantSpec {
            tenant_id: self.tenant_id.clone(),
            key: self.key.clone(),
            display_name: self.key.clone(),
            plan: self.plan.clone(),
            tier: pb::Tier::Bridge as i32,
            admin: Some(pb::AdminContact {
                email: self.email.clone(),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{}.example.com", self.key)],
            labels: HashMap::new(),
        }
    }
}

/// How a provisioning ended (the workflow's output).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub activated: bool,
    pub failed_step: Option<String>,
    /// In the order they were undone.
    pub compensated: Vec<String>,
    /// Each forward step's call, milliseconds (skipped: absent).
    pub step_ms: HashMap<String, f64>,
}

/// Runs one call of a step and returns its record. `stop` is set once a
/// fatal step failed: a forward call that sees it set records itself
/// skipped instead of calling the backend.
pub trait Exec {
    /// Whether [`provision`] polls the three branches together (the floor:
    /// `join3`) or awaits them one after another (Restate: the database
    /// and the bucket are child invocations, already running on their
    /// own, see [`Exec::branch`]; the SDK cannot have two of its futures
    /// waiting for the runtime at once, see `crate::service`).
    const POLL_BRANCHES_TOGETHER: bool;

    fn call(&self, step: usize, command: pb::StepCommand, stop: Arc<AtomicBool>) -> impl Future<Output = Record>;

    /// A branch of one step (the database, the bucket) beside the
    /// identity chain. The floor: `call` of that step, a future polled
    /// together with the chain. Restate: a child invocation, issued when
    /// this is called (so before the chain's first run, in a fixed order),
    /// whose answer the returned future awaits.
    fn branch(
        &self,
        saga: &str,
        tenant: &pb::TenantSpec,
        step: usize,
        stop: Arc<AtomicBool>,
    ) -> impl Future<Output = Record>;
}

/// Milliseconds since the epoch.
pub fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// A stable number per (saga, step, direction): the message id a worker's
/// de-duplication sees (`seq-<n>`), the same on every retry of the call,
/// as a redelivered NATS message keeps its own.
pub fn delivery_sequence(saga: &str, step: &str, compensate: bool) -> u64 {
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in saga.bytes().chain([0]).chain(step.bytes()).chain([u8::from(compensate)]) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash >> 1
}

pub fn command(
    saga: &str,
    tenant: &pb::TenantSpec,
    step: usize,
    compensate: bool,
    inputs: HashMap<String, String>,
    resources: &[Resource],
) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: saga.to_owned(),
        step: GRAPH[step].name.into(),
        compensate,
        attempt: 1,
        tenant: Some(tenant.clone()),
        inputs,
        resources: resources
            .iter()
            .map(|r| pb::Resource {
                kind: r.kind.clone(),
                external_id: r.external_id.clone(),
                metadata: r.metadata.clone(),
            })
            .collect(),
        compensation: GRAPH[step].compensation.unwrap_or_default().into(),
        ..Default::default()
    }
}

/// The forward call of `step` with no inputs (the database, the bucket: a
/// branch of their own); a fatal failure sets `stop`.
pub async fn lone_step<E: Exec>(
    exec: &E,
    saga: &str,
    tenant: &pb::TenantSpec,
    step: usize,
    stop: Arc<AtomicBool>,
) -> Record {
    let record = exec.call(step, command(saga, tenant, step, false, HashMap::new(), &[]), stop.clone()).await;
    if !record.ok && !record.skipped && GRAPH[step].fatal {
        stop.store(true, Ordering::SeqCst);
    }
    record
}

/// One tenant through the graph, with `exec` running each call; `stop` is
/// the tenant's flag that a fatal step failed (shared with its branches).
pub async fn provision<E: Exec>(exec: &E, saga: &str, tenant: &pb::TenantSpec, stop: Arc<AtomicBool>) -> Outcome {
    let forward = |step: usize, inputs: HashMap<String, String>| {
        let stop = stop.clone();
        async move {
            let record = exec.call(step, command(saga, tenant, step, false, inputs, &[]), stop.clone()).await;
            if !record.ok && !record.skipped && GRAPH[step].fatal {
                stop.store(true, Ordering::SeqCst);
            }
            (step, record)
        }
    };
    // The database and the bucket first (Restate: their child
    // invocations are issued here, before the chain's first run, in this
    // order on every replay).
    let database = exec.branch(saga, tenant, DATABASE, stop.clone());
    let storage = exec.branch(saga, tenant, STORAGE, stop.clone());
    let chain = async {
        let mut done = Vec::new();
        let mut inputs = HashMap::new();
        for step in CHAIN {
            let (step, record) = forward(step, inputs.clone()).await;
            let ok = record.ok;
            inputs.extend(record.outputs.clone());
            done.push((step, record));
            if !ok {
                break;
            }
        }
        done
    };
    let (mut done, database, storage) = if E::POLL_BRANCHES_TOGETHER {
        futures_util::future::join3(chain, database, storage).await
    } else {
        let chain = chain.await;
        let database = database.await;
        (chain, database, storage.await)
    };
    done.push((DATABASE, database));
    done.push((STORAGE, storage));
    let mut outcome = Outcome::default();
    for (step, record) in &done {
        if !record.skipped {
            outcome.step_ms.insert(GRAPH[*step].name.into(), record.ms);
        }
    }
    let outputs: HashMap<String, String> =
        done.iter().filter(|(_, r)| r.ok).flat_map(|(_, r)| r.outputs.clone()).collect();
    if done.len() == CHAIN.len() + 2 && done.iter().all(|(_, r)| r.ok) {
        // The welcome mail: not fatal, never compensated.
        let (_, mail) = forward(MAIL, outputs).await;
        outcome.step_ms.insert(GRAPH[MAIL].name.into(), mail.ms);
        outcome.activated = true;
        return outcome;
    }
    outcome.failed_step = done.iter().find(|(_, r)| !r.ok && !r.skipped).map(|(s, _)| GRAPH[*s].name.to_owned());
    // Everything that ran, in reverse order of completion. A dependent
    // completes after its prerequisites, so it is undone before them.
    let mut undo: Vec<&(usize, Record)> =
        done.iter().filter(|(s, r)| !r.skipped && GRAPH[*s].compensation.is_some()).collect();
    undo.sort_by(|a, b| b.1.finished_ms.total_cmp(&a.1.finished_ms));
    for (step, record) in undo {
        let command = command(saga, tenant, *step, true, outputs.clone(), &record.resources);
        // A compensation is retried until it succeeds (its record is only
        // a failure once Restate's retries are exhausted).
        let _ = exec.call(*step, command, Arc::new(AtomicBool::new(false))).await;
        outcome.compensated.push(GRAPH[*step].name.into());
    }
    outcome
}
