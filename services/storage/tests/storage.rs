//! The storage worker against a real S3-compatible server (s3s-fs) and a
//! real nats-server.

use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use landlord_contract::pb;
use landlord_runtime::{Config, DeliveryInfo, Env, Envelope, Publisher, Service, StepFailure, StepService};
use landlord_storage::{FENCED, MARKER, Marker, Ownership, Place, SAGA_METADATA, Settings, Storage, TENANT_METADATA};
use landlord_testkit::{
    NatsServer, Process, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, scratch_dir, unique_namespace, workspace_binary,
};
use prost::Message as _;

#[path = "storage/calls.rs"]
mod calls;
#[path = "storage/lifecycle.rs"]
mod lifecycle;

const WAIT: Duration = Duration::from_secs(20);

fn env_for(s3: &S3Server) -> Vec<(String, String)> {
    vec![
        ("LANDLORD_S3_ENDPOINT".into(), s3.endpoint()),
        ("LANDLORD_S3_PATH_STYLE".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
    ]
}

fn storage(s3: &S3Server) -> Result<Storage> {
    Ok(Storage::new(Settings::from_env(&Env::from_pairs(env_for(s3)))?))
}

fn tenant(key: &str, tier: pb::Tier) -> pb::TenantSpec {
    pb::TenantSpec { tenant_id: format!("id-{key}"), key: key.into(), tier: tier as i32, ..Default::default() }
}

fn command(tenant: pb::TenantSpec) -> pb::StepCommand {
    pb::StepCommand { saga_id: "saga".into(), step: "storage".into(), tenant: Some(tenant), ..Default::default() }
}

/// `create_bucket` for `tenant` in saga `saga`.
async fn create_in(storage: &Storage, saga: &str, tenant: &pb::TenantSpec) -> Result<pb::StepOk, StepFailure> {
    let forward = pb::StepCommand { saga_id: saga.into(), ..command(tenant.clone()) };
    storage.run("create_bucket", &forward, &delivery()).await
}

/// `delete_bucket` for `tenant` in saga `saga`, with what the forward step
/// reported (nothing when it failed).
async fn compensate_in(
    storage: &Storage,
    saga: &str,
    tenant: &pb::TenantSpec,
    reported: &[pb::Resource],
) -> Result<pb::StepOk, StepFailure> {
    let undo = pb::StepCommand {
        saga_id: saga.into(),
        compensate: true,
        resources: reported.to_vec(),
        ..command(tenant.clone())
    };
    storage.run("delete_bucket", &undo, &delivery()).await
}

/// The marker object as stored: its body (the tenant id) and the saga in
/// its metadata.
async fn marker(storage: &Storage, bucket: &str, key: &str) -> Result<(String, Option<String>)> {
    let object = storage.client().get_object().bucket(bucket).key(key).send().await?;
    let saga = object.metadata().and_then(|m| m.get(SAGA_METADATA)).cloned();
    let body = object.body.collect().await?.into_bytes();
    Ok((String::from_utf8(body.to_vec())?, saga))
}

fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

async fn run(storage: &Storage, action: &str, tenant: &pb::TenantSpec) -> Result<pb::StepOk, StepFailure> {
    storage.run(action, &command(tenant.clone()), &delivery()).await
}

async fn keys(storage: &Storage, bucket: &str, prefix: &str) -> Result<Vec<String>> {
    let pages: Vec<_> =
        storage.client().list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send().try_collect().await?;
    Ok(pages.iter().flat_map(|p| p.contents()).filter_map(|o| o.key().map(str::to_owned)).collect())
}

async fn bucket_exists(storage: &Storage, bucket: &str) -> bool {
    storage.client().head_bucket().bucket(bucket).send().await.is_ok()
}

async fn put(storage: &Storage, bucket: &str, key: &str, body: &str) -> Result<()> {
    storage
        .client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await?;
    Ok(())
}

#[tokio::test]
async fn create_twice_is_once_and_delete_twice_is_once() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    let first = run(&storage, "create_bucket", &acme).await?;
    let again = run(&storage, "create_bucket", &acme).await?;
    assert_eq!(first, again);
    assert_eq!(first.resources[0].kind, "s3.bucket");
    assert_eq!(first.resources[0].external_id, "landlord-acme");
    assert_eq!(first.outputs["storage.bucket"], "landlord-acme");
    assert_eq!(keys(&storage, "landlord-acme", "").await?, [MARKER]);
    // The metadata repeats the tenant, so that a HEAD reads the marker.
    let head = storage.client().head_object().bucket("landlord-acme").key(MARKER).send().await?;
    assert_eq!(head.metadata().and_then(|m| m.get(TENANT_METADATA)).map(String::as_str), Some("id-acme"));
    // The compensation goes by what the forward step reported.
    let undo = pb::StepCommand { compensate: true, resources: first.resources.clone(), ..command(acme.clone()) };
    storage.run("delete_bucket", &undo, &delivery()).await?;
    assert!(!bucket_exists(&storage, "landlord-acme").await);
    storage.run("delete_bucket", &undo, &delivery()).await?;
    run(&storage, "delete_bucket", &acme).await?;
    Ok(())
}

