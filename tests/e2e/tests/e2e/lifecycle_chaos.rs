//! Chaos over the lifecycle (issue 25): 100 operations — provisions,
//! suspends, resumes and offboardings with a short grace period (so purges
//! too) — each tenant's operations one after the other, all tenants at
//! once, through the gateway, while a seeded schedule SIGKILLs and restarts
//! every service, the gateway included. A request the gateway did not
//! answer is sent again with the same Idempotency-Key, as a client does.
//!
//! Afterwards: every tenant in the status its last operation asked for (an
//! operation that failed leaves the status it found), nothing half-done in
//! the backends (a SUSPENDED tenant's realm disabled, role NOLOGIN, bucket
//! marked; an ACTIVE one's the opposite; a DELETED one's objects all gone),
//! and the orphan audit clean. `LANDLORD_CHAOS_SEED` replays the schedule.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use landlord_e2e::{GATEWAY, Operation, SERVICES, Stack};

use crate::support::Dice;

const TENANTS: usize = 30;
const OPERATIONS: usize = 100;

/// One tenant's script: its plan, and the operations after its provision.
#[derive(Debug)]
struct Script {
    key: String,
    plan: &'static str,
    operations: Vec<Operation>,
}

/// Draws scripts of valid operations in sequence: from ACTIVE suspend or
/// offboard, from SUSPENDED resume or offboard; an offboarding ends the
/// script (its purge follows when the grace period ends).
fn scripts(dice: &mut Dice) -> Vec<Script> {
    let plans = ["standard", "standard", "standard", "free", "free", "enterprise"];
    let mut scripts: Vec<Script> = (0..TENANTS)
        .map(|i| Script {
            key: format!("lc-{i:02}"),
            plan: plans[dice.below(plans.len() as u64) as usize],
            operations: Vec::new(),
        })
        .collect();
    let mut suspended = [false; TENANTS];
    let mut done = [false; TENANTS];
    let mut left = OPERATIONS - TENANTS;
    while left > 0 {
        let i = dice.below(TENANTS as u64) as usize;
        if done[i] {
            if done.iter().all(|d| *d) {
                break;
            }
            continue;
        }
        let operation = match (suspended[i], dice.below(10)) {
            (_, 0..=1) => Operation::offboard(1),
            (false, _) => Operation::suspend(),
            (true, _) => Operation::Resume,
        };
        done[i] = matches!(operation, Operation::Offboard { .. });
        suspended[i] = matches!(operation, Operation::Suspend { .. });
        scripts[i].operations.push(operation);
        left -= 1;
    }
    scripts
}

/// What happened to one tenant: its expected status, and each operation's
/// outcome.
#[derive(Debug)]
struct Run {
    key: String,
    expected: String,
    log: Vec<String>,
}

