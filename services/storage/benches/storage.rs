//! `cargo bench -p landlord-storage --bench storage`: latency of the storage
//! steps against a local s3s-fs, one tenant at a time, in one run:
//!
//! - bridge tier: `create_bucket` (marker check, CreateBucket, tagging
//!   attempt, marker write) and `delete_bucket` of an empty tenant bucket
//!   (marker check, listing, DeleteObjects, DeleteBucket);
//! - pooled tier: the same for a prefix in the shared bucket;
//! - the floor: a bare CreateBucket and DeleteBucket on the same client.
//!
//! Writes bench/results/storage.{json,md}.

use std::time::Instant;

use anyhow::Result;
use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_storage::{Settings, Storage};
use landlord_testkit::bench::summary;
use landlord_testkit::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

const TENANTS: usize = 300;

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

/// Creates then deletes `TENANTS` tenants of `tier`, timing each step.
async fn steps(storage: &Storage, tier: pb::Tier) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut create, mut delete) = (Vec::with_capacity(TENANTS), Vec::with_capacity(TENANTS));
    for i in 0..TENANTS + 10 {
        let started = Instant::now();
        storage.run("create_bucket", &command(i, tier, false), &delivery()).await?;
        let created = started.elapsed();
        let started = Instant::now();
        storage.run("delete_bucket", &command(i, tier, true), &delivery()).await?;
        let deleted = started.elapsed();
        // The first ten warm up connections.
        if i >= 10 {
            create.push(created.as_secs_f64() * 1e3);
            delete.push(deleted.as_secs_f64() * 1e3);
        }
    }
    Ok((create, delete))
}

#[tokio::main]
async fn main() -> Result<()> {
    let s3 = S3Server::start().await?;
    let env = Env::from_pairs([
        ("LANDLORD_S3_ENDPOINT", s3.endpoint()),
        ("LANDLORD_S3_PATH_STYLE", "true".into()),
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
    ]);
    let storage = Storage::new(Settings::from_env(&env)?);
    let (bridge_create, bridge_delete) = steps(&storage, pb::Tier::Bridge).await?;
    let (pooled_create, pooled_delete) = steps(&storage, pb::Tier::Pooled).await?;
    let (mut floor_create, mut floor_delete) = (Vec::new(), Vec::new());
    for i in 0..TENANTS {
        let bucket = format!("floor-{i}");
        let started = Instant::now();
        storage.client().create_bucket().bucket(&bucket).send().await?;
        floor_create.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        storage.client().delete_bucket().bucket(&bucket).send().await?;
        floor_delete.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let version = |program: &std::path::Path, args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(program).args(args).output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let report = serde_json::json!({
        "benchmark": "storage",
        "server": "s3s-fs on 127.0.0.1 (path-style, data in a temp dir; no tagging or versioning)",
        "tenants_per_row": TENANTS,
        "bridge_create_bucket_ms": summary(bridge_create),
        "bridge_delete_bucket_ms": summary(bridge_delete),
        "pooled_create_prefix_ms": summary(pooled_create),
        "pooled_delete_prefix_ms": summary(pooled_delete),
        "floor_bare_create_bucket_ms": summary(floor_create),
        "floor_bare_delete_bucket_ms": summary(floor_delete),
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "versions": {
            "s3s_fs": version(&landlord_testkit::s3s_fs_binary()?, &["--version"])?,
            "rustc": version(std::path::Path::new("rustc"), &["--version"])?,
        },
    });
    let ms = |key: &str| {
        let v = &report[key];
        format!("{:.2} / {:.2}", v["p50"].as_f64().unwrap_or(0.0), v["p99"].as_f64().unwrap_or(0.0))
    };
    let md = format!(
        "# bench-storage\n\nOne tenant at a time against s3s-fs on 127.0.0.1, {TENANTS} tenants per row, in one run \
         (after 10 warm-up tenants).\n\n\
         | step | p50 / p99 ms |\n|---|---|\n\
         | bridge/silo `create_bucket` (marker check, CreateBucket, tag attempt, marker) | {} |\n\
         | bridge/silo `delete_bucket` (marker check, list, DeleteObjects, DeleteBucket) | {} |\n\
         | pooled `create_bucket` (prefix + marker in the shared bucket) | {} |\n\
         | pooled `delete_bucket` (list and delete the prefix) | {} |\n\
         | floor: bare CreateBucket | {} |\n\
         | floor: bare DeleteBucket | {} |\n\n\
         Versions: {}\n",
        ms("bridge_create_bucket_ms"),
        ms("bridge_delete_bucket_ms"),
        ms("pooled_create_prefix_ms"),
        ms("pooled_delete_prefix_ms"),
        ms("floor_bare_create_bucket_ms"),
        ms("floor_bare_delete_bucket_ms"),
        report["versions"],
    );
    let out = landlord_testkit::workspace_root().join("bench/results");
    std::fs::write(out.join("storage.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(out.join("storage.md"), md)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