#[tokio::test]
async fn a_bucket_holding_2500_objects_is_emptied_and_deleted() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let big = tenant("big", pb::Tier::Bridge);
    run(&storage, "create_bucket", &big).await?;
    futures_util::stream::iter(0..2_500)
        .map(|i| {
            let storage = &storage;
            async move { put(storage, "landlord-big", &format!("data/{i:05}"), "x").await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    assert_eq!(keys(&storage, "landlord-big", "").await?.len(), 2_501, "2,500 objects and the marker");
    let ok = run(&storage, "delete_bucket", &big).await?;
    assert_eq!(ok.outputs["storage.removed_objects"], "2501");
    assert!(!bucket_exists(&storage, "landlord-big").await);
    Ok(())
}

#[tokio::test]
async fn a_bucket_that_is_not_ours_is_a_permanent_conflict_and_is_never_deleted() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    // Marked for another tenant.
    storage.client().create_bucket().bucket("landlord-taken").send().await?;
    put(&storage, "landlord-taken", MARKER, "id-someone-else").await?;
    let taken = tenant("taken", pb::Tier::Bridge);
    let error = run(&storage, "create_bucket", &taken).await.expect_err("not ours");
    assert!(!error.retryable && error.code == "conflicting_owner" && error.message.contains("id-someone-else"));
    // A compensation leaves it alone and says so: its saga's undo is done.
    let ok = run(&storage, "delete_bucket", &taken).await?;
    assert_eq!(ok.outputs[FENCED], "s3.bucket landlord-taken belongs to tenant id-someone-else");
    assert!(bucket_exists(&storage, "landlord-taken").await);

    // Objects and no marker.
    storage.client().create_bucket().bucket("landlord-foreign").send().await?;
    put(&storage, "landlord-foreign", "precious.csv", "data").await?;
    let foreign = tenant("foreign", pb::Tier::Bridge);
    let error = run(&storage, "create_bucket", &foreign).await.expect_err("not ours");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    let ok = run(&storage, "delete_bucket", &foreign).await?;
    assert_eq!(ok.outputs[FENCED], "s3.bucket landlord-foreign holds objects and no Landlord marker");
    assert_eq!(keys(&storage, "landlord-foreign", "").await?, ["precious.csv"]);

    // Empty and unmarked: what a crash right after CreateBucket leaves; adopted.
    storage.client().create_bucket().bucket("landlord-crashed").send().await?;
    run(&storage, "create_bucket", &tenant("crashed", pb::Tier::Bridge)).await?;
    assert_eq!(keys(&storage, "landlord-crashed", "").await?, [MARKER]);
    assert_eq!(marker(&storage, "landlord-crashed", MARKER).await?, ("id-crashed".into(), Some("saga".into())));
    Ok(())
}

#[tokio::test]
async fn hostile_keys_never_make_a_bucket_name_or_a_prefix() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let long = "x".repeat(60);
    // Sent straight to the service, as if the orchestrator's validation had
    // been bypassed; each names the S3 rule it breaks.
    for (key, rule) in [
        ("Acme", "lowercase"),
        ("acme_corp", "lowercase"),
        ("a;b", "lowercase"),
        ("../etc", "lowercase"),
        (long.as_str(), "3 to 63"),
        ("acme-", "begin and end"),
        ("acme..corp", "adjacent periods"),
        ("ac\u{0435}me", "lowercase"),
        ("", "begin and end"),
    ] {
        let error = run(&storage, "create_bucket", &tenant(key, pb::Tier::Bridge)).await.expect_err(key);
        assert!(!error.retryable && error.code == "invalid_bucket_name", "{key:?}: {error}");
        assert!(error.message.contains("S3's rules") && error.message.contains(rule), "{key:?}: {error}");
        let error = run(&storage, "delete_bucket", &tenant(key, pb::Tier::Bridge)).await.expect_err(key);
        assert!(!error.retryable && error.code == "invalid_bucket_name", "{key:?}: {error}");
    }
    // Pooled: a key is part of an object key; `one/two` would sit inside
    // tenant `one`'s prefix.
    for (key, rule) in
        [("one/two", "tenant_key.character"), ("../one", "tenant_key.first_character"), ("", "tenant_key.too_short")]
    {
        let error = run(&storage, "create_bucket", &tenant(key, pb::Tier::Pooled)).await.expect_err(key);
        assert!(!error.retryable && error.code == "invalid_tenant_key", "{key:?}: {error}");
        assert!(error.message.contains(rule), "{key:?}: {error}");
    }
    let buckets = storage.client().list_buckets().send().await?;
    assert!(buckets.buckets().is_empty(), "nothing was created: {:?}", buckets.buckets());
    Ok(())
}

