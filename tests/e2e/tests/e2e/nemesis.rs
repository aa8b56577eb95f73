//! The nemesis run (issue 22), in the spirit of Jepsen: while tenants are
//! provisioned (every plan), failed on purpose (the Keycloak double answers
//! 500 for their client or admin user), retried (a `TenantRequested` with
//! `retry_of`, as the gateway's retry route sends it) and cancelled (a
//! `CancelSaga` naming the running saga, and stale ones naming a retried
//! tenant's failed saga), a seeded schedule SIGKILLs and restarts services,
//! restarts NATS and PostgreSQL, pauses services (SIGSTOP, SIGCONT a moment
//! later) and holds a worker's commands past their deadline (a pause longer
//! than the step's timeout).
//!
//! Afterwards a checker compares what is left with what is allowed: every
//! tenant ACTIVE, FAILED or CANCELLED as its last saga ended; a saga
//! cancelled only if a cancel named it; no orphan and no missing object
//! (the audit); every ACTIVE tenant's objects in each backend; at most one
//! welcome mail per saga that reached the mail step; and every saga's
//! events on the events stream ending with one terminal event and nothing
//! after it.
//!
//! The seed is printed; `LANDLORD_NEMESIS_SEED` replays the schedule (the
//! moments the services see it still depend on the machine),
//! `LANDLORD_NEMESIS_TENANTS` (default 40) and `LANDLORD_NEMESIS_ROUNDS`
//! (default 10) scale it; `just nemesis` runs a long one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use landlord_contract::{EventKind, TenantKey, pb};
use landlord_e2e::{SERVICES, SHARED_REALM, Stack};
use landlord_runtime::{Envelope, Publisher};
use landlord_testkit::eventually;

