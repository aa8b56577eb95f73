//! `just bench-api`: the gateway's HTTP API under open-loop load, next to
//! a floor measured in the same run. Writes bench/results/api.{json,md}.
//!
//! Real NATS (default fsync policy) and a durable PostgreSQL (fsync on),
//! started by the testkit; the gateway runs in-process (`attach`, as its
//! binary does) with 1,000 seeded ACTIVE tenants (six steps, six resources
//! each). The load is open-loop: request `i` is due at `start + i / rate`
//! and its latency is counted from that due time, not from when it was
//! actually sent, so a stall of the server (or of the client) shows up in
//! the figures instead of silently lowering the rate (coordinated
//! omission). The client runs on its own thread and single-threaded
//! runtime so that the server's work does not delay the timetable.
//!
//! - (a) `GET /v1/tenants/{key}` with a valid HS256 token, through the
//!   whole stack (limiter, access log, auth, the handler's query);
//! - (a') floor: a bare axum route on the same machine running the same
//!   SELECT the handler runs (one statement), directly with sqlx, same pool
//!   size, no auth or middleware;
//! - (b) signed Clerk deliveries (`user.created`, distinct svix-ids),
//!   acknowledged 2xx: verify, de-duplicate, outbox, commit, publish;
//! - (b') floor: the bare PostgreSQL INSERT + COMMIT of an outbox-sized row
//!   at the same rate (one autocommit statement: one round trip, one
//!   durable commit).
//!
//! `BENCH_API_RATE` (default 1000 requests/s) and `BENCH_API_SECONDS`
//! (default 20, after a 2 s warm-up) change the load.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use axum::extract::{Path, State};
use landlord_contract::pb;
use landlord_control_plane::Plans;
use landlord_gateway::clerk::{Settings, SigningSecret};
use landlord_gateway::limits::Limits;
use landlord_gateway::{GatewayConfig, Tokens};
use landlord_runtime::{Config, Env, Service};
use landlord_testkit::bench::{load_average, machine, percentile};
use landlord_testkit::{NatsServer, Postgres, unique_namespace};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const JWT_SECRET: &str = "a-bench-secret-of-at-least-32-bytes!";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TENANTS: usize = 1_000;
const POOL: u32 = 16;
/// WAL written and checkpointed before measuring (see `Postgres::warm_wal`).
const WARM_WAL_MB: u32 = 256;
/// Warm-up before the first slice of each load, and before each later one.
const WARMUP: Duration = Duration::from_secs(2);
const SLICE_WARMUP: Duration = Duration::from_millis(500);
/// Each load and its floor run alternately in this many slices, so that a
/// change in the machine's background load hits both alike.
const ROUNDS: u32 = 4;
const GOAL_P99_MS: f64 = 5.0;

/// One open-loop run, or several merged.
struct Run {
    /// Milliseconds from each request's due time to its answer, sorted.
    latencies: Vec<f64>,
    errors: u64,
    achieved_per_s: f64,
    /// How far behind its timetable the client ever sent, ms.
    max_send_lag_ms: f64,
    /// Seconds from the first measured due time to the last answer.
    span_s: f64,
    /// p99 of each slice, ms.
    slice_p99s: Vec<f64>,
    /// CPU ticks used while it ran (warm-up included): this process (the
    /// servers in it and the client), PostgreSQL, NATS; and requests sent.
    cpu: [u64; 3],
    sent: u64,
}

