//! `just bench-cluster` (issue 28): the full stack at 64 tenants in flight
//! on one nats-server (streams R1) next to a three-node cluster (streams
//! R3), and on the cluster with 1, 2 and 4 orchestrator processes: tenants
//! per second and latency percentiles, from the publish of TenantRequested
//! to TenantActivated. Every configuration gets its own stack (durable
//! PostgreSQL, as deployed) and a warm-up; the other services run one
//! process each. Writes bench/results/cluster.{json,md}.
//!
//! `BENCH_TENANTS` (default 120, 400 with `BENCH_FULL=1`) tenants per
//! configuration, `BENCH_IN_FLIGHT` (64) at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::Stack;
use landlord_runtime::{Envelope, Publisher};
use landlord_testkit::bench::{Run, machine, summary, write_results};
use landlord_testkit::{NatsCluster, scratch_dir};
use tokio::sync::{Semaphore, oneshot};

const WARM_UP: usize = 20;

/// One configuration: a cluster or not, and how many orchestrators.
#[derive(Debug, Clone, Copy)]
struct Setup {
    cluster: bool,
    orchestrators: usize,
}

impl Setup {
    fn name(self) -> String {
        let nats = if self.cluster { "3-node cluster, R3" } else { "1 node, R1" };
        format!("{nats}, {} orchestrator(s)", self.orchestrators)
    }
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<bool>>>>;

/// Publishes requests and waits for each tenant's end event.
struct Driver {
    publisher: Publisher,
    waiters: Waiters,
    dispatch: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// On the stack's bus (the single node, as the operator, or the
    /// cluster's nodes), following the events stream.
    async fn connect(stack: &Stack) -> Result<Self> {
        let broker = stack.connect("bench-cluster").await?;
        let waiters: Waiters = Arc::default();
        let ends = [EventKind::Activated, EventKind::ProvisioningFailed, EventKind::Rejected];
        let filters = ends.map(|kind| stack.namespace.event_filter(None, Some(kind))).to_vec();
        let mut finished = landlord_testkit::follow_events(&broker, filters).await?;
        let dispatch = {
            let waiters = waiters.clone();
            tokio::spawn(async move {
                while let Some(next) = finished.next().await {
                    let Ok(message) = next else { continue };
                    let mut tokens = message.subject.rsplit('.');
                    let ok = tokens.next().and_then(EventKind::from_name) == Some(EventKind::Activated);
                    let key = tokens.next().unwrap_or_default().to_owned();
                    if let Some(waiter) = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&key) {
                        let _ = waiter.send(ok);
                    }
                }
            })
        };
        Ok(Self { publisher: Publisher::new(&broker, "bench-cluster"), waiters, dispatch })
    }

    /// `keys`, `in_flight` at a time: each one's milliseconds, and the
    /// seconds the batch took.
    async fn run(&self, keys: Vec<String>, in_flight: usize) -> Result<(Vec<f64>, f64)> {
        let gate = Arc::new(Semaphore::new(in_flight));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for key in keys {
            let permit = gate.clone().acquire_owned().await?;
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
            let begin = Instant::now();
            let envelope = Envelope::new(request.idempotency_id.clone());
            self.publisher.publish_event(&TenantKey::parse(&key)?, &request, &envelope).await?;
            tasks.push(tokio::spawn(async move {
                let end = tokio::time::timeout(Duration::from_secs(180), rx).await;
                drop(permit);
                match end {
                    Ok(Ok(true)) => Ok(begin.elapsed().as_secs_f64() * 1000.0),
                    other => Err(anyhow::anyhow!("tenant {key} did not become ACTIVE: {other:?}")),
                }
            }));
        }
        let mut ms = Vec::with_capacity(tasks.len());
        for task in tasks {
            ms.push(task.await??);
        }
        Ok((ms, started.elapsed().as_secs_f64()))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.dispatch.abort();
    }
}

