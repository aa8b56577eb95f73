//! `just bench-console`: the operator console with 10,000 tenants in the
//! control plane, next to the same queries run bare, in one run. Writes
//! bench/results/console.{json,md}.
//!
//! Real NATS and a durable PostgreSQL (fsync on), started by the testkit;
//! the gateway in-process (`attach`, as its binary does) with 10,000
//! seeded ACTIVE tenants (a finished six-step saga, six resources and two
//! audit entries each), signed in to the console with a session cookie.
//! Open-loop load at 50 requests/s (latency from each request's due time,
//! so a stall is not hidden), each load in slices alternating with its
//! floor:
//!
//! - (a) `GET /console` with a filter taken in turn from: none, status +
//!   tier, a key search (the first page, 50 rows, keyset, no count);
//! - (a') floor: the list's SELECT (`console::filter::select`, the same
//!   function and filter) on a bare pool, no HTTP, no session, no HTML;
//! - (b) `GET /console/tenants/{key}`: tenant, sagas with steps, audit log;
//! - (b') floor: the page's three queries (`read::tenant_view`,
//!   `console::tenant::sagas`, `read::audit`) on a bare pool.
//!
//! Then (c) live views: the CPU of this process (the gateway and the idle
//! client) and of nats-server, at idle, with no live view open and then
//! with 100 open `/console/events` streams (each an ordered consumer on
//! the events stream), over the same span; each view must have received
//! its keep-alive, so the streams were open throughout.
//!
//! `BENCH_CONSOLE_TENANTS` (10,000), `BENCH_CONSOLE_SECONDS` (16 per load;
//! 40 with `BENCH_FULL=1`), `BENCH_CONSOLE_IDLE_SECONDS` (20; 60) change it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_gateway::Tokens;
use landlord_gateway::console::filter::{self, Filter};
use landlord_runtime::{Config, Env, Service};
use landlord_testkit::bench::{Run as BenchRun, machine, write_results};
use landlord_testkit::{NatsServer, Postgres, unique_namespace};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

mod load;
use load::{Pids, Run, clock_ticks, on_client_thread, open_loop, rounded, seed};

const JWT_SECRET: &str = "a-bench-secret-of-at-least-32-bytes!";
const RATE: f64 = 50.0;
const POOL: u32 = 16;
const VIEWS: usize = 100;
const WARMUP: Duration = Duration::from_secs(2);
const SLICE_WARMUP: Duration = Duration::from_millis(500);
const ROUNDS: u32 = 4;
const GOAL_P99_MS: f64 = 20.0;
/// Percent of one core.
const GOAL_IDLE_CPU: f64 = 5.0;

/// The list filter of request `i`: none, status and tier, a key search.
fn list_filter(i: u64, tenants: u64) -> (String, Filter) {
    match i % 3 {
        0 => (String::new(), Filter::default()),
        1 => (
            "?status=ACTIVE&tier=bridge".into(),
            Filter { status: Some("ACTIVE".into()), tier: Some("bridge".into()), ..Filter::default() },
        ),
        _ => {
            let q = format!("bench-{}", (i / 3) % tenants);
            (format!("?q={q}"), Filter { q: Some(q), ..Filter::default() })
        }
    }
}

/// The tenant page's queries, bare.
async fn bare_page(pool: &PgPool, key: &str) -> bool {
    let found =
        landlord_control_plane::read::tenant_view::<landlord_gateway::console::tenant::TenantRow>(pool, key).await;
    let Ok(Some(tenant)) = found else { return false };
    landlord_gateway::console::tenant::sagas(pool, tenant.id).await.is_ok()
        && landlord_control_plane::read::audit(pool, tenant.id, None, 200).await.is_ok()
}

/// Ticks of this process and of nats-server over `span`.
async fn idle_ticks(pids: Pids, span: Duration) -> [u64; 2] {
    let before = pids.ticks();
    tokio::time::sleep(span).await;
    let after = pids.ticks();
    [after[0].saturating_sub(before[0]), after[2].saturating_sub(before[2])]
}