impl Run {
    fn merge(runs: Vec<Run>) -> Run {
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
    fn cpu_us(&self) -> [f64; 3] {
        let per = |ticks: u64| ticks as f64 * 1e6 / clock_ticks() / self.sent.max(1) as f64;
        [per(self.cpu[0]), per(self.cpu[1]), per(self.cpu[2])]
    }

    fn json(&self) -> Value {
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

    fn row(&self, name: &str) -> String {
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

    fn p99(&self) -> f64 {
        percentile(&self.latencies, 0.99)
    }
}

/// Sends `op(i)` at `rate` per second for `warmup + measure`; only the
/// requests due after the warm-up count. `op` says whether the answer was
/// the expected one.
async fn open_loop<F, Fut>(pids: Pids, rate: f64, warmup: Duration, measure: Duration, op: F) -> Result<Run>
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
struct Pids {
    postmaster: u32,
    nats: u32,
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

fn clock_ticks() -> f64 {
    // USER_HZ: 100 on Linux everywhere this runs.
    100.0
}

impl Pids {
    /// Finds the PostgreSQL postmaster listening on `pg_port` and the
    /// nats-server serving `nats_url`, by their command lines.
    fn find(pg_port: u16, nats_url: &str) -> Self {
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
    fn ticks(self) -> [u64; 3] {
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
async fn on_client_thread<T, F, Fut>(body: F) -> Result<T>
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

/// 1,000 ACTIVE tenants with a finished six-step saga and six resources each.
async fn seed(pool: &PgPool) -> Result<()> {
    let steps = "ARRAY['idp_realm','idp_client','idp_admin','database','storage','welcome']";
    let statements = [
        format!(
            "INSERT INTO tenants (id, key, display_name, plan, tier, status, domains, admin_email, admin_first_name,
                                  admin_last_name, labels, source, idempotency_id)
             SELECT md5('t' || i)::uuid, 'bench-' || i, 'Bench tenant ' || i, 'standard', 'bridge', 'ACTIVE',
                    ARRAY['bench-' || i || '.example'], 'admin@bench-' || i || '.example', 'Ada', 'Lovelace',
                    jsonb_build_object('team', 'bench'), 'bench', 'bench:' || i
             FROM generate_series(0, {}) i",
            TENANTS - 1
        ),
        format!(
            "INSERT INTO sagas (id, tenant_id, operation, idempotency_id, state, finished_at)
             SELECT md5('s' || i)::uuid, md5('t' || i)::uuid, 'provision', 'bench:' || i, 'succeeded', now()
             FROM generate_series(0, {}) i",
            TENANTS - 1
        ),
        format!(
            "INSERT INTO saga_steps (saga_id, position, name, service, action, compensation, fatal, timeout_ms,
                                     max_attempts, backoff_ms, state, attempts, started_at, finished_at)
             SELECT md5('s' || i)::uuid, p, ({steps})[p + 1], 'svc', 'create', 'delete', true, 30000, 5,
                    ARRAY[500, 2000], 'succeeded', 1, now() - interval '1 minute', now()
             FROM generate_series(0, {}) i, generate_series(0, 5) p",
            TENANTS - 1
        ),
        format!(
            "INSERT INTO resources (tenant_id, saga_id, step, kind, external_id, metadata)
             SELECT md5('t' || i)::uuid, md5('s' || i)::uuid, ({steps})[p + 1], 'bench.' || p, 'bench-' || i || '-' || p,
                    jsonb_build_object('region', 'local')
             FROM generate_series(0, {}) i, generate_series(0, 5) p",
            TENANTS - 1
        ),
        // The floor's outbox: the same shape and indexes, but no relay
        // publishes (or deletes) its rows.
        "CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL)".to_owned(),
        "ANALYZE".to_owned(),
    ];
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    Ok(())
}

/// The floor for (a): the SELECT `GET /v1/tenants/{key}` runs (one
/// statement: tenant, resources, latest saga and its steps), with no
/// token, limiter, access log, typed decoding or problem mapping.
async fn bare_tenant(State(pool): State<PgPool>, Path(key): Path<String>) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use sqlx::Row as _;
    let sql = format!("{} WHERE t.key = $1", landlord_control_plane::read::TENANT_VIEW_SQL);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&key).fetch_optional(&pool).await;
    let body = row.and_then(|row| {
        row.map(|r| {
            Ok::<_, sqlx::Error>(json!({
                "id": r.try_get::<uuid::Uuid, _>("id")?,
                "key": r.try_get::<String, _>("key")?,
                "resources": r.try_get::<Value, _>("resources")?,
                "saga": r.try_get::<Option<Value>, _>("saga")?,
            }))
        })
        .transpose()
    });
    match body {
        Ok(Some(body)) => axum::Json(body).into_response(),
        Ok(None) => axum::http::StatusCode::NOT_FOUND.into_response(),
        Err(_) => axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A `user.created` delivery about as large as Clerk's.
fn user_created(i: u64) -> String {
    json!({
        "type": "user.created", "object": "event", "timestamp": 1_716_883_200_000_u64 + i,
        "instance_id": "ins_bench",
        "data": {
            "id": format!("user_bench_{i}"), "object": "user", "username": null,
            "first_name": "Ada", "last_name": "Lovelace", "image_url": "https://img.clerk.com/bench",
            "has_image": false, "primary_email_address_id": format!("idn_bench_{i}"),
            "primary_phone_number_id": null, "primary_web3_wallet_id": null,
            "password_enabled": true, "two_factor_enabled": false, "totp_enabled": false,
            "backup_code_enabled": false, "banned": false, "locked": false,
            "email_addresses": [{
                "id": format!("idn_bench_{i}"), "object": "email_address",
                "email_address": format!("ada.{i}@bench.example"), "reserved": false, "linked_to": [],
                "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null},
                "created_at": 1_716_883_200_000_u64, "updated_at": 1_716_883_200_000_u64
            }],
            "phone_numbers": [], "web3_wallets": [], "passkeys": [], "external_accounts": [],
            "saml_accounts": [], "enterprise_accounts": [],
            "public_metadata": {}, "private_metadata": {}, "unsafe_metadata": {},
            "external_id": null, "last_sign_in_at": null, "last_active_at": null,
            "created_at": 1_716_883_200_000_u64, "updated_at": 1_716_883_200_000_u64,
            "delete_self_enabled": true, "create_organization_enabled": true
        }
    })
    .to_string()
}

/// Microseconds per verification: an HS256 token (signature and claims),
/// and an RS256 signature with a JWKS key (the test-only fixture key).
fn token_verification_cost() -> Result<(f64, f64)> {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let tokens = Tokens::new(JWT_SECRET.as_bytes(), "landlord", "landlord");
    let token = tokens.mint("bench", &["tenants:read".to_owned()], Duration::from_secs(3600));
    let n = 20_000;
    let started = Instant::now();
    for _ in 0..n {
        tokens.verify(&token).map_err(|p| anyhow::anyhow!("{}", p.detail))?;
    }
    let hs256 = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let pair =
        ring::signature::RsaKeyPair::from_pkcs8(include_bytes!("../tests/fixtures/test-only-jwks-key-a.pk8.der"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    let jwks = json!({"keys": [{"kty": "RSA", "kid": "a", "n": b64(&public.n), "e": b64(&public.e)}]});
    let (keys, _) = landlord_gateway::jwks::parse(jwks.to_string().as_bytes()).map_err(anyhow::Error::msg)?;
    let key = keys.get("a").context("key a")?;
    let message = token.as_bytes();
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message, &mut signature)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = 2_000;
    let started = Instant::now();
    for _ in 0..n {
        anyhow::ensure!(key.verify(message, &signature), "RS256 signature");
    }
    let rs256 = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    Ok((hs256, rs256))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn rounded(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| (v * 100.0).round() / 100.0).collect()
}

fn version(program: std::path::PathBuf, arg: &str) -> Result<String> {
    Ok(String::from_utf8_lossy(&std::process::Command::new(program).arg(arg).output()?.stdout).trim().to_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let rate: f64 = std::env::var("BENCH_API_RATE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000.0);
    let seconds: u64 = std::env::var("BENCH_API_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let measure = Duration::from_secs(seconds);
    let load_before = load_average();
    let (hs256_us, rs256_us) = token_verification_cost()?;

    let nats = NatsServer::start().await?;
    let postgres = tokio::task::spawn_blocking(|| Postgres::start_with(true)).await??;
    // Steady state: WAL segments recycled, as on a server that has run.
    let wal_ahead = postgres.warm_wal(WARM_WAL_MB).await?;
    let database = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let env = Env::from_pairs([
        ("LANDLORD_NATS_URL", nats.url()),
        ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
        ("LANDLORD_DATABASE_URL", database.url.clone()),
        ("LANDLORD_DATABASE_POOL_SIZE", POOL.to_string()),
    ]);
    let plans = Plans::load(&landlord_testkit::workspace_root().join("deploy/plans.toml").display().to_string())?;
    let limits = Limits {
        body_bytes: 65_536,
        timeout: Duration::from_secs(10),
        // One client address sends everything: the bucket must hold the
        // offered load (the default, 50/s per address, is for the open
        // internet). The limiter still runs on every request.
        rate_per_second: rate * 10.0,
        burst: rate * 10.0,
    };
    let config = GatewayConfig {
        api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        jwt_secret: Some(JWT_SECRET.as_bytes().to_vec()),
        jwks: None,
        jwt_audience: "landlord".into(),
        jwt_tenant_claim: "landlord_tenant".into(),
        jwt_issuer: "landlord".into(),
        plans,
        clerk: Some(Settings {
            secret: SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?,
            plan: "standard".into(),
            plan_key: "plan".into(),
            delivery_retention: landlord_gateway::clerk::DELIVERY_RETENTION,
            members: landlord_gateway::clerk::MemberSettings::default(),
            admin_wait: Duration::from_secs(3600),
            backend: None,
        }),
        limits,
        relay_poll: Duration::from_millis(500),
        relay_grace: Duration::from_secs(2),
        deletion_grace: landlord_gateway::tenants::Grace::default(),
        outbound: landlord_gateway::outbound::Settings::default(),
    };
    let mut service = Service::build(Config::from("gateway", &env)?).await?;
    let gateway = landlord_gateway::attach(&mut service, config).await?;
    let pool = service.database.clone().context("pool")?;
    let stop = service.shutdown_token();
    let running = tokio::spawn(service.run());
    seed(&pool).await?;

    // The floor's HTTP server: a bare axum route with its own pool, set up
    // as the services' pool is (no ping before each acquire).
    let floor_pool =
        PgPoolOptions::new().max_connections(POOL).test_before_acquire(false).connect(&database.url).await?;
    let floor_router =
        axum::Router::new().route("/tenants/{key}", axum::routing::get(bare_tenant)).with_state(floor_pool.clone());
    let floor_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let floor_addr = floor_listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(floor_listener, floor_router).await;
    });

    let api = format!("http://{}", gateway.api_addr);
    let tokens = Tokens::new(JWT_SECRET.as_bytes(), "landlord", "landlord");
    let token = tokens.mint("bench", &["tenants:read".to_owned()], Duration::from_secs(3600));
    let secret = SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?;
    let sample = user_created(0);
    let outbox_payload = prost::Message::encode_to_vec(&pb::ClerkEvent {
        r#type: "user.created".into(),
        svix_id: "msg_bench_0".into(),
        object_id: "user_bench_0".into(),
        timestamp: 1_716_883_200_000,
        data: sample.clone().into_bytes(),
        instance_id: "ins_bench".into(),
        delivered_at: unix_now(),
    });
    let outbox_bytes = outbox_payload.len();
    let db_url = database.url.clone();
    let pids = Pids::find(postgres.port(), &nats.url());
    anyhow::ensure!(pids.postmaster != 0 && pids.nats != 0, "cannot find the servers' processes: {pids:?}");

    let runs = on_client_thread(move || async move {
        let http = landlord_runtime::http::client()?;
        let insert_pool =
            PgPoolOptions::new().max_connections(POOL).test_before_acquire(false).connect(&db_url).await?;
        let payload = Arc::new(outbox_payload);
        let slice = measure / ROUNDS;
        let (mut floor_get, mut get, mut floor_insert, mut webhook) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sent: u64 = 0;
        for round in 0..ROUNDS {
            let warmup = if round == 0 { WARMUP } else { SLICE_WARMUP };
            eprintln!(
                "round {}/{ROUNDS}: (a') floor, (a) GET, (b') floor, (b) webhook; {rate}/s, {slice:?} each",
                round + 1
            );
            floor_get.push(
                open_loop(pids, rate, warmup, slice, |i| {
                    let request = http.get(format!("http://{floor_addr}/tenants/bench-{}", i % TENANTS as u64));
                    async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
                })
                .await?,
            );
            get.push(
                open_loop(pids, rate, warmup, slice, |i| {
                    let request =
                        http.get(format!("{api}/v1/tenants/bench-{}", i % TENANTS as u64)).bearer_auth(&token);
                    async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
                })
                .await?,
            );
            floor_insert.push(
                open_loop(pids, rate, warmup, slice, |i| {
                    // One statement, committed on its own: INSERT + COMMIT
                    // in one round trip, as the gateway's delivery does.
                    let insert = sqlx::query(
                        "INSERT INTO bench_outbox (subject, msg_id, ce_type, payload)
                         VALUES ('landlord.v1.events._clerk.user_created', $1, 'landlord.v1.ClerkEvent', $2)",
                    )
                    .bind(format!("bench.{}", sent + i))
                    .bind(payload.to_vec());
                    let pool = insert_pool.clone();
                    async move { insert.execute(&pool).await.is_ok() }
                })
                .await?,
            );
            let run = open_loop(pids, rate, warmup, slice, |i| {
                let body = user_created(sent + i);
                let id = format!("msg_bench_{}", sent + i);
                let now = unix_now();
                let request = http
                    .post(format!("{api}/v1/webhooks/clerk"))
                    .header("svix-id", &id)
                    .header("svix-timestamp", now.to_string())
                    .header("svix-signature", secret.sign(&id, now, body.as_bytes()))
                    .header("content-type", "application/json")
                    .body(body);
                async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .await?;
            sent += (rate * (warmup + slice).as_secs_f64()) as u64 + 1;
            webhook.push(run);
        }
        Ok([Run::merge(floor_get), Run::merge(get), Run::merge(floor_insert), Run::merge(webhook)])
    })
    .await?;
    let [floor_get, get, floor_insert, webhook] = runs;
    let load_after = load_average();
    stop.cancel();
    let _ = running.await;

    let ratio = |a: &Run, b: &Run| if b.p99() > 0.0 { a.p99() / b.p99() } else { 0.0 };
    let met = |run: &Run| run.p99() < GOAL_P99_MS && run.errors == 0;
    let report = json!({
        "benchmark": "api",
        "load": format!("open loop, {rate} requests/s, {seconds} s measured per load in {ROUNDS} slices alternating with its floor (warm-up {} s, then {} ms per slice); latency from each request's due time", WARMUP.as_secs(), SLICE_WARMUP.as_millis()),
        "postgres": format!("durable (fsync on, synchronous_commit on); {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit"),
        "nats": "default fsync policy",
        "gateway": format!("in-process (attach), pool {POOL}, rate limiter on at {} requests/s per address, {TENANTS} seeded tenants", rate * 10.0),
        "client": "its own thread and single-threaded tokio runtime; reqwest, HTTP/1.1 keep-alive, loopback",
        "goal": format!("p99 under {GOAL_P99_MS} ms for both"),
        "get_tenant": get.json(),
        "get_tenant_floor": { "what": "bare axum route running the handler's SELECT (one statement) with sqlx, no auth/middleware", "run": floor_get.json() },
        "webhook": webhook.json(),
        "webhook_floor": { "what": format!("bare INSERT + COMMIT (one autocommit statement) of a {outbox_bytes}-byte outbox row"), "run": floor_insert.json() },
        "token_verification_us": { "hs256_token": hs256_us, "rs256_signature": rs256_us },
        "p99_ratio": { "get_tenant": ratio(&get, &floor_get), "webhook": ratio(&webhook, &floor_insert) },
        "goal_met": { "get_tenant": met(&get), "webhook": met(&webhook) },
        "load_average": { "before": load_before, "after": load_after },
        "machine": machine(),
        "versions": {
            "nats_server": version(landlord_testkit::nats_server_binary()?, "--version")?,
            "postgres": version(landlord_testkit::pg_bin_dir()?.join("postgres"), "--version")?,
            "rustc": version("rustc".into(), "--version")?,
        },
    });
    let out = landlord_testkit::workspace_root().join("bench/results");
    std::fs::write(out.join("api.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    let yes_no = |b: bool| if b { "met" } else { "not met" };
    let md = format!(
        "# bench-api\n\nOpen-loop load at {rate:.0} requests/s on loopback for {seconds} s per load, in {ROUNDS} slices alternating with its floor (so a change in the machine's background load hits both alike; {} s warm-up first, {} ms before each later slice); each request's latency counts from the moment it was due, so a stall is not hidden (coordinated omission). Real NATS (default fsync policy) and a durable PostgreSQL (fsync on; {WARM_WAL_MB} MB of WAL written and checkpointed first, so that new WAL segments are recycled ones ({wal_ahead} ready), as on a server that has been running, not created and zero-filled inside a commit); the gateway in-process with a pool of {POOL} and {TENANTS} seeded tenants; the rate limiter on, sized above the offered load (one client address sends everything). The client runs on its own thread.\n\n| load | achieved/s | p50 ms | p99 ms | max ms | errors | CPU µs per request: this process / PostgreSQL / NATS |\n|---|---|---|---|---|---|---|\n{}\n{}\n{}\n{}\n\nCPU per request counts the warm-ups too; \"this process\" is the gateway, the floor's route and the client together.\n\np99 per slice, ms: GET {:?}, its floor {:?}; webhook {:?}, its floor {:?}.\n\n- (a') floor: a bare axum route on the same machine running the SELECT the handler runs (one statement), directly with sqlx, no auth or middleware.\n- (b') floor: the bare PostgreSQL INSERT + COMMIT (one autocommit statement) of a {outbox_bytes}-byte outbox row (the ClerkEvent a delivery becomes), no HTTP.\n\nToken verification, in the same process: an HS256 token {hs256_us:.1} µs, an RS256 signature with a JWKS key {rs256_us:.1} µs.\n\np99 ratio to the floor: GET {:.2}, webhook {:.2}. Goal (p99 < {GOAL_P99_MS} ms): GET {}, webhook {}.\n\nLoad average (1/5/15 min) before: {load_before}; after: {load_after}. Machine: {}. Versions: {}\n",
        WARMUP.as_secs(),
        SLICE_WARMUP.as_millis(),
        get.row("(a) GET /v1/tenants/{key}, HS256 token"),
        floor_get.row("(a') floor: bare route, same SELECT"),
        webhook.row("(b) POST /v1/webhooks/clerk, signed, distinct svix-ids"),
        floor_insert.row("(b') floor: INSERT + COMMIT"),
        rounded(&get.slice_p99s),
        rounded(&floor_get.slice_p99s),
        rounded(&webhook.slice_p99s),
        rounded(&floor_insert.slice_p99s),
        ratio(&get, &floor_get),
        ratio(&webhook, &floor_insert),
        yes_no(met(&get)),
        yes_no(met(&webhook)),
        report["machine"],
        report["versions"],
    );
    std::fs::write(out.join("api.md"), md)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
