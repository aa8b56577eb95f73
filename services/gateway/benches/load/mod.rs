//! What the gateway's benchmarks share: an open-loop load generator that
//! counts latency from each request's due time, the CPU of this process,
//! PostgreSQL and NATS from /proc, a client thread of its own, and the
//! seeded tenants.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use landlord_control_plane::Plans;
use landlord_gateway::GatewayConfig;
use landlord_gateway::limits::Limits;
use landlord_testkit::bench::percentile;
use serde_json::{Value, json};
use sqlx::PgPool;

/// One open-loop run, or several merged.
pub struct Run {
    /// Milliseconds from each request's due time to its answer, sorted.
    pub latencies: Vec<f64>,
    pub errors: u64,
    pub achieved_per_s: f64,
    /// How far behind its timetable the client ever sent, ms.
    pub max_send_lag_ms: f64,
    /// Seconds from the first measured due time to the last answer.
    pub span_s: f64,
    /// p99 of each slice, ms.
    pub slice_p99s: Vec<f64>,
    /// CPU ticks used while it ran (warm-up included): this process (the
    /// servers in it and the client), PostgreSQL, NATS; and requests sent.
    pub cpu: [u64; 3],
    pub sent: u64,
}

impl Run {
    pub fn merge(runs: Vec<Run>) -> Run {
        let span_s: f64 = runs.iter().map(|r| r.span_s).sum();
        let mut latencies: Vec<f64> = runs.iter().flat_map(|r| r.latencies.iter().copied()).collect();
        latencies.sort_by(f64::total_cmp);
        Run {
            achieved_per_s: latencies.len() as f64 / span_s.max(1e-9),
            latencies,
            errors: runs.iter().map(|r| r.errors).sum(),
            max_send_lag_ms: runs.iter().map(|r| r.max_send_lag_ms).fold(0.0, f64::max),
            span_s,
            slice_p99s: runs.iter().flat_map(|r| r.slice_p99s.iter().copied()).collect(),
            cpu: runs.iter().fold([0; 3], |acc, r| [acc[0] + r.cpu[0], acc[1] + r.cpu[1], acc[2] + r.cpu[2]]),
            sent: runs.iter().map(|r| r.sent).sum(),
        }
    }

    /// CPU microseconds per request: this process, PostgreSQL, NATS.
    pub fn cpu_us(&self) -> [f64; 3] {
        let per = |ticks: u64| ticks as f64 * 1e6 / clock_ticks() / self.sent.max(1) as f64;
        [per(self.cpu[0]), per(self.cpu[1]), per(self.cpu[2])]
    }

    pub fn json(&self) -> Value {
        json!({
            "requests": self.latencies.len(),
            "errors": self.errors,
            "achieved_per_s": self.achieved_per_s,
            "max_send_lag_ms": self.max_send_lag_ms,
            "p99_ms_per_slice": self.slice_p99s,
            "cpu_us_per_request": {
                "this_process": self.cpu_us()[0], "postgres": self.cpu_us()[1], "nats": self.cpu_us()[2],
            },
            "latency_ms": {
                "p50": percentile(&self.latencies, 0.5),
                "p99": percentile(&self.latencies, 0.99),
                "p999": percentile(&self.latencies, 0.999),
                "max": self.latencies.last().copied().unwrap_or(0.0),
            },
        })
    }

    pub fn row(&self, name: &str) -> String {
        let [process, postgres, nats] = self.cpu_us();
        format!(
            "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {process:.0} / {postgres:.0} / {nats:.0} |",
            self.achieved_per_s,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.latencies.last().copied().unwrap_or(0.0),
            self.errors
        )
    }

    /// This run's p99 over `floor`'s (0 without a floor figure).
    pub fn p99_ratio(&self, floor: &Run) -> f64 {
        if floor.p99() > 0.0 { self.p99() / floor.p99() } else { 0.0 }
    }

    pub fn p99(&self) -> f64 {
        percentile(&self.latencies, 0.99)
    }
}