#[tokio::test]
async fn concurrent_creates_all_succeed() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    // Two deliveries of one command at once, and the first pooled tenants
    // racing to create the shared bucket.
    let twice = tenant("twice", pb::Tier::Bridge);
    let (one, two, three) =
        (tenant("one", pb::Tier::Pooled), tenant("two", pb::Tier::Pooled), tenant("three", pb::Tier::Pooled));
    let (a, b, c, d, e) = tokio::join!(
        run(&storage, "create_bucket", &twice),
        run(&storage, "create_bucket", &twice),
        run(&storage, "create_bucket", &one),
        run(&storage, "create_bucket", &two),
        run(&storage, "create_bucket", &three),
    );
    for outcome in [a, b, c, d, e] {
        outcome?;
    }
    assert_eq!(keys(&storage, "landlord-twice", "").await?, [MARKER]);
    let pooled = keys(&storage, "landlord-pooled", "").await?;
    assert_eq!(pooled.len(), 3, "{pooled:?}");
    Ok(())
}

#[test]
fn bad_settings_name_the_variable() {
    let with = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")];
        pairs.extend_from_slice(extra);
        Settings::from_env(&Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    assert!(with(&[]).is_ok());
    for (var, value) in [
        ("LANDLORD_S3_BUCKET_PATTERN", "tenant"),
        ("LANDLORD_S3_BUCKET_PATTERN", "Tenants_{key}"),
        ("LANDLORD_S3_SHARED_BUCKET", "x"),
        ("LANDLORD_S3_ENDPOINT", "localhost:9000"),
        ("LANDLORD_S3_PATH_STYLE", "maybe"),
        ("LANDLORD_S3_VERSIONING", "yes please"),
        ("LANDLORD_S3_ENCRYPTION", "rot13"),
        ("LANDLORD_S3_REGION", "us east"),
        ("LANDLORD_ARCHIVE_BUCKET", "Archive"),
        ("LANDLORD_ARCHIVE_BUCKET", "landlord-pooled"),
        ("LANDLORD_EXPORT_RETENTION", "ninety days"),
        ("LANDLORD_EXPORT_SWEEP_INTERVAL", "0s"),
        ("LANDLORD_S3_SUSPEND_EXEMPT", "landlord-role"),
    ] {
        let error = with(&[(var, value)]).expect_err(var);
        assert!(error.contains(var), "{var}={value}: {error}");
    }
    let only_key = Settings::from_env(&Env::from_pairs([("AWS_ACCESS_KEY_ID", "k")])).expect_err("no secret");
    assert!(only_key.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{only_key}");
    // No static keys: the standard AWS chain, resolved at the first request.
    let chain = Settings::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).expect("defaults are valid");
    assert!(chain.credentials.is_none());
    assert_eq!(chain.archive_bucket, "landlord-archive");
    assert_eq!(chain.export_retention, Duration::from_secs(90 * 24 * 3600));
    assert_eq!(chain.export_sweep_interval, Duration::from_secs(3600));
}

#[tokio::test]
async fn the_server_down_is_retryable_and_back_up_it_succeeds() -> Result<()> {
    let mut s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let late = tenant("late", pb::Tier::Bridge);
    s3.kill();
    let error = run(&storage, "create_bucket", &late).await.expect_err("down");
    assert!(error.retryable, "{error}");
    s3.restart().await?;
    run(&storage, "create_bucket", &late).await?;
    assert!(bucket_exists(&storage, "landlord-late").await);
    Ok(())
}

#[tokio::test]
async fn pooled_tenants_get_a_prefix_in_the_shared_bucket() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let (one, two) = (tenant("one", pb::Tier::Pooled), tenant("two", pb::Tier::Pooled));
    let ok = run(&storage, "create_bucket", &one).await?;
    assert_eq!(
        (ok.resources[0].kind.as_str(), ok.resources[0].external_id.as_str()),
        ("s3.prefix", "landlord-pooled/tenants/one/")
    );
    assert_eq!(ok.outputs["storage.prefix"], "tenants/one/");
    run(&storage, "create_bucket", &two).await?;
    put(&storage, "landlord-pooled", "tenants/one/file", "1").await?;
    put(&storage, "landlord-pooled", "tenants/two/file", "2").await?;
    run(&storage, "delete_bucket", &one).await?;
    run(&storage, "delete_bucket", &one).await?;
    assert!(keys(&storage, "landlord-pooled", "tenants/one/").await?.is_empty());
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/two/").await?.len(), 2, "the other tenant keeps its data");
    Ok(())
}