fn percent_of_core(ticks: u64, span: Duration) -> f64 {
    ticks as f64 / clock_ticks() / span.as_secs_f64() * 100.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let bench_run = BenchRun::start();
    let tenants = bench_run.size("BENCH_CONSOLE_TENANTS", 10_000, 10_000);
    let measure = Duration::from_secs(bench_run.size("BENCH_CONSOLE_SECONDS", 16, 40) as u64);
    let idle = Duration::from_secs(bench_run.size("BENCH_CONSOLE_IDLE_SECONDS", 20, 60) as u64);

    let nats = NatsServer::start().await?;
    let postgres = tokio::task::spawn_blocking(|| Postgres::start_with(true)).await??;
    let database = postgres.fresh_database().await?;
    let env = Env::from_pairs([
        ("LANDLORD_NATS_URL", nats.url()),
        ("LANDLORD_NAMESPACE", unique_namespace().root().to_owned()),
        ("LANDLORD_DATABASE_URL", database.url.clone()),
        ("LANDLORD_DATABASE_POOL_SIZE", POOL.to_string()),
    ]);
    let config = load::gateway_config(JWT_SECRET, RATE, None)?;
    let mut service = Service::build(Config::from("gateway", &env)?).await?;
    let gateway = landlord_gateway::attach(&mut service, config).await?;
    let pool = service.database.clone().context("pool")?;
    let stop = service.shutdown_token();
    let running = tokio::spawn(service.run());
    let seeding = std::time::Instant::now();
    let audit = format!(
        "INSERT INTO audit_log (actor, tenant_id, saga_id, action, detail)
         SELECT 'bench', md5('t' || i)::uuid, md5('s' || i)::uuid, a, jsonb_build_object('reason', 'bench')
         FROM generate_series(0, {}) i, unnest(ARRAY['tenant.requested', 'saga.succeeded']) a",
        tenants - 1
    );
    seed(&pool, tenants, &[&audit]).await?;
    let seeded_s = seeding.elapsed().as_secs_f64();

    let api = format!("http://{}", gateway.api_addr);
    let token = Tokens::new(JWT_SECRET.as_bytes(), "landlord", "landlord").mint(
        "bench",
        &["tenants:read".to_owned()],
        Duration::from_secs(3600),
    );
    let http = landlord_runtime::http::client_builder(&Default::default())
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let signed = http
        .post(format!("{api}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await?;
    anyhow::ensure!(signed.status().as_u16() == 303, "console sign-in: {}", signed.status());
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("the session cookie")?
        .to_owned();
    let pids = Pids::find(postgres.port(), &nats.url());
    anyhow::ensure!(pids.postmaster != 0 && pids.nats != 0, "cannot find the servers' processes: {pids:?}");

    let db_url = database.url.clone();
    let n = tenants as u64;
    let loads = {
        let (api, cookie) = (api.clone(), cookie.clone());
        on_client_thread(move || async move {
            let http = landlord_runtime::http::client()?;
            let bare = PgPoolOptions::new().max_connections(POOL).test_before_acquire(false).connect(&db_url).await?;
            let slice = measure / ROUNDS;
            let (mut list, mut list_floor, mut page, mut page_floor) = (vec![], vec![], vec![], vec![]);
            for round in 0..ROUNDS {
                let warmup = if round == 0 { WARMUP } else { SLICE_WARMUP };
                eprintln!(
                    "round {}/{ROUNDS}: (a') floor, (a) list, (b') floor, (b) tenant page; {RATE}/s, {slice:?} each",
                    round + 1
                );
                list_floor.push(
                    open_loop(pids, RATE, warmup, slice, |i| {
                        let (pool, (_, filter)) = (bare.clone(), list_filter(i, n));
                        async move { filter::select(&pool, &filter, None, None, 51).await.is_ok_and(|r| !r.is_empty()) }
                    })
                    .await?,
                );
                list.push(
                    open_loop(pids, RATE, warmup, slice, |i| {
                        let (query, _) = list_filter(i, n);
                        let request = http.get(format!("{api}/console{query}")).header("cookie", &cookie);
                        async move {
                            match request.send().await {
                                Ok(r) if r.status().is_success() => {
                                    r.text().await.is_ok_and(|t| t.contains(r#"data-testid="tenant-row""#))
                                }
                                _ => false,
                            }
                        }
                    })
                    .await?,
                );
                page_floor.push(
                    open_loop(pids, RATE, warmup, slice, |i| {
                        let pool = bare.clone();
                        async move { bare_page(&pool, &format!("bench-{}", (i * 7919) % n)).await }
                    })
                    .await?,
                );
                page.push(
                    open_loop(pids, RATE, warmup, slice, |i| {
                        let url = format!("{api}/console/tenants/bench-{}", (i * 7919) % n);
                        let request = http.get(url).header("cookie", &cookie);
                        async move {
                            match request.send().await {
                                Ok(r) if r.status().is_success() => {
                                    r.text().await.is_ok_and(|t| t.contains(r#"data-testid="audit-entry""#))
                                }
                                _ => false,
                            }
                        }
                    })
                    .await?,
                );
            }
            Ok([Run::merge(list), Run::merge(list_floor), Run::merge(page), Run::merge(page_floor)])
        })
        .await?
    };
    let [list, list_floor, page, page_floor] = loads;

    // (c) Idle CPU with no live view, then with VIEWS of them.
    eprintln!("live views: {idle:?} idle without, then with {VIEWS} open");
    let without = idle_ticks(pids, idle).await;
    let heard = Arc::new(AtomicUsize::new(0));
    let mut views = Vec::new();
    for _ in 0..VIEWS {
        let response = http.get(format!("{api}/console/events")).header("cookie", &cookie).send().await?;
        anyhow::ensure!(response.status().is_success(), "a live view: {}", response.status());
        let heard = heard.clone();
        views.push(tokio::spawn(async move {
            let mut response = response;
            let mut first = true;
            while let Ok(Some(_)) = response.chunk().await {
                if first {
                    heard.fetch_add(1, Ordering::Relaxed);
                    first = false;
                }
            }
        }));
    }
    let with = idle_ticks(pids, idle).await;
    let heard = heard.load(Ordering::Relaxed);
    for view in views {
        view.abort();
    }
    anyhow::ensure!(heard == VIEWS, "only {heard} of {VIEWS} live views heard their keep-alive: not all were open");
    stop.cancel();
    let _ = running.await;

    let gateway_pct = percent_of_core(with[0].saturating_sub(without[0]), idle);
    let nats_pct = percent_of_core(with[1].saturating_sub(without[1]), idle);
    let met = |run: &Run| run.p99() < GOAL_P99_MS && run.errors == 0;
    let views_met = gateway_pct + nats_pct < GOAL_IDLE_CPU;
    let report = json!({
        "benchmark": "console",
        "tenants": tenants,
        "seeding_s": seeded_s,
        "load": format!("open loop, {RATE} requests/s, {} s measured per load in {ROUNDS} slices alternating with its floor; latency from each request's due time", measure.as_secs()),
        "postgres": "durable (fsync on, synchronous_commit on)",
        "gateway": format!("in-process (attach), pool {POOL}; signed in with a session cookie (tenants:read)"),
        "goal": format!("p99 under {GOAL_P99_MS} ms for the list and the tenant page; {VIEWS} open live views under {GOAL_IDLE_CPU}% of a core at idle"),
        "list": list.json(),
        "list_floor": {"what": "console::filter::select with the same filter on a bare pool", "run": list_floor.json()},
        "tenant_page": page.json(),
        "tenant_page_floor": {"what": "read::tenant_view + tenant::sagas + read::audit on a bare pool", "run": page_floor.json()},
        "live_views": {
            "views": VIEWS, "idle_s": idle.as_secs(), "heard_keep_alive": heard,
            "ticks_without": {"this_process": without[0], "nats": without[1]},
            "ticks_with": {"this_process": with[0], "nats": with[1]},
            "added_percent_of_a_core": {"gateway": gateway_pct, "nats": nats_pct},
        },
        "p99_ratio": {"list": list.p99_ratio(&list_floor), "tenant_page": page.p99_ratio(&page_floor)},
        "goal_met": {"list": met(&list), "tenant_page": met(&page), "live_views": views_met},
        "machine": machine(),
        "versions": load::versions()?,
    });
    let yes_no = |b: bool| if b { "met" } else { "not met" };
    let md = format!(
        "# bench-console\n\nThe console with {tenants} tenants in the control plane (each a finished six-step saga, six resources, two audit entries; seeded in {seeded_s:.0} s), the gateway in-process with a pool of {POOL}, a durable PostgreSQL (fsync on) and NATS. Open-loop load at {RATE:.0} requests/s for {} s per load, in {ROUNDS} slices alternating with its floor; each request's latency counts from the moment it was due.\n\n| load | achieved/s | p50 ms | p99 ms | max ms | errors | CPU µs per request: this process / PostgreSQL / NATS |\n|---|---|---|---|---|---|---|\n{}\n{}\n{}\n{}\n\np99 per slice, ms: list {:?}, its floor {:?}; tenant page {:?}, its floor {:?}.\n\n- (a) the list's first page (50 rows, keyset, no count) with a filter taken in turn from none, `status=ACTIVE&tier=bridge` and a key search `q=bench-N`; (a') the same `console::filter::select` with the same filter on a bare sqlx pool (no HTTP, session or HTML).\n- (b) a tenant's page: tenant, sagas with their steps, audit log, rendered; (b') its three queries bare (`read::tenant_view`, `tenant::sagas`, `read::audit`).\n\np99 ratio to the floor: list {:.2}, tenant page {:.2}. Goal p99 < {GOAL_P99_MS} ms: list {}, tenant page {}.\n\n## Live views at idle\n\n{VIEWS} open `/console/events` streams (each an ordered JetStream consumer on the events stream; all {heard} heard their keep-alive), measured over {} s at idle against the same span with none open: the gateway process adds {gateway_pct:.2}% of a core, nats-server {nats_pct:.2}% (ticks without: {} / {}, with: {} / {}). Goal (under {GOAL_IDLE_CPU}% of a core together): {}.\n\nMachine: {}. Versions: {}\n",
        measure.as_secs(),
        list.row("(a) GET /console, filters in turn"),
        list_floor.row("(a') floor: filter::select, bare pool"),
        page.row("(b) GET /console/tenants/{key}"),
        page_floor.row("(b') floor: the page's 3 queries, bare pool"),
        rounded(&list.slice_p99s),
        rounded(&list_floor.slice_p99s),
        rounded(&page.slice_p99s),
        rounded(&page_floor.slice_p99s),
        list.p99_ratio(&list_floor),
        page.p99_ratio(&page_floor),
        yes_no(met(&list)),
        yes_no(met(&page)),
        idle.as_secs(),
        without[0],
        without[1],
        with[0],
        with[1],
        yes_no(views_met),
        report["machine"],
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("console", report, &md, &bench_run)
}
