//! `cargo bench -p landlord-storage --bench storage`: latency of the storage
//! steps against a local s3s-fs, one tenant at a time, next to the bare S3
//! calls each step sends (issue 27: each step within 2× of them):
//!
//! - bridge tier: `create_bucket`, and `delete_bucket` (its compensation)
//!   of the tenant bucket holding only its marker;
//! - pooled tier: the same for a prefix in the shared bucket;
//! - the floors: per tier, the same sequence of S3 calls the two steps
//!   send, made bare on the same client (no ownership logic; of the
//!   answers only the listing is used, for the DeleteObjects), in the same
//!   kind of place (a bucket `floor-{i}`; a prefix `tenants/floor-{i}/` of
//!   the shared bucket, so that the bucket grows alike under both rows).
//!   Each bare call is timed too: where the time goes.
//!
//! An interceptor (tests/storage/calls.rs) records the calls every step
//! and every floor sends; the report lists them, so that a floor that no
//! longer matches its step shows. The worker's first delete asks for
//! object versions and its first bridge create tags the bucket, which
//! s3s-fs lacks: both are learnt once, in the warm-up.
//!
//! The rows take turns in rounds. 300 tenants per row by default,
//! 1,000 with `BENCH_FULL=1`, `BENCH_TENANTS` to choose. Writes
//! bench/results/storage.{json,md}.

#[path = "../tests/storage/calls.rs"]
mod calls;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use anyhow::{Result, ensure};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use calls::Calls;
use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, Env, StepService};
use landlord_storage::{MARKER, SAGA_METADATA, Settings, Storage, TENANT_METADATA};
use landlord_testkit::bench::{Run, machine, summary, write_results};
use landlord_testkit::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server};

/// Tenants per row: the default run, and `BENCH_FULL=1`'s.
const TENANTS: (usize, usize) = (300, 1000);
/// Rounds the rows take turns in ([`main`]): a multiple of the four rows,
/// so that each row runs at each place of a round equally often (the
/// shared bucket's listing grows slower with every pooled tenant, and
/// within a round the later row sees more of them).
const ROUNDS: usize = 8;
const WARM_UP: usize = 10;
/// The pooled tier's shared bucket (the worker's default).
const SHARED: &str = "landlord-pooled";

/// The rows: each makes one tenant's create then delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Bridge,
    Pooled,
    BridgeFloor,
    PooledFloor,
}

const ROWS: [Row; 4] = [Row::Bridge, Row::Pooled, Row::BridgeFloor, Row::PooledFloor];

/// What the run collects: per (row, create or delete) the times and the
/// sequences of calls sent; per bare call its times.
#[derive(Default)]
struct Measured {
    steps: BTreeMap<(Row, usize), Vec<f64>>,
    sequences: BTreeMap<(Row, usize), BTreeMap<Vec<&'static str>, usize>>,
    /// By tier and call.
    bare_calls: BTreeMap<(&'static str, &'static str), Vec<f64>>,
}

struct Bench {
    storage: Storage,
    calls: Calls,
    measured: Measured,
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

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

impl Bench {
    /// Creates then deletes tenant `i` in `row`, timing each half.
    async fn tenant(&mut self, row: Row, i: usize) -> Result<()> {
        for half in 0..2 {
            let started = Instant::now();
            match row {
                Row::Bridge | Row::Pooled => {
                    let tier = if row == Row::Bridge { pb::Tier::Bridge } else { pb::Tier::Pooled };
                    let action = if half == 0 { "create_bucket" } else { "delete_bucket" };
                    self.storage.run(action, &command(i, tier, half == 1), &DeliveryInfo::direct(1)).await?;
                }
                Row::BridgeFloor if half == 0 => self.bare_create("bridge", &format!("floor-{i}"), "", i).await?,
                Row::BridgeFloor => self.bare_delete("bridge", &format!("floor-{i}"), "").await?,
                Row::PooledFloor if half == 0 => {
                    self.bare_create("pooled", SHARED, &format!("tenants/floor-{i}/"), i).await?
                }
                Row::PooledFloor => self.bare_delete("pooled", SHARED, &format!("tenants/floor-{i}/")).await?,
            }
            self.measured.steps.entry((row, half)).or_default().push(ms(started));
            *self.measured.sequences.entry((row, half)).or_default().entry(self.calls.take()).or_default() += 1;
        }
        Ok(())
    }