#[tokio::test]
async fn the_service_binary_answers_a_create_bucket_command() -> Result<()> {
    let nats = NatsServer::shared().await;
    let s3 = S3Server::start().await?;
    let namespace = unique_namespace();
    let mut env = env_for(&s3);
    env.extend([("LANDLORD_NATS_URL".into(), nats.url()), ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned())]);
    let _service = Process::start("storage", &workspace_binary("landlord-storage")?, &[], &env, &scratch_dir("logs")?)?;
    let client = async_nats::connect(nats.url()).await?;
    let mut answers = client.subscribe(namespace.result_subject("storage", "create_bucket")).await?;
    let sender_env =
        Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &sender_env)?).await?;
    Publisher::new(&sender.broker, "test")
        .publish(
            namespace.command_subject("storage", "create_bucket"),
            &command(tenant("wired", pb::Tier::Bridge)),
            &Envelope::new("cmd-storage-wired"),
        )
        .await?;
    let answer = tokio::time::timeout(WAIT, answers.next()).await?.context("no result")?;
    let result = pb::StepResult::decode(answer.payload)?;
    let Some(pb::step_result::Outcome::Ok(ok)) = result.outcome else { anyhow::bail!("not ok: {result:?}") };
    assert_eq!(ok.outputs["storage.bucket"], "landlord-wired");
    assert!(bucket_exists(&storage(&s3)?, "landlord-wired").await);
    Ok(())
}

fn bucket_place(bucket: &str) -> Place {
    Place { bucket: bucket.into(), prefix: String::new() }
}