/// One configuration on its own stack: `{setup, tenants_per_s, latency}`.
async fn measure(setup: Setup, tenants: usize, in_flight: usize) -> Result<serde_json::Value> {
    let mut stack = Stack::servers_with(true).await?;
    // With the bus users on, as the single node has them.
    let cluster = if setup.cluster { Some(NatsCluster::start_with_accounts(&stack.namespace).await?) } else { None };
    if let Some(cluster) = &cluster {
        stack.use_cluster(cluster);
    }
    stack.start_services().await?;
    let dir = scratch_dir("bench-cluster")?;
    let mut extra = Vec::new();
    for index in 2..=setup.orchestrators {
        extra.push(stack.start_replica("orchestrator", index, &dir).await?);
    }
    let driver = Driver::connect(&stack).await?;
    let tag = if setup.cluster { "c" } else { "s" };
    let warm: Vec<String> = (0..WARM_UP).map(|i| format!("w{tag}{}-{i}", setup.orchestrators)).collect();
    driver.run(warm, in_flight.min(16)).await.context("warm-up")?;
    let keys: Vec<String> = (0..tenants).map(|i| format!("b{tag}{}-{i}", setup.orchestrators)).collect();
    let (ms, seconds) = driver.run(keys, in_flight).await.with_context(|| stack.logs())?;
    let rate = tenants as f64 / seconds;
    println!("{}: {rate:.1} tenants/s, {}", setup.name(), summary(ms.clone()));
    drop(extra);
    Ok(serde_json::json!({
        "setup": setup.name(),
        "cluster": setup.cluster,
        "orchestrators": setup.orchestrators,
        "tenants": tenants,
        "in_flight": in_flight,
        "seconds": seconds,
        "tenants_per_s": rate,
        "latency_ms": summary(ms),
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let tenants = run.size("BENCH_TENANTS", 120, 400);
    let in_flight = run.size("BENCH_IN_FLIGHT", 64, 64);
    let setups = [
        Setup { cluster: false, orchestrators: 1 },
        Setup { cluster: true, orchestrators: 1 },
        Setup { cluster: true, orchestrators: 2 },
        Setup { cluster: true, orchestrators: 4 },
    ];
    let mut results = Vec::new();
    for setup in setups {
        results.push(measure(setup, tenants, in_flight).await?);
    }
    let rate = |i: usize| results[i]["tenants_per_s"].as_f64().unwrap_or(0.0);
    let ratio = rate(1) / rate(0).max(f64::EPSILON);
    let mut md = String::from("# Past one machine: the stack on a three-node NATS cluster\n\n");
    md.push_str(&format!(
        "`just bench-cluster`: {tenants} bridge tenants per configuration at {in_flight} in flight, each \
         configuration on its own stack (durable PostgreSQL, s3s-fs, aiosmtpd, the Keycloak double), after \
         {WARM_UP} warm-up tenants; one process of every other service. Latency from the publish of \
         TenantRequested to TenantActivated. All NATS nodes run on this one 2-core machine, so the cluster \
         pays its replication in the same CPU the services use.\n\n"
    ));
    md.push_str("| configuration | tenants/s | p50 ms | p99 ms |\n|---|---:|---:|---:|\n");
    for result in &results {
        let latency = &result["latency_ms"];
        md.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} |\n",
            result["setup"].as_str().unwrap_or_default(),
            result["tenants_per_s"].as_f64().unwrap_or(0.0),
            latency["p50"].as_f64().unwrap_or(0.0),
            latency["p99"].as_f64().unwrap_or(0.0),
        ));
    }
    let verdict = if ratio >= 0.7 { "met" } else { "not met" };
    md.push_str(&format!(
        "\nThe R3 cluster keeps **{ratio:.2}×** the single node's throughput with one orchestrator (goal ≥ 0.7×: \
         {verdict}).\n"
    ));
    let json = serde_json::json!({
        "machine": machine(),
        "tenants": tenants,
        "in_flight": in_flight,
        "results": results,
        "r3_over_single": ratio,
    });
    write_results("cluster", json, &md, &run)
}
