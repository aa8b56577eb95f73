//! `just bench-database`: provisioning and compensation latency per tier on
//! a durable PostgreSQL (fsync on), one tenant at a time, and bridge-tier
//! provisioning latency when 100, 1,000 and 10,000 tenant schemas (each
//! with the default seed's 10 tables and its own role) already exist. Goal:
//! flat — at 10,000 within 1.2× of 100. Writes
//! bench/results/database.{json,md}.
//!
//! The worker runs as the service runs it: `Provisioner::run` with the
//! durable secret store and the delivery copy sealed into JetStream KV
//! (a real nats-server). At every scale its floor runs interleaved with
//! it, tenant by tenant in alternating order: the same DDL and seed SQL
//! for a bridge tenant (`landlord_database::bridge_sql`, built by the
//! worker's own statement builders) on a bare sqlx connection in one
//! transaction — no worker, no bus, no idempotency look-ups, no seed
//! verification, no secret store (the SCRAM verifier is computed before
//! the clock starts). Both are reported with the ratio worker/floor.
//!
//! Bounded by default: scales `100,1000,5000` and 60 samples (silo takes a
//! fifth); `BENCH_FULL=1`: `100,1000,10000` and 100 samples.
//! `BENCH_DATABASE_SCALES` and `BENCH_DATABASE_SAMPLES` choose, e.g.
//! `BENCH_DATABASE_SCALES=100,500 BENCH_DATABASE_SAMPLES=20` for a quick
//! check.

use std::time::Instant;

use anyhow::Result;
use landlord_contract::pb;
use landlord_database::seed::Seed;
use landlord_database::{Password, Provisioner, SecretsKey, Settings, Tenant, bridge_sql, open_delivery};
use landlord_runtime::{Broker, DeliveryInfo, Env, StepService};
use landlord_testkit::bench::{Run, machine, percentile, write_results};
use landlord_testkit::{NatsServer, Postgres, unique_namespace};
use sqlx::{Connection as _, PgConnection};

fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