    /// What `create_bucket` sends for a new place: a HEAD of the marker
    /// (404), a listing of one key (no such bucket, or nothing under the
    /// prefix), CreateBucket for a bucket, the marker.
    async fn bare_create(&mut self, tier: &'static str, bucket: &str, prefix: &str, i: usize) -> Result<()> {
        let client = self.storage.client().clone();
        let key = format!("{prefix}{MARKER}");
        let started = Instant::now();
        let head = client.head_object().bucket(bucket).key(&key).send().await;
        self.bare(tier, "create: HeadObject (404)", started);
        ensure!(head.is_err(), "no marker expected in a new place");
        let started = Instant::now();
        let listed = client.list_objects_v2().bucket(bucket).prefix(prefix).max_keys(1).send().await;
        if prefix.is_empty() {
            self.bare(tier, "create: ListObjectsV2 (no bucket)", started);
            ensure!(listed.is_err(), "no bucket expected");
            let started = Instant::now();
            client.create_bucket().bucket(bucket).send().await?;
            self.bare(tier, "create: CreateBucket", started);
        } else {
            self.bare(tier, "create: ListObjectsV2 (empty prefix)", started);
            ensure!(listed?.contents().is_empty(), "an empty prefix expected");
        }
        let started = Instant::now();
        client
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(ByteStream::from(format!("id-{i}").into_bytes()))
            .content_type("text/plain")
            .metadata(SAGA_METADATA, format!("saga-{i}"))
            .metadata(TENANT_METADATA, format!("id-{i}"))
            .send()
            .await?;
        self.bare(tier, "create: PutObject (marker)", started);
        Ok(())
    }

    /// What `delete_bucket` sends for a place holding its marker: a
    /// listing, a HEAD of the marker, DeleteObjects of what was listed, the
    /// listing again (empty), DeleteBucket for a bucket.
    async fn bare_delete(&mut self, tier: &'static str, bucket: &str, prefix: &str) -> Result<()> {
        let client = self.storage.client().clone();
        let started = Instant::now();
        let listed = client.list_objects_v2().bucket(bucket).prefix(prefix).max_keys(1000).send().await?;
        self.bare(tier, "delete: ListObjectsV2 (the marker)", started);
        let started = Instant::now();
        client.head_object().bucket(bucket).key(format!("{prefix}{MARKER}")).send().await?;
        self.bare(tier, "delete: HeadObject (marker)", started);
        let objects = listed
            .contents()
            .iter()
            .map(|o| ObjectIdentifier::builder().key(o.key().unwrap_or_default()).build())
            .collect::<Result<Vec<_>, _>>()?;
        let started = Instant::now();
        let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build()?;
        client.delete_objects().bucket(bucket).delete(delete).send().await?;
        self.bare(tier, "delete: DeleteObjects", started);
        let started = Instant::now();
        let left = client.list_objects_v2().bucket(bucket).prefix(prefix).max_keys(1000).send().await?;
        self.bare(tier, "delete: ListObjectsV2 (empty)", started);
        ensure!(left.contents().is_empty(), "the place should be empty");
        if prefix.is_empty() {
            let started = Instant::now();
            client.delete_bucket().bucket(bucket).send().await?;
            self.bare(tier, "delete: DeleteBucket", started);
        }
        Ok(())
    }

    fn bare(&mut self, tier: &'static str, call: &'static str, started: Instant) {
        self.measured.bare_calls.entry((tier, call)).or_default().push(ms(started));
    }
}

impl Row {
    fn key(self, half: usize) -> &'static str {
        match (self, half) {
            (Row::Bridge, 0) => "bridge_create_bucket_ms",
            (Row::Bridge, _) => "bridge_delete_bucket_ms",
            (Row::Pooled, 0) => "pooled_create_prefix_ms",
            (Row::Pooled, _) => "pooled_delete_prefix_ms",
            (Row::BridgeFloor, 0) => "floor_bridge_create_calls_ms",
            (Row::BridgeFloor, _) => "floor_bridge_delete_calls_ms",
            (Row::PooledFloor, 0) => "floor_pooled_create_calls_ms",
            (Row::PooledFloor, _) => "floor_pooled_delete_calls_ms",
        }
    }