/// Sends `op(i)` at `rate` per second for `warmup + measure`; only the
/// requests due after the warm-up count. `op` says whether the answer was
/// the expected one.
pub async fn open_loop<F, Fut>(pids: Pids, rate: f64, warmup: Duration, measure: Duration, op: F) -> Result<Run>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let warm = (warmup.as_secs_f64() * rate) as u64;
    let total = warm + (measure.as_secs_f64() * rate) as u64;
    let cpu_before = pids.ticks();
    let start = Instant::now() + Duration::from_millis(20);
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel();
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        max_lag = max_lag.max(due.elapsed());
        let request = op(i);
        let done = done.clone();
        tokio::spawn(async move {
            let ok = request.await;
            let _ = done.send((i, due.elapsed(), ok, Instant::now()));
        });
    }
    drop(done);
    let (mut latencies, mut errors, mut last) = (Vec::new(), 0, start);
    while let Some((i, latency, ok, at)) = results.recv().await {
        if i < warm {
            continue;
        }
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += u64::from(!ok);
        last = last.max(at);
    }
    let cpu_after = pids.ticks();
    latencies.sort_by(f64::total_cmp);
    let measured_from = start + interval.mul_f64(warm as f64);
    let span_s = last.duration_since(measured_from).as_secs_f64();
    Ok(Run {
        achieved_per_s: latencies.len() as f64 / span_s.max(1e-9),
        slice_p99s: vec![percentile(&latencies, 0.99)],
        latencies,
        errors,
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
        span_s,
        cpu: [0, 1, 2].map(|k| cpu_after[k].saturating_sub(cpu_before[k])),
        sent: total,
    })
}

/// The processes whose CPU time is counted.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub postmaster: u32,
    pub nats: u32,
}

/// utime + stime of a process, and its parent, from /proc/PID/stat.
fn stat(pid: &str) -> Option<(u64, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state ppid ... utime is the 12th field on, stime the 13th.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ticks, ppid))
}

pub fn clock_ticks() -> f64 {
    // USER_HZ: 100 on Linux everywhere this runs.
    100.0
}

impl Pids {
    /// Finds the PostgreSQL postmaster listening on `pg_port` and the
    /// nats-server serving `nats_url`, by their command lines.
    pub fn find(pg_port: u16, nats_url: &str) -> Self {
        let nats_port = nats_url.rsplit(':').next().unwrap_or_default().to_owned();
        let (mut postmaster, mut nats) = (0, 0);
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            let has = |flag: &str, value: &str| args.windows(2).any(|w| w[0] == flag && w[1] == value);
            if args.first().is_some_and(|a| a.ends_with("/postgres")) && has("-p", &pg_port.to_string()) {
                postmaster = pid;
            }
            if args.first().is_some_and(|a| a.ends_with("nats-server")) && has("-p", &nats_port) {
                nats = pid;
            }
        }
        Self { postmaster, nats }
    }

    /// CPU ticks so far: this process, the PostgreSQL cluster (postmaster
    /// and its children), nats-server.
    pub fn ticks(self) -> [u64; 3] {
        let own = stat("self").map_or(0, |(t, _)| t);
        let nats = stat(&self.nats.to_string()).map_or(0, |(t, _)| t);
        let mut postgres = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((ticks, ppid)) = stat(&name)
                && (ppid == self.postmaster || name == self.postmaster.to_string())
            {
                postgres += ticks;
            }
        }
        [own, postgres, nats]
    }
}

/// Runs `body` on a thread of its own with a single-threaded runtime: the
/// load generator, kept apart from the servers' runtime.
pub async fn on_client_thread<T, F, Fut>(body: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(body()));
        let _ = tx.send(outcome);
    });
    rx.await.context("the client thread died")?
}