#[tokio::test]
async fn a_retry_adopts_the_bucket_and_the_failed_sagas_compensation_leaves_it() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    let first = create_in(&storage, "s1", &acme).await?;
    assert_eq!(marker(&storage, "landlord-acme", MARKER).await?, ("id-acme".into(), Some("s1".into())));

    // The retry S2 adopts what S1 made: the marker now names S2.
    let second = create_in(&storage, "s2", &acme).await?;
    assert_eq!(first.resources, second.resources);
    assert_eq!(marker(&storage, "landlord-acme", MARKER).await?, ("id-acme".into(), Some("s2".into())));
    put(&storage, "landlord-acme", "data/report.csv", "live").await?;
    // A re-run of S2 rewrites the same value.
    create_in(&storage, "s2", &acme).await?;
    assert_eq!(marker(&storage, "landlord-acme", MARKER).await?, ("id-acme".into(), Some("s2".into())));

    // S1's compensation, redelivered late, with what S1 reported: left alone.
    let stale = compensate_in(&storage, "s1", &acme, &first.resources).await?;
    assert_eq!(stale.outputs[FENCED], "s3.bucket landlord-acme belongs to saga s2");
    assert!(stale.resources.is_empty());
    assert_eq!(keys(&storage, "landlord-acme", "").await?, [MARKER, "data/report.csv"]);
    assert_eq!(marker(&storage, "landlord-acme", MARKER).await?, ("id-acme".into(), Some("s2".into())));

    // S2's own compensation deletes it, data and all.
    let own = compensate_in(&storage, "s2", &acme, &second.resources).await?;
    assert!(!own.outputs.contains_key(FENCED), "{own:?}");
    assert_eq!(own.outputs["storage.removed_objects"], "2");
    assert!(!bucket_exists(&storage, "landlord-acme").await);
    // Gone is done, for either saga.
    compensate_in(&storage, "s2", &acme, &second.resources).await?;
    compensate_in(&storage, "s1", &acme, &[]).await?;
    Ok(())
}

#[tokio::test]
async fn a_compensation_cleans_up_after_a_create_that_failed_half_way() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    // The forward step created the bucket and failed (or crashed) before
    // marking it: an empty bucket, no marker, nothing reported.
    let half = tenant("half", pb::Tier::Bridge);
    storage.client().create_bucket().bucket("landlord-half").send().await?;
    assert_eq!(storage.ownership(&bucket_place("landlord-half")).await?, Ownership::Empty);
    let ok = compensate_in(&storage, "s1", &half, &[]).await?;
    assert!(!ok.outputs.contains_key(FENCED), "{ok:?}");
    assert!(!bucket_exists(&storage, "landlord-half").await, "found from the tenant key and removed");

    // Marked, then configuring failed: the saga's own marker, nothing
    // reported; found by the tenant key and removed.
    let configured = tenant("configured", pb::Tier::Bridge);
    create_in(&storage, "s1", &configured).await?;
    compensate_in(&storage, "s1", &configured, &[]).await?;
    assert!(!bucket_exists(&storage, "landlord-configured").await);

    // A half-made bucket that has since received objects is not what a
    // crash leaves: left alone, and said so.
    storage.client().create_bucket().bucket("landlord-filled").send().await?;
    put(&storage, "landlord-filled", "someone.txt", "x").await?;
    let ok = compensate_in(&storage, "s1", &tenant("filled", pb::Tier::Bridge), &[]).await?;
    assert!(ok.outputs[FENCED].contains("no Landlord marker"), "{ok:?}");
    assert_eq!(keys(&storage, "landlord-filled", "").await?, ["someone.txt"]);
    Ok(())
}

#[tokio::test]
async fn a_tenant_only_marker_is_adopted_and_deleted_only_by_its_tenant() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    // Markers written before sagas were recorded: the bare tenant id.
    for bucket in ["landlord-old", "landlord-older"] {
        storage.client().create_bucket().bucket(bucket).send().await?;
    }
    put(&storage, "landlord-old", MARKER, "id-old").await?;
    put(&storage, "landlord-older", MARKER, "id-older\n").await?;
    assert_eq!(
        storage.ownership(&bucket_place("landlord-old")).await?,
        Ownership::Marked(Marker { tenant_id: "id-old".into(), saga_id: None })
    );

    // A forward step adopts it: the marker gains the saga.
    create_in(&storage, "s2", &tenant("old", pb::Tier::Bridge)).await?;
    assert_eq!(marker(&storage, "landlord-old", MARKER).await?, ("id-old".into(), Some("s2".into())));

    // Another tenant's compensation never deletes it.
    let stranger = pb::TenantSpec { tenant_id: "id-stranger".into(), ..tenant("older", pb::Tier::Bridge) };
    let ok = compensate_in(&storage, "s1", &stranger, &[]).await?;
    assert_eq!(ok.outputs[FENCED], "s3.bucket landlord-older belongs to tenant id-older");
    assert!(bucket_exists(&storage, "landlord-older").await);
    // Its own tenant's compensation does: no later saga can have adopted a
    // marker that still has the old format.
    compensate_in(&storage, "s1", &tenant("older", pb::Tier::Bridge), &[]).await?;
    assert!(!bucket_exists(&storage, "landlord-older").await);
    Ok(())
}