/// Sends a request until the gateway answers it with something other than
/// a 5xx (it may be down, or restarting), under one Idempotency-Key.
async fn send(stack: &Stack, key: &str, operation: &Operation, idempotency: &str) -> Result<landlord_e2e::Answer> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match stack.ask_with(key, operation, idempotency).await {
            Ok(answer) if answer.status < 500 => return Ok(answer),
            other if Instant::now() > deadline => anyhow::bail!("{key}: {operation:?} never answered: {other:?}"),
            // A client's retry schedule, not a wait for a condition.
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Provisions through the API, retried under one Idempotency-Key.
async fn create(stack: &Stack, key: &str, plan: &str) -> Result<landlord_e2e::Answer> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match stack.create(key, plan, &format!("create-{key}")).await {
            Ok(answer) if answer.status < 500 => return Ok(answer),
            other if Instant::now() > deadline => anyhow::bail!("{key}: provision never answered: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until `key` leaves the statuses an operation passes through.
async fn settle(stack: &Stack, key: &str, transient: &[&str]) -> Result<String> {
    landlord_testkit::eventually(&format!("{key} to settle"), Duration::from_secs(150), || async {
        let row = stack.tenant_row(key).await.ok()?;
        let running: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sagas WHERE tenant_id = $1::uuid AND state IN ('running', 'compensating')",
        )
        .bind(&row.id)
        .fetch_one(&mut stack.control().await.ok()?)
        .await
        .ok()?;
        (!transient.contains(&row.status.as_str()) && running == 0).then_some(row.status)
    })
    .await
}

async fn play(stack: &Stack, script: &Script) -> Result<Run> {
    let mut run = Run { key: script.key.clone(), expected: "ACTIVE".into(), log: Vec::new() };
    let answer = create(stack, &script.key, script.plan).await?;
    anyhow::ensure!(answer.status == 202, "{}: provision answered {answer}", script.key);
    let status = settle(stack, &script.key, &["PENDING", "PROVISIONING", "COMPENSATING"]).await?;
    run.log.push(format!("provision → {status}"));
    if status != "ACTIVE" {
        run.expected = status;
        return Ok(run);
    }
    for (n, operation) in script.operations.iter().enumerate() {
        let answer = send(stack, &script.key, operation, &format!("chaos-{}-{n}", script.key)).await?;
        anyhow::ensure!(answer.status == 202, "{}: {operation:?} answered {answer}", script.key);
        let saga = answer.saga_id().with_context(|| format!("{}: no saga in {answer}", script.key))?;
        let end = stack.wait_saga(&saga, Duration::from_secs(150)).await?;
        run.log.push(format!("{operation:?} → {} {}", end.state, end.tenant.status));
        if end.state == "succeeded" {
            run.expected = operation.leads_to().unwrap_or(&run.expected).to_owned();
        }
        if matches!(operation, Operation::Offboard { .. }) && end.state == "succeeded" {
            // The grace period is a second: the purge follows.
            run.expected = "DELETED".into();
            let status = settle(stack, &script.key, &["DELETION_SCHEDULED", "DEPROVISIONING"]).await?;
            run.log.push(format!("purge → {status}"));
        }
    }
    Ok(run)
}

/// What must hold in the backends for a tenant in `status`.
async fn check_backends(stack: &Stack, key: &str, tier: &str, status: &str) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let names = landlord_contract::TenantKey::parse(key)?.backend_names();
    let suspended = status == "SUSPENDED";
    match status {
        "DELETED" | "FAILED" => {
            let left = stack.backend_objects(key).await?;
            if !left.is_empty() {
                violations.push(format!("{key}: {status}, yet {left:?} left"));
            }
        }
        "ACTIVE" | "SUSPENDED" => {
            let enabled = if tier == "pooled" {
                stack.keycloak.organizations(landlord_e2e::SHARED_REALM).into_iter().find(|o| o["name"] == key)
            } else {
                stack.keycloak.realm(&names.realm)
            }
            .map(|r| r["enabled"].as_bool().unwrap_or(true));
            if enabled != Some(!suspended) {
                violations.push(format!("{key}: {status}, its realm or organization enabled: {enabled:?}"));
            }
            let marker = if tier == "pooled" {
                stack.s3.data_dir().join("landlord-pooled/tenants").join(key).join(".landlord-suspended")
            } else {
                stack.s3.data_dir().join(&names.bucket).join(".landlord-suspended")
            };
            if marker.exists() != suspended {
                violations.push(format!("{key}: {status}, its suspension marker there: {}", marker.exists()));
            }
            if tier != "pooled" {
                let can_login: Option<bool> = sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
                    .bind(&names.role)
                    .fetch_optional(&mut stack.tenant_data().await?)
                    .await?;
                if can_login != Some(!suspended) {
                    violations.push(format!("{key}: {status}, its role can log in: {can_login:?}"));
                }
            }
        }
        other => violations.push(format!("{key}: status {other} is not an end")),
    }
    Ok(violations)
}

#[tokio::test]
async fn chaos_every_service_killed_during_a_hundred_lifecycle_operations_yet_every_tenant_ends_as_asked() -> Result<()>
{
    let began = Instant::now();
    let stack = Stack::start_with_gateway().await?;
    let mut dice = Dice::new();
    let scripts = scripts(&mut dice);
    let operations: usize = scripts.iter().map(|s| 1 + s.operations.len()).sum();
    println!("lifecycle chaos: {operations} operations over {TENANTS} tenants");
    let workload = {
        let stack = &stack;
        let scripts = &scripts;
        async move { futures_util::future::join_all(scripts.iter().map(|s| play(stack, s))).await }
    };
    // The killer: every second or two, a random service, the gateway
    // included, SIGKILLed and started again — until the workload is done.
    let mut services: Vec<&'static str> = SERVICES.to_vec();
    services.push(GATEWAY);
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let killer = async {
        let mut kills = Vec::new();
        loop {
            let pause = Duration::from_millis(800 + dice.below(1_200));
            tokio::select! {
                _ = &mut done_rx => break,
                () = tokio::time::sleep(pause) => {}
            }
            let name = services[dice.below(services.len() as u64) as usize];
            stack.restart_service(name).await?;
            kills.push(name);
        }
        anyhow::Ok(kills)
    };
    let (runs, kills) = tokio::join!(
        async {
            let runs = workload.await;
            let _ = done_tx.send(());
            runs
        },
        killer
    );
    let kills = kills?;
    println!("lifecycle chaos: {} kills: {kills:?} ({:.1?})", kills.len(), began.elapsed());
    let mut violations = Vec::new();
    let mut tally = std::collections::BTreeMap::new();
    for run in runs {
        let run = match run {
            Ok(run) => run,
            Err(error) => {
                violations.push(format!("{error:#}"));
                continue;
            }
        };
        let row = stack.tenant_row(&run.key).await?;
        *tally.entry(row.status.clone()).or_insert(0) += 1;
        if row.status != run.expected {
            violations.push(format!(
                "{}: {} but its last operation asked for {}: {:?}",
                run.key, row.status, run.expected, run.log
            ));
        }
        violations.extend(check_backends(&stack, &run.key, &row.tier, &row.status).await?);
    }
    if let Err(error) = stack.assert_no_drift().await {
        violations.push(format!("{error:#}"));
    }
    println!("lifecycle chaos: {tally:?} in {:.1?}", began.elapsed());
    if !violations.is_empty() {
        let logs = std::env::temp_dir().join("landlord-lifecycle-chaos.log");
        std::fs::write(&logs, stack.logs())?;
        anyhow::bail!("{} violation(s):\n  {}\nlogs in {}", violations.len(), violations.join("\n  "), logs.display());
    }
    Ok(())
}
