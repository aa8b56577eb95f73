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
//! (default 12, 20 with `BENCH_FULL=1`, after a 2 s warm-up) change the load.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use axum::extract::{Path, State};
use landlord_contract::pb;
use landlord_gateway::Tokens;
use landlord_gateway::clerk::{Settings, SigningSecret};
use landlord_runtime::{Config, Env, Service};
use landlord_testkit::bench::{load_average, machine};
use landlord_testkit::{NatsServer, Postgres, unique_namespace};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

mod load;
use load::{Pids, Run, on_client_thread, open_loop, rounded, seed};

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

#[tokio::main]
async fn main() -> Result<()> {
    let rate: f64 = std::env::var("BENCH_API_RATE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000.0);
    let bench_run = landlord_testkit::bench::Run::start();
    // 12 s per load by default (4 loads, so about two minutes with the
    // warm-ups and the seeding), 20 with BENCH_FULL=1.
    let seconds = bench_run.size("BENCH_API_SECONDS", 12, 20) as u64;
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
    let clerk = Settings {
        secret: SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?,
        plan: "standard".into(),
        plan_key: "plan".into(),
        delivery_retention: landlord_gateway::clerk::DELIVERY_RETENTION,
        members: landlord_gateway::clerk::MemberSettings::default(),
        admin_wait: Duration::from_secs(3600),
        backend: None,
    };
    let config = load::gateway_config(JWT_SECRET, rate, Some(clerk))?;
    let mut service = Service::build(Config::from("gateway", &env)?).await?;
    let gateway = landlord_gateway::attach(&mut service, config).await?;
    let pool = service.database.clone().context("pool")?;
    let stop = service.shutdown_token();
    let running = tokio::spawn(service.run());
    // The floor's outbox: the same shape and indexes, but no relay
    // publishes (or deletes) its rows.
    seed(&pool, TENANTS, &["CREATE TABLE bench_outbox (LIKE outbox INCLUDING ALL)"]).await?;

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
                        "INSERT INTO bench_outbox (subject, msg_id, ce_type, payload, relay)
                         VALUES ('landlord.v1.events._clerk.user_created', $1, 'landlord.v1.ClerkEvent', $2, 'gateway')",
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
    // A failed floor request returns at once: its latencies would be no floor.
    anyhow::ensure!(
        floor_get.errors == 0 && floor_insert.errors == 0,
        "a floor failed: {} GET and {} INSERT errors",
        floor_get.errors,
        floor_insert.errors
    );
    let load_after = load_average();
    stop.cancel();
    let _ = running.await;

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
        "p99_ratio": { "get_tenant": get.p99_ratio(&floor_get), "webhook": webhook.p99_ratio(&floor_insert) },
        "goal_met": { "get_tenant": met(&get), "webhook": met(&webhook) },
        "load_average": { "before": load_before, "after": load_after },
        "machine": machine(),
        "versions": load::versions()?,
    });
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
        get.p99_ratio(&floor_get),
        webhook.p99_ratio(&floor_insert),
        yes_no(met(&get)),
        yes_no(met(&webhook)),
        report["machine"],
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    landlord_testkit::bench::write_results("api", report, &md, &bench_run)
}