#[tokio::test]
async fn another_tenants_bucket_is_never_deleted_whatever_the_saga() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let owner = tenant("shared-name", pb::Tier::Bridge);
    let made = create_in(&storage, "s1", &owner).await?;
    // Same key and saga id, another tenant id (say, a tenant deleted and
    // re-created): not its bucket.
    let other = pb::TenantSpec { tenant_id: "id-impostor".into(), ..owner.clone() };
    let ok = compensate_in(&storage, "s1", &other, &made.resources).await?;
    assert_eq!(ok.outputs[FENCED], "s3.bucket landlord-shared-name belongs to tenant id-shared-name");
    let error = create_in(&storage, "s2", &other).await.expect_err("not its bucket");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    assert_eq!(marker(&storage, "landlord-shared-name", MARKER).await?, ("id-shared-name".into(), Some("s1".into())));
    Ok(())
}

#[tokio::test]
async fn pooled_prefixes_are_fenced_by_saga_and_tenant() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let one = tenant("one", pb::Tier::Pooled);
    let first = create_in(&storage, "s1", &one).await?;
    assert_eq!(marker(&storage, "landlord-pooled", "tenants/one/.landlord/tenant").await?.1.as_deref(), Some("s1"));
    let second = create_in(&storage, "s2", &one).await?;
    assert_eq!(marker(&storage, "landlord-pooled", "tenants/one/.landlord/tenant").await?.1.as_deref(), Some("s2"));
    put(&storage, "landlord-pooled", "tenants/one/file", "1").await?;

    // S1's stale compensation leaves S2's prefix whole.
    let stale = compensate_in(&storage, "s1", &one, &first.resources).await?;
    assert_eq!(stale.outputs[FENCED], "s3.prefix landlord-pooled/tenants/one/ belongs to saga s2");
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/one/").await?.len(), 2);

    // Another tenant's prefix under this key is never emptied.
    let two = tenant("two", pb::Tier::Pooled);
    create_in(&storage, "s1", &two).await?;
    put(&storage, "landlord-pooled", "tenants/two/file", "2").await?;
    let impostor = pb::TenantSpec { tenant_id: "id-impostor".into(), ..two.clone() };
    let ok = compensate_in(&storage, "s1", &impostor, &[]).await?;
    assert_eq!(ok.outputs[FENCED], "s3.prefix landlord-pooled/tenants/two/ belongs to tenant id-two");
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/two/").await?.len(), 2);

    // Objects under a prefix with no marker: left alone.
    put(&storage, "landlord-pooled", "tenants/three/file", "3").await?;
    let ok = compensate_in(&storage, "s1", &tenant("three", pb::Tier::Pooled), &[]).await?;
    assert!(ok.outputs[FENCED].contains("no Landlord marker"), "{ok:?}");
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/three/").await?, ["tenants/three/file"]);

    // S2's own compensation empties its prefix, and only its prefix; the
    // shared bucket stays. A failed create's compensation (nothing
    // reported, nothing there) is done at once.
    compensate_in(&storage, "s2", &one, &second.resources).await?;
    assert!(keys(&storage, "landlord-pooled", "tenants/one/").await?.is_empty());
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/two/").await?.len(), 2);
    let ok = compensate_in(&storage, "s1", &tenant("never", pb::Tier::Pooled), &[]).await?;
    assert!(!ok.outputs.contains_key(FENCED), "{ok:?}");
    assert!(bucket_exists(&storage, "landlord-pooled").await);
    Ok(())
}

