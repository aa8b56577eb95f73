//! The storage worker against a real S3-compatible server (s3s-fs) and a
//! real nats-server.

use std::time::Duration;

use anyhow::{Context as _, Result};
use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use landlord_contract::pb;
use landlord_runtime::{Config, DeliveryInfo, Env, Envelope, Publisher, Service, StepFailure, StepService};
use landlord_storage::{MARKER, Settings, Storage};
use landlord_testkit::{
    NatsServer, Process, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, scratch_dir, unique_namespace, workspace_binary,
};
use prost::Message as _;

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
    let error = run(&storage, "delete_bucket", &taken).await.expect_err("not ours");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    assert!(bucket_exists(&storage, "landlord-taken").await);

    // Objects and no marker.
    storage.client().create_bucket().bucket("landlord-foreign").send().await?;
    put(&storage, "landlord-foreign", "precious.csv", "data").await?;
    let foreign = tenant("foreign", pb::Tier::Bridge);
    let error = run(&storage, "create_bucket", &foreign).await.expect_err("not ours");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    let error = run(&storage, "delete_bucket", &foreign).await.expect_err("not ours");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    assert_eq!(keys(&storage, "landlord-foreign", "").await?, ["precious.csv"]);

    // Empty and unmarked: what a crash right after CreateBucket leaves; adopted.
    storage.client().create_bucket().bucket("landlord-crashed").send().await?;
    run(&storage, "create_bucket", &tenant("crashed", pb::Tier::Bridge)).await?;
    assert_eq!(keys(&storage, "landlord-crashed", "").await?, [MARKER]);
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
    ] {
        let error = with(&[(var, value)]).expect_err(var);
        assert!(error.contains(var), "{var}={value}: {error}");
    }
    let only_key = Settings::from_env(&Env::from_pairs([("AWS_ACCESS_KEY_ID", "k")])).expect_err("no secret");
    assert!(only_key.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{only_key}");
    // No static keys: the standard AWS chain, resolved at the first request.
    let chain = Settings::from_env(&Env::from_pairs(Vec::<(String, String)>::new())).expect("defaults are valid");
    assert!(chain.credentials.is_none());
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
