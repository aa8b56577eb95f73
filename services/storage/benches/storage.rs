//! `cargo bench -p landlord-storage --bench storage`: latency of the storage
//! steps against a local s3s-fs, one tenant at a time, in one run:
//!
//! - bridge tier: `create_bucket` (marker check, CreateBucket, tagging
//!   attempt, marker write) and `delete_bucket` of an empty tenant bucket
//!   (marker check, listing, DeleteObjects, DeleteBucket);
//! - pooled tier: the same for a prefix in the shared bucket;
//! - the floor: a bare CreateBucket and DeleteBucket on the same client.
//!
//! The rows take turns in rounds. 300 tenants per row by default,
//! 1,000 with `BENCH_FULL=1`, `BENCH_TENANTS` to choose. Writes
//! bench/results/storage.{json,md}.

use std::ops::Range;
use std::time::Instant;

use anyhow::Result;
use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_storage::{Settings, Storage};
use landlord_testkit::bench::{Run, machine, summary, write_results};
use landlord_testkit::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

/// Tenants per row: the default run, and `BENCH_FULL=1`'s.
const TENANTS: (usize, usize) = (300, 1000);
/// Rounds the rows take turns in ([`main`]).
const ROUNDS: usize = 6;
const WARM_UP: usize = 10;

fn command(i: usize, tier: pb::Tier, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{i}"),
        step: "storage".into(),
        compensate,
        attempt: 1,
        tenant: Some(pb::TenantSpec {
            tenant_id: format!("id-{i}"),
            key: format!("bench-{i}"),
            tier: tier as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

/// Creates then deletes tenants `tenants` of `tier`, timing each step.
async fn steps(storage: &Storage, tier: pb::Tier, tenants: Range<usize>, times: &mut [Vec<f64>; 2]) -> Result<()> {
    for i in tenants {
        let started = Instant::now();
        storage.run("create_bucket", &command(i, tier, false), &delivery()).await?;
        times[0].push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        storage.run("delete_bucket", &command(i, tier, true), &delivery()).await?;
        times[1].push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

/// The floor: a bare CreateBucket and DeleteBucket per tenant.
async fn bare(storage: &Storage, tenants: Range<usize>, times: &mut [Vec<f64>; 2]) -> Result<()> {
    for i in tenants {
        let bucket = format!("floor-{i}");
        let started = Instant::now();
        storage.client().create_bucket().bucket(&bucket).send().await?;
        times[0].push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        storage.client().delete_bucket().bucket(&bucket).send().await?;
        times[1].push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let run = Run::start();
    let s3 = S3Server::start().await?;
    let env = Env::from_pairs([
        ("LANDLORD_S3_ENDPOINT", s3.endpoint()),
        ("LANDLORD_S3_PATH_STYLE", "true".into()),
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
    ]);
    let storage = Storage::new(Settings::from_env(&env)?);
    let tenants = run.size("BENCH_TENANTS", TENANTS.0, TENANTS.1);
    // Warm up connections on every path, then the three rows take turns in
    // rounds, the order rotated each round, so that a change in the
    // machine's load weighs on all alike.
    let mut scratch = [Vec::new(), Vec::new()];
    steps(&storage, pb::Tier::Bridge, 0..WARM_UP, &mut scratch).await?;
    steps(&storage, pb::Tier::Pooled, 0..WARM_UP, &mut scratch).await?;
    bare(&storage, 0..WARM_UP, &mut scratch).await?;
    let (mut bridge, mut pooled, mut floor) =
        ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for round in 0..ROUNDS {
        let range = WARM_UP + tenants * round / ROUNDS..WARM_UP + tenants * (round + 1) / ROUNDS;
        for row in (0..3).map(|k| (k + round) % 3) {
            match row {
                0 => steps(&storage, pb::Tier::Bridge, range.clone(), &mut bridge).await?,
                1 => steps(&storage, pb::Tier::Pooled, range.clone(), &mut pooled).await?,
                _ => bare(&storage, range.clone(), &mut floor).await?,
            }
        }
    }
    let [bridge_create, bridge_delete] = bridge;
    let [pooled_create, pooled_delete] = pooled;
    let [floor_create, floor_delete] = floor;
    let version = |program: &std::path::Path, args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(program).args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let report = serde_json::json!({
        "benchmark": "storage",
        "server": "s3s-fs on 127.0.0.1 (path-style, data in a temp dir; no tagging or versioning)",
        "tenants_per_row": tenants,
        "rounds": ROUNDS,
        "bridge_create_bucket_ms": summary(bridge_create),
        "bridge_delete_bucket_ms": summary(bridge_delete),
        "pooled_create_prefix_ms": summary(pooled_create),
        "pooled_delete_prefix_ms": summary(pooled_delete),
        "floor_bare_create_bucket_ms": summary(floor_create),
        "floor_bare_delete_bucket_ms": summary(floor_delete),
        "machine": machine(),
        "versions": {
            "s3s_fs": version(&landlord_testkit::s3s_fs_binary()?, &["--version"])?,
            "rustc": version(std::path::Path::new("rustc"), &["--version"])?,
        },
    });
    let p50 = |key: &str| report[key]["p50"].as_f64().unwrap_or(0.0);
    let ms = |key: &str| {
        let v = &report[key];
        format!("{:.2} / {:.2}", v["p50"].as_f64().unwrap_or(0.0), v["p99"].as_f64().unwrap_or(0.0))
    };
    // Each step's p50 over the bare call it is named after (goal ≤ 2).
    let rows = [
        (
            "bridge/silo `create_bucket` (marker check, CreateBucket, tag attempt, marker)",
            "bridge_create_bucket_ms",
            "floor_bare_create_bucket_ms",
        ),
        (
            "bridge/silo `delete_bucket` (marker check, list, DeleteObjects, DeleteBucket)",
            "bridge_delete_bucket_ms",
            "floor_bare_delete_bucket_ms",
        ),
        (
            "pooled `create_bucket` (prefix + marker in the shared bucket)",
            "pooled_create_prefix_ms",
            "floor_bare_create_bucket_ms",
        ),
        (
            "pooled `delete_bucket` (list and delete the prefix)",
            "pooled_delete_prefix_ms",
            "floor_bare_delete_bucket_ms",
        ),
    ];
    let ratios: serde_json::Map<String, serde_json::Value> =
        rows.iter().map(|(_, key, floor)| ((*key).to_owned(), (p50(key) / p50(floor)).into())).collect();
    let table: Vec<String> = rows
        .iter()
        .map(|(name, key, floor)| format!("| {name} | {} | {:.1}× |", ms(key), p50(key) / p50(floor)))
        .collect();
    let md = format!(
        "# bench-storage\n\nOne tenant at a time against s3s-fs on 127.0.0.1, {tenants} tenants per row (after \
         {WARM_UP} warm-up tenants on each path), the three rows (bridge, pooled, bare calls) taking turns in \
         {ROUNDS} rounds, the order rotated each round, so that a change in the machine's load weighs on all alike.\n\n\
         | step | p50 / p99 ms | p50 over the bare call (goal ≤ 2) |\n|---|---|---|\n{}\n\
         | floor: bare CreateBucket | {} | |\n\
         | floor: bare DeleteBucket | {} | |\n\n\
         Machine: {}\n\nVersions: {}\n",
        table.join("\n"),
        ms("floor_bare_create_bucket_ms"),
        ms("floor_bare_delete_bucket_ms"),
        machine(),
        report["versions"],
    );
    let mut report = report;
    report["p50_ratio_to_bare_call"] = ratios.into();
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("storage", report, &md, &run)
}