/// The calls each step sends, once the worker knows what the server lacks
/// (issue 27: the steps against the bare calls they make). s3s-fs has
/// neither ListObjectVersions nor tagging: each is asked once per worker.
#[tokio::test]
async fn each_step_sends_only_the_calls_it_needs_and_asks_what_the_server_lacks_once() -> Result<()> {
    let s3 = S3Server::start().await?;
    let settings = Settings::from_env(&Env::from_pairs(env_for(&s3)))?;
    let calls = calls::Calls::default();
    let storage = Storage::with_client(settings.clone(), calls.watch(&settings.client()));

    // A missing bucket: a HEAD's 404, and the listing tells there is no bucket.
    let place = Place { bucket: "landlord-nothing".into(), prefix: String::new() };
    assert_eq!(storage.ownership(&place).await?, Ownership::Missing);
    assert_eq!(calls.take(), ["HeadObject", "ListObjectsV2"]);

    let first = tenant("first", pb::Tier::Bridge);
    create_in(&storage, "s1", &first).await?;
    assert_eq!(calls.take(), ["HeadObject", "ListObjectsV2", "CreateBucket", "PutObject", "PutBucketTagging"]);
    compensate_in(&storage, "s1", &first, &[]).await?;
    let first_delete = ["ListObjectVersions", "ListObjectsV2", "HeadObject", "DeleteObjects", "ListObjectsV2"];
    assert_eq!(calls.take(), [&first_delete[..], &["DeleteBucket"]].concat());

    // Known now, and shared by the worker's clones: neither asked again.
    let storage = storage.clone();
    let bridge = tenant("bridge", pb::Tier::Bridge);
    create_in(&storage, "s1", &bridge).await?;
    assert_eq!(calls.take(), ["HeadObject", "ListObjectsV2", "CreateBucket", "PutObject"]);
    compensate_in(&storage, "s1", &bridge, &[]).await?;
    assert_eq!(calls.take(), ["ListObjectsV2", "HeadObject", "DeleteObjects", "ListObjectsV2", "DeleteBucket"]);
    assert!(!bucket_exists(&storage, "landlord-bridge").await);
    calls.take();

    let pooled = tenant("pooled", pb::Tier::Pooled);
    create_in(&storage, "s1", &pooled).await?;
    // The shared bucket's first tenant creates it.
    assert_eq!(calls.take(), ["HeadObject", "ListObjectsV2", "CreateBucket", "PutObject"]);
    let other = tenant("other", pb::Tier::Pooled);
    create_in(&storage, "s1", &other).await?;
    assert_eq!(calls.take(), ["HeadObject", "ListObjectsV2", "PutObject"]);
    compensate_in(&storage, "s1", &other, &[]).await?;
    assert_eq!(calls.take(), ["ListObjectsV2", "HeadObject", "DeleteObjects", "ListObjectsV2"]);
    assert!(keys(&storage, "landlord-pooled", "tenants/other/").await?.is_empty());
    assert!(!keys(&storage, "landlord-pooled", "tenants/pooled/").await?.is_empty());
    calls.take();

    // A compensation already done: one listing says there is no bucket.
    compensate_in(&storage, "s1", &bridge, &[]).await?;
    assert_eq!(calls.take(), ["ListObjectsV2"]);

    // Another worker (process) asks again.
    let fresh = Storage::with_client(settings.clone(), calls.watch(&settings.client()));
    create_in(&fresh, "s1", &first).await?;
    compensate_in(&fresh, "s1", &first, &[]).await?;
    assert_eq!(calls.take().iter().filter(|c| **c == "ListObjectVersions" || **c == "PutBucketTagging").count(), 2);
    Ok(())
}

#[tokio::test]
async fn a_command_without_a_saga_is_refused() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = storage(&s3)?;
    let error = create_in(&storage, "", &tenant("nosaga", pb::Tier::Bridge)).await.expect_err("no saga");
    assert!(!error.retryable && error.code == "no_saga_id", "{error}");
    assert!(!bucket_exists(&storage, "landlord-nosaga").await);
    Ok(())
}