/// xorshift64*, seeded: the whole schedule comes from it.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// What the nemesis does in one round.
#[derive(Debug, Clone)]
enum Fault {
    /// SIGKILL, then start again.
    Kill(&'static str),
    /// SIGKILL nats-server, start it again on the same store.
    RestartNats,
    /// Fast shutdown of PostgreSQL (control plane and tenant data), start again.
    RestartPostgres,
    /// SIGSTOP, SIGCONT after the pause.
    Pause(&'static str, Duration),
    /// A worker paused past the step timeout (5 s): the commands sent to it
    /// meanwhile wait past their deadline, and the saga re-drives or fails.
    Delay(&'static str, Duration),
    /// A worker paused longer than all its step's attempts (3 attempts of
    /// 5 s, each re-driven once after its timeout: 30 s): the
    /// sagas waiting on it fail, their compensations wait for it too, and
    /// when it runs again it finds the forward commands of FAILED sagas.
    Outage(&'static str, Duration),
}

/// The schedule: every kind of fault at least once, the rest drawn, shuffled.
fn schedule(rng: &mut Rng, rounds: usize) -> Vec<(Duration, Fault)> {
    const WORKERS: [&str; 4] = ["idp", "database", "storage", "notification"];
    let draw = |rng: &mut Rng, kind: u64| match kind {
        0 => Fault::Kill(SERVICES[rng.below(SERVICES.len() as u64) as usize]),
        1 => Fault::RestartNats,
        2 => Fault::RestartPostgres,
        3 => Fault::Pause(SERVICES[rng.below(SERVICES.len() as u64) as usize], rng.millis(500, 3_000)),
        4 => Fault::Delay(WORKERS[rng.below(WORKERS.len() as u64) as usize], rng.millis(6_000, 9_000)),
        // Not the database worker: its step's 20 s timeout would make it two minutes.
        _ => Fault::Outage(["idp", "storage"][rng.below(2) as usize], rng.millis(31_000, 35_000)),
    };
    let mut faults: Vec<Fault> = (0..6).map(|kind| draw(rng, kind)).collect();
    while faults.len() < rounds {
        // Kills and pauses are the commonest faults, as in a deployment.
        let kind = [0, 0, 0, 0, 1, 2, 3, 3, 3, 4, 4, 5][rng.below(12) as usize];
        faults.push(draw(rng, kind));
    }
    for i in (1..faults.len()).rev() {
        faults.swap(i, rng.below(i as u64 + 1) as usize);
    }
    faults.into_iter().map(|fault| (rng.millis(300, 1_500), fault)).collect()
}

/// One tenant of the workload and what happens to it.
#[derive(Debug)]
struct Tenant {
    key: String,
    plan: &'static str,
    /// Keycloak answers 500 to this tenant's `POST …/<doom>` until the
    /// failures are cleared: its first saga fails half-way through idp.
    doom: Option<&'static str>,
    /// Cancelled while its saga runs.
    cancel: bool,
    /// Retried if FAILED once the failures are cleared.
    retry: bool,
    /// After the retry, a cancel naming the failed saga is sent too.
    stale_cancel: bool,
    /// When its request goes out: the doomed ones in a round of the first
    /// half (their failures are cleared after it), the others at a steady
    /// pace over the whole schedule, so that every fault finds sagas in
    /// flight (a pause too).
    publish: Publish,
    published: bool,
    cancel_sent: bool,
    /// The failed saga it was retried from.
    retried_from: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Publish {
    InRound(usize),
    After(Duration),
}

/// The workload: publishes requests, cancels and retries as the schedule
/// and the control plane's state call for them, between faults.
struct Workload {
    tenants: Vec<Tenant>,
    /// Half the rounds: the doomed requests are out by then.
    publish_rounds: usize,
    round: usize,
    rounds: usize,
    began: Instant,
    cleared: bool,
    rng: Rng,
    /// Every saga a `CancelSaga` named.
    cancelled: BTreeSet<String>,
    publisher: Publisher,
    log: Vec<String>,
}

fn request_of(tenant: &Tenant) -> pb::TenantRequested {
    let key = &tenant.key;
    pb::TenantRequested {
        idempotency_id: format!("nemesis-{key}"),
        key: key.clone(),
        display_name: format!("{key} Inc."),
        plan: tenant.plan.to_owned(),
        admin: Some(pb::AdminContact { email: admin_of(key), first_name: "Ada".into(), last_name: "Lovelace".into() }),
        domains: vec![format!("{key}.example.com")],
        source: "nemesis".into(),
        ..Default::default()
    }
}

fn admin_of(key: &str) -> String {
    format!("admin@{key}.test")
}

/// Publishes until the broker takes it (it may be restarting); spacing
/// attempts, not waiting for an outcome.
async fn publish<M: landlord_contract::CeType>(
    publisher: &Publisher,
    subject: String,
    message: &M,
    envelope: &Envelope,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match publisher.publish(subject.clone(), message, envelope).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() < deadline => {
                tracing_note(&format!("publish to {subject} failed, again: {error}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => return Err(error).with_context(|| format!("publish to {subject}")),
        }
    }
}

fn tracing_note(text: &str) {
    if std::env::var_os("LANDLORD_NEMESIS_VERBOSE").is_some() {
        println!("nemesis: {text}");
    }
}

impl Workload {
    /// Does what is due now. Database trouble (PostgreSQL restarting) only
    /// postpones to the next tick.
    async fn tick(&mut self, stack: &Stack) -> Result<()> {
        for i in 0..self.tenants.len() {
            let due = self.round >= self.rounds
                || match self.tenants[i].publish {
                    Publish::InRound(round) => round <= self.round,
                    Publish::After(at) => self.began.elapsed() >= at,
                };
            if self.tenants[i].published || !due {
                continue;
            }
            let tenant = &self.tenants[i];
            if let Some(path) = tenant.doom {
                stack.keycloak.fail_next_to(
                    "POST",
                    &format!("/admin/realms/tenant-{}/{path}", tenant.key),
                    100_000,
                    500,
                );
            }
            let request = request_of(tenant);
            let key = TenantKey::parse(&tenant.key)?;
            let subject = stack.namespace.event_subject(&key, EventKind::Requested);
            publish(&self.publisher, subject, &request, &Envelope::new(request.idempotency_id.clone())).await?;
            self.tenants[i].published = true;
        }
        let Ok(mut control) = stack.control().await else { return Ok(()) };
        let rows: Vec<(String, String, String, Option<String>, i64)> = match sqlx::query_as(
            "SELECT t.key, t.id::text, t.status,
                    (SELECT s.id::text FROM sagas s WHERE s.tenant_id = t.id AND s.state = 'running'
                     ORDER BY s.created_at DESC LIMIT 1),
                    (SELECT count(*) FROM sagas s WHERE s.tenant_id = t.id)
             FROM tenants t",
        )
        .fetch_all(&mut control)
        .await
        {
            Ok(rows) => rows,
            Err(_) => return Ok(()),
        };
        let state: BTreeMap<String, (String, String, Option<String>, i64)> =
            rows.into_iter().map(|(key, id, status, running, sagas)| (key, (id, status, running, sagas))).collect();

        // Cancels: once the saga runs, at a moment drawn tick by tick.
        for i in 0..self.tenants.len() {
            let tenant = &self.tenants[i];
            if !tenant.cancel || tenant.cancel_sent {
                continue;
            }
            let Some((_, _, Some(saga), _)) = state.get(&tenant.key) else { continue };
            if !self.rng.chance(50) {
                continue;
            }
            let saga = saga.clone();
            self.send_cancel(stack, &tenant.key.clone(), &saga, "nemesis: cancel while it runs").await?;
            self.tenants[i].cancel_sent = true;
        }

        // Retries: once the doomed tenants' first sagas have ended, clear
        // the failures and retry what FAILED.
        let settled = |status: &str| matches!(status, "ACTIVE" | "FAILED" | "CANCELLED");
        if !self.cleared && self.round >= self.publish_rounds {
            let doomed_done = self.tenants.iter().filter(|t| t.doom.is_some()).all(|t| {
                t.published
                    && state.get(&t.key).is_some_and(|(_, status, running, _)| settled(status) && running.is_none())
            });
            if doomed_done {
                stack.keycloak.clear_failures();
                self.cleared = true;
                self.log.push(format!("round {}: Keycloak failures cleared", self.round));
            }
        }
        if self.cleared {
            for i in 0..self.tenants.len() {
                let tenant = &self.tenants[i];
                let Some((id, status, _, sagas)) = state.get(&tenant.key) else { continue };
                if !tenant.retry || tenant.retried_from.is_some() || status != "FAILED" {
                    continue;
                }
                let failed: Option<String> = sqlx::query_scalar(
                    "SELECT id::text FROM sagas WHERE tenant_id = $1::uuid ORDER BY created_at DESC LIMIT 1",
                )
                .bind(id)
                .fetch_optional(&mut control)
                .await
                .ok()
                .flatten();
                let Some(failed) = failed else { continue };
                // As the gateway's retry route sends it.
                let mut request = request_of(tenant);
                request.idempotency_id = format!("retry:{id}:{sagas}");
                request.retry_of = Some(id.clone());
                let key = TenantKey::parse(&tenant.key)?;
                let subject = stack.namespace.event_subject(&key, EventKind::Requested);
                publish(&self.publisher, subject, &request, &Envelope::new(format!("nemesis.{id}.retry.{sagas}")))
                    .await?;
                let key = tenant.key.clone();
                let (stale, cancelling) = (tenant.stale_cancel, tenant.cancel);
                self.tenants[i].retried_from = Some(failed.clone());
                // Some retries are cancelled in turn, once they run.
                if !cancelling && self.rng.chance(25) {
                    self.tenants[i].cancel = true;
                }
                self.log.push(format!("round {}: {key} retried (its saga {failed} FAILED)", self.round));
                if stale {
                    self.send_cancel(stack, &key, &failed, "nemesis: a stale cancel of the failed saga").await?;
                }
            }
        }
        Ok(())
    }

    async fn send_cancel(&mut self, stack: &Stack, key: &str, saga: &str, reason: &str) -> Result<()> {
        let command = pb::CancelSaga {
            tenant_key: key.to_owned(),
            reason: reason.to_owned(),
            requested_by: "nemesis".into(),
            saga_id: saga.to_owned(),
        };
        let envelope = Envelope::new(format!("nemesis.{saga}.cancel")).tenant(key).correlation(saga);
        let cancel = landlord_contract::Action::ORCHESTRATOR_CANCEL;
        publish(&self.publisher, stack.namespace.command_subject(cancel.service, cancel.name), &command, &envelope)
            .await?;
        self.cancelled.insert(saga.to_owned());
        self.log.push(format!("round {}: cancel {key} saga {saga} ({reason})", self.round));
        Ok(())
    }

    /// Every request out, failures cleared, every FAILED tenant meant for a
    /// retry retried and that retry's saga started.
    async fn done(&self, stack: &Stack) -> bool {
        if !self.cleared || self.tenants.iter().any(|t| !t.published) {
            return false;
        }
        let Ok(mut control) = stack.control().await else { return false };
        let rows: Vec<(String, String, i64)> = match sqlx::query_as(
            "SELECT t.key, t.status, (SELECT count(*) FROM sagas s WHERE s.tenant_id = t.id) FROM tenants t",
        )
        .fetch_all(&mut control)
        .await
        {
            Ok(rows) => rows,
            Err(_) => return false,
        };
        let state: BTreeMap<String, (String, i64)> = rows.into_iter().map(|(k, s, n)| (k, (s, n))).collect();
        self.tenants.iter().all(|t| {
            let Some((status, sagas)) = state.get(&t.key) else { return false };
            let retried_started = t.retried_from.is_none() || *sagas >= 2;
            let not_owed = !(t.retry && t.retried_from.is_none() && status == "FAILED");
            retried_started && not_owed
        })
    }
}

/// Spaces faults: waits `pause`, doing the workload's ticks meanwhile.
async fn hold(stack: &Stack, workload: &mut Workload, pause: Duration) -> Result<()> {
    let until = Instant::now() + pause;
    loop {
        workload.tick(stack).await?;
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(Duration::from_millis(400))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_faults_under_provision_fail_retry_cancel_leave_every_tenant_consistent() -> Result<()> {
    let seed = setting("LANDLORD_NEMESIS_SEED", 0);
    let seed = if seed == 0 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    } else {
        seed
    };
    let tenants = setting("LANDLORD_NEMESIS_TENANTS", 40) as usize;
    let rounds = (setting("LANDLORD_NEMESIS_ROUNDS", 10) as usize).max(5);
    println!("nemesis seed: {seed} (LANDLORD_NEMESIS_SEED={seed} replays it), {tenants} tenants, {rounds} rounds");
    let mut rng = Rng(seed.max(1));
    let faults = schedule(&mut rng, rounds);
    let plans = ["standard", "standard", "free", "enterprise"];
    let count = tenants;
    // What the schedule lasts, about (kills and restarts take a second or two more).
    let span: Duration = faults
        .iter()
        .map(|(spacing, fault)| match fault {
            Fault::Pause(_, pause) | Fault::Delay(_, pause) | Fault::Outage(_, pause) => *spacing + *pause,
            _ => *spacing + Duration::from_secs(1),
        })
        .sum();
    let pace = span / count.max(1) as u32;
    let tenants: Vec<Tenant> = (0..count)
        .map(|i| {
            let plan = plans[rng.below(plans.len() as u64) as usize];
            // Pooled tenants live in the shared realm: no path of their own to fail.
            let doom = (plan != "free" && rng.chance(20)).then(|| ["clients", "users"][rng.below(2) as usize]);
            let cancel = doom.is_none() && rng.chance(15);
            let retry = doom.is_some() || (!cancel && rng.chance(30));
            let stale_cancel = retry && rng.chance(50);
            Tenant {
                key: format!("nem-{i:03}"),
                plan,
                doom,
                cancel,
                retry,
                stale_cancel,
                publish: match doom {
                    Some(_) => Publish::InRound(i * (rounds / 2) / count),
                    None => Publish::After(pace * i as u32),
                },
                published: false,
                cancel_sent: false,
                retried_from: None,
            }
        })
        .collect();
    println!(
        "nemesis workload: {} doomed, {} to cancel, {} to retry if FAILED ({} with a stale cancel); faults: {:?}",
        tenants.iter().filter(|t| t.doom.is_some()).count(),
        tenants.iter().filter(|t| t.cancel).count(),
        tenants.iter().filter(|t| t.retry).count(),
        tenants.iter().filter(|t| t.stale_cancel).count(),
        faults.iter().map(|(_, f)| f).collect::<Vec<_>>(),
    );

    let mut stack = Stack::start().await?;
    let began = Instant::now();
    let broker = stack.connect("nemesis").await?;
    let mut workload = Workload {
        tenants,
        publish_rounds: rounds / 2,
        round: 0,
        rounds,
        began,
        cleared: false,
        rng: Rng(seed.rotate_left(17) | 1),
        cancelled: BTreeSet::new(),
        publisher: Publisher::new(&broker, "nemesis"),
        log: Vec::new(),
    };

    for (round, (spacing, fault)) in faults.iter().enumerate() {
        workload.round = round;
        hold(&stack, &mut workload, *spacing).await?;
        let at = began.elapsed();
        match fault {
            Fault::Kill(name) => {
                stack.kill_service(name);
                stack.start_service(name).await?;
            }
            Fault::RestartNats => stack.nats.restart().await?,
            Fault::RestartPostgres => {
                // Blocking (it waits for connections): off the runtime's threads.
                let pg = &mut stack.pg;
                std::thread::scope(|s| s.spawn(|| pg.restart()).join())
                    .map_err(|_| anyhow::anyhow!("the PostgreSQL restart panicked"))??;
            }
            Fault::Pause(name, pause) | Fault::Delay(name, pause) | Fault::Outage(name, pause) => {
                stack.pause_service(name);
                let held = hold(&stack, &mut workload, *pause).await;
                stack.resume_service(name);
                held?;
            }
        }
        println!("nemesis round {round} at {at:.1?}: {fault:?} done");
    }
    workload.round = rounds;
    let faults_over = began.elapsed();

    // The workload finishes (retries owed once the failures are cleared),
    // then every saga ends.
    let workload = tokio::sync::Mutex::new(workload);
    let finished = eventually("the workload's retries to be sent", Duration::from_secs(300), || async {
        let mut workload = workload.lock().await;
        workload.tick(&stack).await.ok()?;
        workload.done(&stack).await.then_some(())
    })
    .await;
    let workload = workload.into_inner();
    for line in &workload.log {
        println!("nemesis: {line}");
    }
    finished.with_context(|| format!("seed {seed}"))?;
    let settled = eventually("every saga to end", Duration::from_secs(300), || async {
        let mut control = stack.control().await.ok()?;
        let open: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM sagas WHERE state IN ('running', 'compensating'))
                  + (SELECT count(*) FROM tenants WHERE status NOT IN ('ACTIVE', 'FAILED', 'CANCELLED'))",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await;
    let mut control = stack.control().await?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    println!("nemesis outcome: {statuses:?} ({faults_over:.1?} of faults, {:.1?} in all)", began.elapsed());
    if let Err(error) = settled {
        let open: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT t.key, t.status, coalesce(string_agg(s.state, ',' ORDER BY s.created_at), '')
             FROM tenants t LEFT JOIN sagas s ON s.tenant_id = t.id GROUP BY t.key, t.status
             HAVING t.status NOT IN ('ACTIVE', 'FAILED', 'CANCELLED') OR bool_or(s.state IN ('running', 'compensating'))",
        )
        .fetch_all(&mut control)
        .await?;
        let logs = save_logs(&stack, seed)?;
        anyhow::bail!("seed {seed}: {error:#}; still open: {open:?}; statuses {statuses:?}; logs in {logs}");
    }

    let violations = check(&stack, &workload).await?;
    if !violations.is_empty() {
        let logs = save_logs(&stack, seed)?;
        anyhow::bail!(
            "nemesis seed {seed}: {} violation(s):\n  {}\nlogs in {logs}",
            violations.len(),
            violations.join("\n  ")
        );
    }
    println!(
        "nemesis seed {seed}: every check passed in {:.1?}; logs in {}",
        began.elapsed(),
        save_logs(&stack, seed)?
    );
    Ok(())
}

fn save_logs(stack: &Stack, seed: u64) -> Result<String> {
    let path = std::env::temp_dir().join(format!("landlord-nemesis-{seed}.log"));
    std::fs::write(&path, stack.logs())?;
    Ok(path.display().to_string())
}

/// The checker: everything that must hold once every saga has ended.
async fn check(stack: &Stack, workload: &Workload) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let mut control = stack.control().await?;
    let keys: BTreeSet<&str> = workload.tenants.iter().map(|t| t.key.as_str()).collect();

    // Every tenant exists once, in a final status its last saga explains.
    let tenants: Vec<(String, String, String, String)> =
        sqlx::query_as("SELECT key, id::text, status, tier FROM tenants ORDER BY key").fetch_all(&mut control).await?;
    let found: BTreeSet<&str> = tenants.iter().map(|(k, ..)| k.as_str()).collect();
    if found != keys {
        violations.push(format!("tenants {found:?}, asked for {keys:?}"));
    }
    let sagas: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.key, s.id::text, s.state FROM sagas s JOIN tenants t ON t.id = s.tenant_id ORDER BY s.created_at",
    )
    .fetch_all(&mut control)
    .await?;
    let mut sagas_of: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (key, saga, state) in &sagas {
        sagas_of.entry(key).or_default().push((saga, state));
    }
    for (key, _, status, _) in &tenants {
        let last = sagas_of.get(key.as_str()).and_then(|s| s.last());
        let expected = match status.as_str() {
            "ACTIVE" => "succeeded",
            "FAILED" => "failed",
            "CANCELLED" => "cancelled",
            other => {
                violations.push(format!("{key}: status {other} is not final"));
                continue;
            }
        };
        match last {
            Some((_, state)) if *state == expected => {}
            other => violations.push(format!("{key}: {status} but its last saga is {other:?}")),
        }
    }
    // A saga ends cancelled only if a cancel named it (a stale cancel of a
    // failed saga must not stop its retry).
    for (key, saga, state) in &sagas {
        if state == "cancelled" && !workload.cancelled.contains(saga) {
            violations.push(format!("{key}: saga {saga} cancelled, yet no cancel named it"));
        }
    }
    for tenant in &workload.tenants {
        if let Some(failed) = &tenant.retried_from {
            let of = sagas_of.get(tenant.key.as_str()).cloned().unwrap_or_default();
            if !of.iter().any(|(saga, state)| saga == failed && *state == "failed") {
                violations.push(format!("{}: retried from saga {failed}, which is not failed: {of:?}", tenant.key));
            }
            if of.len() != 2 {
                violations.push(format!("{}: retried once, yet {} saga(s): {of:?}", tenant.key, of.len()));
            }
        }
    }

    // A tenant that is not ACTIVE keeps no live resource.
    let leftovers: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT t.key, r.kind, r.external_id FROM resources r JOIN tenants t ON t.id = r.tenant_id
         WHERE t.status <> 'ACTIVE' AND r.deleted_at IS NULL ORDER BY t.key",
    )
    .fetch_all(&mut control)
    .await?;
    for (key, kind, name) in leftovers {
        violations.push(format!("{key}: not ACTIVE, yet its {kind} {name} is recorded live"));
    }

    // No orphan, no missing object.
    if let Err(error) = stack.assert_no_drift().await {
        violations.push(format!("{error:#}"));
    }

    // Every ACTIVE tenant's objects are there, in each backend.
    let mut data = stack.tenant_data().await?;
    let buckets = stack.buckets()?;
    let organizations = stack.keycloak.organizations(SHARED_REALM);
    for (key, id, status, tier) in &tenants {
        if status != "ACTIVE" {
            continue;
        }
        let names = TenantKey::parse(key)?.backend_names();
        let mut missing = Vec::new();
        match tier.as_str() {
            "pooled" => {
                if !organizations.iter().any(|o| o["name"] == key.as_str()) {
                    missing.push("organization".to_owned());
                }
                let row = "SELECT EXISTS (SELECT 1 FROM landlord_pooled.tenants WHERE tenant_id::text = $1)";
                if !exists(&mut data, row, id.clone()).await {
                    missing.push("pooled row".to_owned());
                }
                if !stack.s3.data_dir().join("landlord-pooled").join("tenants").join(key).is_dir() {
                    missing.push("prefix".to_owned());
                }
            }
            tier => {
                if stack.keycloak.realm(&names.realm).is_none() {
                    missing.push(format!("realm {}", names.realm));
                } else if stack.keycloak.users(&names.realm).len() != 1 {
                    missing.push(format!("one admin user in {}", names.realm));
                }
                if !buckets.contains(&names.bucket) {
                    missing.push(format!("bucket {}", names.bucket));
                }
                let role = "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)";
                if !exists(&mut data, role, names.role.clone()).await {
                    missing.push(format!("role {}", names.role));
                }
                let (sql, name) = if tier == "silo" {
                    ("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", names.database.clone())
                } else {
                    ("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", names.schema.clone())
                };
                if !exists(&mut data, sql, name.clone()).await {
                    missing.push(format!("{} {name}", if tier == "silo" { "database" } else { "schema" }));
                }
            }
        }
        if !missing.is_empty() {
            violations.push(format!("{key}: ACTIVE ({tier}) without {}", missing.join(", ")));
        }
    }

    // At most one welcome mail per saga that reached the mail step, and
    // one for each whose mail step succeeded.
    let reached: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT t.key, count(*), count(*) FILTER (WHERE st.state = 'succeeded')
         FROM saga_steps st JOIN sagas s ON s.id = st.saga_id JOIN tenants t ON t.id = s.tenant_id
         WHERE st.name = 'welcome_email' AND st.state NOT IN ('pending', 'skipped') GROUP BY t.key",
    )
    .fetch_all(&mut control)
    .await?;
    let reached: BTreeMap<String, (i64, i64)> = reached.into_iter().map(|(k, r, s)| (k, (r, s))).collect();
    let mails = stack.smtp.mails();
    let (mut welcomes, mut failures, mut welcomed_not_active) = (0, 0, Vec::new());
    let status_of: BTreeMap<&str, &str> = tenants.iter().map(|(k, _, s, _)| (k.as_str(), s.as_str())).collect();
    for tenant in &workload.tenants {
        let to = admin_of(&tenant.key);
        let mine: Vec<_> = mails.iter().filter(|m| m.header("To").is_some_and(|h| h.contains(&to))).collect();
        let welcome = mine.iter().filter(|m| m.header("Subject").is_some_and(|s| s.starts_with("Welcome to"))).count();
        welcomes += welcome;
        // The failure mail: one per saga that ended FAILED (or CANCELLED).
        let ended = sagas_of
            .get(tenant.key.as_str())
            .map_or(0, |of| of.iter().filter(|(_, state)| matches!(*state, "failed" | "cancelled")).count());
        if mine.len() - welcome > ended {
            violations.push(format!(
                "{}: {} failure mails, {ended} saga(s) ended FAILED or CANCELLED",
                tenant.key,
                mine.len() - welcome
            ));
        }
        if welcome > 0 && status_of.get(tenant.key.as_str()) != Some(&"ACTIVE") {
            welcomed_not_active.push(tenant.key.as_str());
        }
        failures += mine.len() - welcome;
        let (allowed, sent) = reached.get(&tenant.key).copied().unwrap_or((0, 0));
        if welcome > allowed as usize || welcome < sent as usize {
            violations.push(format!(
                "{}: {welcome} welcome mails; {allowed} saga(s) reached the mail step, in {sent} it succeeded",
                tenant.key
            ));
        }
    }
    // Allowed (the mail step ran before a cancel or a later failure), yet
    // worth seeing: the admin was welcomed to a tenant that is gone.
    println!(
        "nemesis mails: {welcomes} welcome, {failures} failure; welcome mails to tenants not ACTIVE: \
         {welcomed_not_active:?}"
    );

    // Each saga's history on the events stream: one terminal event, nothing after it.
    violations.extend(check_histories(stack, &tenants).await?);
    Ok(violations)
}

async fn exists(data: &mut sqlx::PgConnection, sql: &'static str, name: String) -> bool {
    sqlx::query_scalar::<_, bool>(sql).bind(name).fetch_one(data).await.unwrap_or(false)
}

async fn check_histories(stack: &Stack, tenants: &[(String, String, String, String)]) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let broker = stack.connect("nemesis-check").await?;
    let mut stream =
        broker.jetstream.get_stream(stack.namespace.stream_name(landlord_contract::StreamKind::Events)).await?;
    let (first, last) = {
        let info = stream.info().await?;
        (info.state.first_sequence, info.state.last_sequence)
    };
    // Per saga: its events' kinds in stream order.
    let mut histories: BTreeMap<(String, String), Vec<EventKind>> = BTreeMap::new();
    let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
    for sequence in first..=last {
        let Ok(message) = stream.get_raw_message(sequence).await else { continue };
        let Some((key, kind)) = stack.namespace.parse_event_subject(message.subject.as_str()) else { continue };
        if kind == EventKind::Rejected {
            *rejected.entry(key.to_owned()).or_default() += 1;
        }
        if matches!(kind, EventKind::Requested | EventKind::Rejected) {
            continue;
        }
        let saga = message
            .headers
            .get(landlord_contract::header::CORRELATION_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        histories.entry((key.to_owned(), saga)).or_default().push(kind);
    }
    println!(
        "nemesis events: {} messages, {} sagas' histories, rejections: {rejected:?}",
        last.saturating_sub(first) + 1,
        histories.len()
    );
    let terminal =
        |k: &EventKind| matches!(k, EventKind::Activated | EventKind::ProvisioningFailed | EventKind::Cancelled);
    let mut last_terminal: BTreeMap<String, EventKind> = BTreeMap::new();
    for ((key, saga), kinds) in &histories {
        if saga.is_empty() {
            violations.push(format!("{key}: events without a saga: {kinds:?}"));
            continue;
        }
        let ends: Vec<&EventKind> = kinds.iter().filter(|k| terminal(k)).collect();
        if ends.iter().any(|k| **k != *ends[0]) {
            violations.push(format!("{key} saga {saga}: terminal events {ends:?}"));
        }
        if let Some(at) = kinds.iter().position(terminal)
            && kinds[at + 1..].iter().any(|k| !terminal(k))
        {
            violations.push(format!("{key} saga {saga}: events after its end: {kinds:?}"));
        }
        if let Some(end) = ends.first() {
            last_terminal.insert(format!("{key} {saga}"), **end);
        }
    }
    // The tenant's status is its last saga's terminal event.
    let mut control = stack.control().await?;
    for (key, id, status, _) in tenants {
        let saga: Option<String> = sqlx::query_scalar(
            "SELECT id::text FROM sagas WHERE tenant_id = $1::uuid ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&mut control)
        .await?;
        let Some(saga) = saga else { continue };
        let want = match status.as_str() {
            "ACTIVE" => EventKind::Activated,
            "FAILED" => EventKind::ProvisioningFailed,
            _ => EventKind::Cancelled,
        };
        match last_terminal.get(&format!("{key} {saga}")) {
            Some(end) if *end == want => {}
            other => {
                violations.push(format!("{key}: {status}, its last saga {saga} ended on the stream with {other:?}"))
            }
        }
    }
    Ok(violations)
}