fn command(key: &str, id: &str, tier: pb::Tier, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{key}"),
        step: "database".into(),
        compensate,
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: id.to_owned(),
            key: key.to_owned(),
            tier: tier as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Latency {
    provision: Vec<f64>,
    compensate: Vec<f64>,
}

async fn measure(p: &Provisioner, tier: pb::Tier, prefix: &str, samples: usize, compensate: bool) -> Result<Latency> {
    let mut out = Latency { provision: Vec::new(), compensate: Vec::new() };
    let tenants: Vec<(String, String)> =
        (0..samples).map(|i| (format!("{prefix}-{i}"), uuid::Uuid::new_v4().to_string())).collect();
    for (key, id) in &tenants {
        let start = Instant::now();
        p.run("provision", &command(key, id, tier, false), &delivery()).await?;
        out.provision.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    if compensate {
        for (key, id) in &tenants {
            let start = Instant::now();
            p.run("deprovision", &command(key, id, tier, true), &delivery()).await?;
            out.compensate.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    out.provision.sort_by(f64::total_cmp);
    out.compensate.sort_by(f64::total_cmp);
    Ok(out)
}

/// The floor for one bridge tenant: the worker's DDL and seed SQL, as
/// they are, in one transaction on a bare connection. Returns milliseconds.
async fn floor_once(conn: &mut PgConnection, sql: &[String]) -> Result<f64> {
    let start = Instant::now();
    let mut tx = conn.begin().await?;
    for statement in sql {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str())).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// The floor's statements for tenant `key`, built before the clock starts
/// (the SCRAM verifier costs ~1 ms of CPU the floor leaves out).
fn floor_sql(key: &str, connection_limit: i64, seed: &Seed) -> Result<Vec<String>> {
    let id = uuid::Uuid::new_v4().to_string();
    let command = command(key, &id, pb::Tier::Bridge, false);
    let tenant =
        Tenant::from_command(&command.tenant.clone().unwrap_or_default(), &command).map_err(anyhow::Error::new)?;
    let verifier = Password::generate()?.scram_verifier()?;
    bridge_sql(&tenant, &verifier, connection_limit, seed).map_err(anyhow::Error::new)
}

/// Worker and floor, `samples` bridge tenants each, interleaved (the
/// order alternates) so that both see the same server, cache and catalog
/// size. Returns (worker, floor) milliseconds, sorted.
async fn worker_and_floor(
    p: &Provisioner,
    floor: &mut PgConnection,
    prefix: &str,
    samples: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let seed = Seed::find("default")?;
    let limit = p.settings().connection_limit;
    let (mut worker_ms, mut floor_ms) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let (key, id) = (format!("{prefix}-w{i}"), uuid::Uuid::new_v4().to_string());
        let sql = floor_sql(&format!("{prefix}-f{i}"), limit, &seed)?;
        let worker = async {
            let start = Instant::now();
            p.run("provision", &command(&key, &id, pb::Tier::Bridge, false), &delivery()).await?;
            anyhow::Ok(start.elapsed().as_secs_f64() * 1000.0)
        };
        if i % 2 == 0 {
            worker_ms.push(worker.await?);
            floor_ms.push(floor_once(floor, &sql).await?);
        } else {
            floor_ms.push(floor_once(floor, &sql).await?);
            worker_ms.push(worker.await?);
        }
    }
    worker_ms.sort_by(f64::total_cmp);
    floor_ms.sort_by(f64::total_cmp);
    Ok((worker_ms, floor_ms))
}

/// The 1-, 5- and 15-minute load averages, as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Adds filler tenants (role + schema + 10 tables, as the default seed
/// makes) until `target` tenant schemas exist; server-side, in batches.
async fn fill(pool: &sqlx::PgPool, from: usize, target: usize) -> Result<()> {
    let mut next = from;
    while next < target {
        let end = (next + 100).min(target);
        let sql = format!(
            "DO $$ BEGIN FOR i IN {next}..{} LOOP
               EXECUTE format('CREATE ROLE %I NOLOGIN', 'tenant_fill_' || i);
               EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', 'tenant_fill_' || i, 'tenant_fill_' || i);
               EXECUTE format('COMMENT ON SCHEMA %I IS %L', 'tenant_fill_' || i, 'landlord:tenant=filler');
               FOR t IN 1..10 LOOP
                 EXECUTE format('CREATE TABLE %I.%I (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL)',
                                'tenant_fill_' || i, 't' || t);
               END LOOP;
             END LOOP; END $$",
            end - 1
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
        next = end;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let scales: Vec<usize> = std::env::var("BENCH_DATABASE_SCALES")
        .unwrap_or_else(|_| run.pick("100,1000,5000", "100,1000,10000").into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let samples = run.size("BENCH_DATABASE_SAMPLES", 60, 100);
    let load_before = load_average();
    let started = Instant::now();
    let postgres = tokio::task::spawn_blocking(|| Postgres::start_with(true)).await??;
    let db = postgres.fresh_database().await?;
    let settings = Settings::from_env(&Env::from_pairs([
        ("LANDLORD_TENANT_DATABASE_URL", db.url.clone()),
        ("LANDLORD_SECRETS_KEY", SecretsKey::generate()?.to_base64()),
    ]))?;
    // The delivery copy goes where the service puts it: JetStream KV.
    let nats = NatsServer::start().await?;
    let broker = Broker::connect(&nats.url(), "bench-database", unique_namespace()).await?;
    let store = open_delivery(&settings, &broker, 1).await?;
    let p = Provisioner::connect(settings)?.with_delivery(store);
    p.prepare().await?;
    let mut floor = PgConnection::connect(&db.url).await?;

    let mut tiers = serde_json::Map::new();
    let mut tier_rows = String::new();
    for (name, tier, n) in [
        ("bridge", pb::Tier::Bridge, samples),
        ("silo", pb::Tier::Silo, (samples / 5).max(5)),
        ("pooled", pb::Tier::Pooled, samples),
    ] {
        let l = measure(&p, tier, &format!("tier-{name}"), n, true).await?;
        eprintln!("{name}: provision p50 {:.1} ms", percentile(&l.provision, 0.5));
        tier_rows += &format!(
            "| {name} | {n} | {:.1} / {:.1} | {:.1} / {:.1} |\n",
            percentile(&l.provision, 0.5),
            percentile(&l.provision, 0.99),
            percentile(&l.compensate, 0.5),
            percentile(&l.compensate, 0.99)
        );
        tiers.insert(
            name.into(),
            serde_json::json!({
                "samples": n,
                "provision_ms": { "p50": percentile(&l.provision, 0.5), "p99": percentile(&l.provision, 0.99) },
                "compensate_ms": { "p50": percentile(&l.compensate, 0.5), "p99": percentile(&l.compensate, 0.99) },
            }),
        );
    }

    let mut scale_results = Vec::new();
    let mut scale_rows = String::new();
    let mut existing = 0;
    let per_scale = (samples / 2).max(10);
    for &target in &scales {
        let fill_started = Instant::now();
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .fetch_one(p.pool())
            .await?;
        existing = existing.max(usize::try_from(count)?);
        // Worker and floor add `per_scale` tenants each: centred on the target.
        fill(p.pool(), existing, target.saturating_sub(per_scale)).await?;
        let fill_s = fill_started.elapsed().as_secs_f64();
        let (worker, floor_ms) = worker_and_floor(&p, &mut floor, &format!("scale-{target}"), per_scale).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .fetch_one(p.pool())
            .await?;
        let (tables,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_class WHERE relkind = 'r'").fetch_one(p.pool()).await?;
        existing = usize::try_from(count)?;
        let (w50, w99) = (percentile(&worker, 0.5), percentile(&worker, 0.99));
        let (f50, f99) = (percentile(&floor_ms, 0.5), percentile(&floor_ms, 0.99));
        let load = load_average();
        eprintln!(
            "{target} schemas: worker p50 {w50:.1} ms, floor p50 {f50:.1} ms, ratio {:.2} (fill {fill_s:.0}s, load {load})",
            w50 / f50
        );
        scale_rows += &format!(
            "| {target} | {count} | {tables} | {w50:.1} / {w99:.1} | {f50:.1} / {f99:.1} | **{:.2}** / {:.2} | {load} |\n",
            w50 / f50,
            w99 / f99
        );
        scale_results.push(serde_json::json!({
            "schemas_target": target,
            "tenant_schemas_after": count,
            "tables_in_database": tables,
            "samples": per_scale,
            "provision_ms": { "p50": w50, "p99": w99 },
            "floor_ms": { "p50": f50, "p99": f99 },
            "ratio_worker_to_floor": { "p50": w50 / f50, "p99": w99 / f99 },
            "load_average_after": load,
        }));
    }
    let p50 = |i: usize| scale_results.get(i).and_then(|r| r["provision_ms"]["p50"].as_f64()).unwrap_or(0.0);
    let ratio = if scale_results.len() > 1 { p50(scale_results.len() - 1) / p50(0) } else { 1.0 };

    let version = |cmd: std::path::PathBuf, arg: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(&std::process::Command::new(cmd).arg(arg).output()?.stdout).trim().to_owned())
    };
    let load_after = load_average();
    let report = serde_json::json!({
        "benchmark": "database",
        "postgres": "durable (fsync on, synchronous_commit on)",
        "seed": "default@1 (10 tables, 6 rows)",
        "worker": "Provisioner::run with the durable secret store and the delivery copy sealed into JetStream KV (welcome-email)",
        "floor": "the same bridge DDL and seed SQL (landlord_database::bridge_sql) on a bare sqlx connection, one transaction, interleaved with the worker at every scale; no worker, bus, look-ups, seed verification or secret store; SCRAM verifier computed before timing",
        "goal": "bridge provisioning p50 at the largest scale within 1.2x of the smallest",
        "tiers": tiers,
        "bridge_with_existing_schemas": scale_results,
        "ratio_largest_to_smallest_p50": ratio,
        "load_average": { "before": load_before, "after": load_after },
        "duration_s": started.elapsed().as_secs_f64(),
        "machine": machine(),
        "versions": {
            "postgres": version(landlord_testkit::pg_bin_dir()?.join("postgres"), "--version")?,
            "rustc": version("rustc".into(), "--version")?,
        },
    });
    let md = format!(
        "# bench-database\n\nOne tenant at a time through `Provisioner::run` (what the worker does per command: the durable secret store, and the delivery copy of the password sealed into JetStream KV for the welcome mail), on a durable PostgreSQL (fsync on); seed `default@1` (10 tables). Compensation of silo includes DROP DATABASE (a forced checkpoint).\n\n| tier | tenants | provision p50 / p99 ms | compensation p50 / p99 ms |\n|---|---|---|---|\n{tier_rows}\nBridge provisioning with many tenants already there (filler tenants: role + schema + 10 tables each), the worker next to its floor in the same run: the same DDL and seed SQL (`landlord_database::bridge_sql`, from the worker's own statement builders) on a bare sqlx connection in one transaction — no worker, bus, idempotency look-ups, seed verification or secret store — interleaved tenant by tenant, in alternating order, at the same schema counts ({per_scale} tenants each per scale, from {per_scale} below the target to {per_scale} above). Whatever else the machine does moves both columns; the ratio is the figure to compare across runs.\n\n| tenant schemas (target) | after | tables in the database | worker p50 / p99 ms | floor p50 / p99 ms | worker/floor p50 / p99 | load 1/5/15 min after |\n|---|---|---|---|---|---|---|\n{scale_rows}\nRatio of the worker's p50 at the largest to the smallest scale: **{ratio:.2}** (goal ≤ 1.2).\n\nLoad average (1/5/15 min) before the run: {load_before}; after: {load_after}. Run took {:.0} s.\n\nMachine: {}. Versions: {}\n",
        started.elapsed().as_secs_f64(),
        report["machine"],
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("database", report, &md, &run)
}