/// `tenants` ACTIVE tenants (`bench-0`…) with a finished six-step saga and
/// six resources each, then `extra` statements, then ANALYZE.
pub async fn seed(pool: &PgPool, tenants: usize, extra: &[&str]) -> Result<()> {
    let steps = "ARRAY['idp_realm','idp_client','idp_admin','database','storage','welcome']";
    let statements = [
        format!(
            "INSERT INTO tenants (id, key, display_name, plan, tier, status, domains, admin_email, admin_first_name,
                                  admin_last_name, labels, source, idempotency_id)
             SELECT md5('t' || i)::uuid, 'bench-' || i, 'Bench tenant ' || i, 'standard', 'bridge', 'ACTIVE',
                    ARRAY['bench-' || i || '.example'], 'admin@bench-' || i || '.example', 'Ada', 'Lovelace',
                    jsonb_build_object('team', 'bench'), 'bench', 'bench:' || i
             FROM generate_series(0, {}) i",
            tenants - 1
        ),
        format!(
            "INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state, finished_at)
             SELECT md5('s' || i)::uuid, md5('t' || i)::uuid, 'provision', 'bench:' || i, 'succeeded', now()
             FROM generate_series(0, {}) i",
            tenants - 1
        ),
        format!(
            "INSERT INTO saga_steps (saga_id, position, name, service, action, compensation, fatal, timeout_ms,
                                     max_attempts, backoff_ms, state, attempts, started_at, finished_at)
             SELECT md5('s' || i)::uuid, p, ({steps})[p + 1], 'svc', 'create', 'delete', true, 30000, 5,
                    ARRAY[500, 2000], 'succeeded', 1, now() - interval '1 minute', now()
             FROM generate_series(0, {}) i, generate_series(0, 5) p",
            tenants - 1
        ),
        format!(
            "INSERT INTO resources (tenant_id, saga_id, step, kind, external_id, metadata)
             SELECT md5('t' || i)::uuid, md5('s' || i)::uuid, ({steps})[p + 1], 'bench.' || p, 'bench-' || i || '-' || p,
                    jsonb_build_object('region', 'local')
             FROM generate_series(0, {}) i, generate_series(0, 5) p",
            tenants - 1
        ),
    ];
    let extra = extra.iter().map(|s| (*s).to_owned());
    for sql in statements.into_iter().chain(extra).chain(["ANALYZE".to_owned()]) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    Ok(())
}

pub fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 100.0).round() / 100.0).collect()
}

fn version(program: std::path::PathBuf, arg: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&std::process::Command::new(program).arg(arg).output()?.stdout).trim().to_owned())
}

/// The gateway's configuration for a benchmark: HS256 tokens signed with
/// `jwt_secret`, the repository's plans, a listener on a free loopback port,
/// and the rate limiter sized ten times above the offered `rate` (one
/// client address sends everything; the limiter still runs on every
/// request).
pub fn gateway_config(
    jwt_secret: &str,
    rate: f64,
    clerk: Option<landlord_gateway::clerk::Settings>,
) -> Result<GatewayConfig> {
    let plans = Plans::load(&landlord_testkit::workspace_root().join("deploy/plans.toml").display().to_string())?;
    Ok(GatewayConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        jwt_secret: Some(jwt_secret.as_bytes().to_vec()),
        jwks: None,
        jwt_audience: "landlord".into(),
        jwt_tenant_claim: "landlord_tenant".into(),
        jwt_issuer: "landlord".into(),
        plans,
        clerk,
        limits: Limits {
            body_bytes: 65_536,
            timeout: Duration::from_secs(10),
            rate_per_second: rate * 10.0,
            burst: rate * 10.0,
        },
        relay_poll: Duration::from_millis(500),
        relay_grace: Duration::from_secs(2),
        deletion_grace: landlord_gateway::tenants::Grace::default(),
        outbound: landlord_gateway::outbound::Settings::default(),
    })
}

/// The servers' and the compiler's versions, for a results file.
pub fn versions() -> Result<Value> {
    Ok(json!({
        "nats_server": version(landlord_testkit::nats_server_binary()?, "--version")?,
        "postgres": version(landlord_testkit::pg_bin_dir()?.join("postgres"), "--version")?,
        "rustc": version("rustc".into(), "--version")?,
    }))
}
