//! `just bench-database`: provisioning and compensation latency per tier on
//! a durable PostgreSQL (fsync on), one tenant at a time, and bridge-tier
//! provisioning latency when 100, 1,000 and 10,000 tenant schemas (each
//! with the default seed's 10 tables and its own role) already exist. Goal:
//! flat — at 10,000 within 1.2× of 100. Writes
//! bench/results/database.{json,md}.
//!
//! `BENCH_DATABASE_SCALES` (default `100,1000,10000`) and
//! `BENCH_DATABASE_SAMPLES` (default 100; silo takes a fifth) shorten a run.

use std::time::Instant;

use anyhow::Result;
use landlord_contract::pb;
use landlord_database::{Provisioner, SecretsKey, Settings};
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_testkit::Postgres;
use landlord_testkit::bench::{machine, percentile};

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
    let scales: Vec<usize> = std::env::var("BENCH_DATABASE_SCALES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let samples: usize = std::env::var("BENCH_DATABASE_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(100);
    let postgres = tokio::task::spawn_blocking(|| Postgres::start_with(true)).await??;
    let db = postgres.fresh_database().await?;
    let settings = Settings::from_env(&Env::from_pairs([
        ("LANDLORD_TENANT_DATABASE_URL", db.url.clone()),
        ("LANDLORD_SECRETS_KEY", SecretsKey::generate()?.to_base64()),
    ]))?;
    let p = Provisioner::connect(settings)?;
    p.prepare().await?;

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
        let started = Instant::now();
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .fetch_one(p.pool())
            .await?;
        existing = existing.max(usize::try_from(count)?);
        fill(p.pool(), existing, target.saturating_sub(per_scale / 2)).await?;
        let fill_s = started.elapsed().as_secs_f64();
        let l = measure(&p, pb::Tier::Bridge, &format!("scale-{target}"), per_scale, false).await?;
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant\\_%'")
            .fetch_one(p.pool())
            .await?;
        let (tables,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM pg_class WHERE relkind = 'r'").fetch_one(p.pool()).await?;
        existing = usize::try_from(count)?;
        eprintln!("{target} schemas: provision p50 {:.1} ms (fill {fill_s:.0}s)", percentile(&l.provision, 0.5));
        scale_rows += &format!(
            "| {target} | {count} | {tables} | {:.1} / {:.1} |\n",
            percentile(&l.provision, 0.5),
            percentile(&l.provision, 0.99)
        );
        scale_results.push(serde_json::json!({
            "schemas_target": target,
            "tenant_schemas_after": count,
            "tables_in_database": tables,
            "samples": per_scale,
            "provision_ms": { "p50": percentile(&l.provision, 0.5), "p99": percentile(&l.provision, 0.99) },
        }));
    }
    let p50 = |i: usize| scale_results.get(i).and_then(|r| r["provision_ms"]["p50"].as_f64()).unwrap_or(0.0);
    let ratio = if scale_results.len() > 1 { p50(scale_results.len() - 1) / p50(0) } else { 1.0 };

    let version = |cmd: std::path::PathBuf, arg: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(&std::process::Command::new(cmd).arg(arg).output()?.stdout).trim().to_owned())
    };
    let report = serde_json::json!({
        "benchmark": "database",
        "postgres": "durable (fsync on, synchronous_commit on)",
        "seed": "default@1 (10 tables, 6 rows)",
        "goal": "bridge provisioning p50 at the largest scale within 1.2x of the smallest",
        "tiers": tiers,
        "bridge_with_existing_schemas": scale_results,
        "ratio_largest_to_smallest_p50": ratio,
        "machine": machine(),
        "versions": {
            "postgres": version(landlord_testkit::pg_bin_dir()?.join("postgres"), "--version")?,
            "rustc": version("rustc".into(), "--version")?,
        },
    });
    let out = landlord_testkit::workspace_root().join("bench/results");
    std::fs::write(out.join("database.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    let md = format!(
        "# bench-database\n\nOne tenant at a time through `Provisioner::run` (what the worker does per command), on a durable PostgreSQL (fsync on); seed `default@1` (10 tables). Compensation of silo includes DROP DATABASE (a forced checkpoint).\n\n| tier | tenants | provision p50 / p99 ms | compensation p50 / p99 ms |\n|---|---|---|---|\n{tier_rows}\nBridge provisioning with many tenants already there (filler tenants: role + schema + 10 tables each):\n\n| tenant schemas (target) | after | tables in the database | provision p50 / p99 ms |\n|---|---|---|---|\n{scale_rows}\nRatio of p50 at the largest to the smallest scale: **{ratio:.2}** (goal ≤ 1.2).\n\nMachine: {}. Versions: {}\n",
        report["machine"], report["versions"],
    );
    std::fs::write(out.join("database.md"), md)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