    fn floor(self) -> Row {
        match self {
            Row::Bridge | Row::BridgeFloor => Row::BridgeFloor,
            Row::Pooled | Row::PooledFloor => Row::PooledFloor,
        }
    }
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
    let settings = Settings::from_env(&env)?;
    let calls = Calls::default();
    let storage = Storage::with_client(settings.clone(), calls.watch(&settings.client()));
    let mut bench = Bench { storage, calls, measured: Measured::default() };
    let tenants = run.size("BENCH_TENANTS", TENANTS.0, TENANTS.1);
    // Warm up connections on every path (the worker learns what s3s-fs
    // lacks here), then the rows take turns in rounds, the order rotated
    // each round, so that a change in the machine's load weighs on all
    // alike.
    for row in ROWS {
        for i in 0..WARM_UP {
            bench.tenant(row, i).await?;
        }
    }
    bench.measured = Measured::default();
    for round in 0..ROUNDS {
        let range: Range<usize> = WARM_UP + tenants * round / ROUNDS..WARM_UP + tenants * (round + 1) / ROUNDS;
        for k in 0..ROWS.len() {
            let row = ROWS[(k + round) % ROWS.len()];
            for i in range.clone() {
                bench.tenant(row, i).await?;
            }
        }
    }
    let Measured { steps, sequences, bare_calls } = bench.measured;
    let p50 = |row: Row, half: usize| -> f64 {
        summary(steps.get(&(row, half)).cloned().unwrap_or_default())["p50"].as_f64().unwrap_or(0.0)
    };
    let mut report = serde_json::json!({
        "benchmark": "storage",
        "server": "s3s-fs on 127.0.0.1 (path-style, data in a temp dir; no tagging or versioning)",
        "tenants_per_row": tenants,
        "rounds": ROUNDS,
        "machine": machine(),
        "versions": {
            "s3s_fs": version(&landlord_testkit::s3s_fs_binary()?, &["--version"])?,
            "rustc": version(std::path::Path::new("rustc"), &["--version"])?,
        },
    });
    for ((row, half), times) in &steps {
        report[row.key(*half)] = summary(times.clone());
    }
    let sequences_json: serde_json::Map<String, serde_json::Value> = sequences
        .iter()
        .map(|((row, half), seen)| {
            let seen: Vec<_> =
                seen.iter().map(|(calls, n)| serde_json::json!({ "calls": calls, "times": n })).collect();
            (row.key(*half).to_owned(), seen.into())
        })
        .collect();
    report["calls_sent"] = sequences_json.into();
    let per_call: serde_json::Map<String, serde_json::Value> =
        bare_calls.iter().map(|((tier, call), times)| (format!("{tier} {call}"), summary(times.clone()))).collect();
    report["bare_call_ms"] = per_call.into();
    // The single bare calls the rows were compared with before the floors
    // made every call of their step (issue 27's first runs).
    report["floor_bare_create_bucket_ms"] = report["bare_call_ms"]["bridge create: CreateBucket"].clone();
    report["floor_bare_delete_bucket_ms"] = report["bare_call_ms"]["bridge delete: DeleteBucket"].clone();
    let ratios: serde_json::Map<String, serde_json::Value> = [Row::Bridge, Row::Pooled]
        .into_iter()
        .flat_map(|row| (0..2).map(move |half| (row, half)))
        .map(|(row, half)| (row.key(half).to_owned(), (p50(row, half) / p50(row.floor(), half)).into()))
        .collect();
    report["p50_ratio_to_bare_calls"] = ratios.into();

    let cell = |value: &serde_json::Value| {
        format!("{:.2} / {:.2}", value["p50"].as_f64().unwrap_or(0.0), value["p99"].as_f64().unwrap_or(0.0))
    };
    // The sequence most runs of a row sent.
    let most = |row: Row, half: usize| -> Option<Vec<&'static str>> {
        sequences.get(&(row, half))?.iter().max_by_key(|(_, n)| **n).map(|(calls, _)| calls.clone())
    };
    // That sequence, and how many runs sent it if not all.
    let usual = |row: Row, half: usize| -> String {
        let seen = sequences.get(&(row, half)).cloned().unwrap_or_default();
        let total: usize = seen.values().sum();
        match seen.iter().max_by_key(|(_, n)| **n) {
            Some((calls, n)) if *n == total => format!("{}: {}", calls.len(), calls.join(", ")),
            Some((calls, n)) => format!("{}: {} ({n} of {total})", calls.len(), calls.join(", ")),
            None => "none".into(),
        }
    };
    let one_bare = |half: usize| {
        report[if half == 0 { "floor_bare_create_bucket_ms" } else { "floor_bare_delete_bucket_ms" }]["p50"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let mut table = Vec::new();
    for (row, name) in [(Row::Bridge, "bridge/silo"), (Row::Pooled, "pooled")] {
        for (half, step) in [(0, "`create_bucket`"), (1, "`delete_bucket`")] {
            let (step_p50, floor_p50) = (p50(row, half), p50(row.floor(), half));
            let same =
                if most(row, half) == most(row.floor(), half) { "" } else { " (the floor's differ: see the json)" };
            table.push(format!(
                "| {name} {step} | {}{same} | {} | {} | {:.2}× {} | {:.1}× |",
                usual(row, half),
                cell(&report[row.key(half)]),
                cell(&report[row.floor().key(half)]),
                step_p50 / floor_p50,
                if step_p50 <= 2.0 * floor_p50 { "met" } else { "**not met**" },
                step_p50 / one_bare(half),
            ));
        }
    }
    let bare_table: Vec<String> = bare_calls
        .iter()
        .map(|((tier, call), times)| format!("| {tier} {call} | {} |", cell(&summary(times.clone()))))
        .collect();
    let md = format!(
        "# bench-storage\n\nOne tenant at a time against s3s-fs on 127.0.0.1, {tenants} tenants per row (after \
         {WARM_UP} warm-up tenants on each), the four rows (bridge steps, pooled steps, and the bare calls of \
         each) taking turns in {ROUNDS} rounds, the order rotated each round, so that a change in the machine's \
         load weighs on all alike. A floor row sends, bare on the same client, the calls its step sends (counted \
         by an interceptor, second column).\n\n\
         | step | S3 calls it sends | step p50 / p99 ms | the same calls bare, p50 / p99 ms | step over bare calls \
         (p50, goal ≤ 2) | over the one bare call it is named after (p50, as before) |\n|---|---|---|---|---|---|\n\
         {}\n\nEach bare call of the floors, timed alone:\n\n| bare call | p50 / p99 ms |\n|---|---|\n{}\n\nMachine: {}\n\nVersions: {}\n",
        table.join("\n"),
        bare_table.join("\n"),
        machine(),
        report["versions"],
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    write_results("storage", report, &md, &run)
}

fn version(program: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(program).args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
