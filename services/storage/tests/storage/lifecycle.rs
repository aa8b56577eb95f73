//! Suspend, resume, export, purge and the export sweep against s3s-fs.

use std::time::Duration;

use anyhow::Result;
use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use landlord_contract::pb;
use landlord_runtime::{Env, StepFailure, StepService as _};
use landlord_storage::{ARCHIVE_MARKER, FENCED, MARKER, SUSPENDED, Settings, Storage, export_time};
use landlord_testkit::S3Server;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{bucket_exists, delivery, env_for, keys, marker, put, run, tenant};

/// A lifecycle command for `tenant` in saga `saga`.
fn step(saga: &str, tenant: &pb::TenantSpec) -> pb::StepCommand {
    pb::StepCommand { saga_id: saga.into(), step: "storage".into(), tenant: Some(tenant.clone()), ..Default::default() }
}

async fn act(storage: &Storage, action: &str, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
    storage.run(action, command, &delivery()).await
}

fn export_command(saga: &str, tenant: &pb::TenantSpec, prefix: &str) -> pb::StepCommand {
    let mut command = step(saga, tenant);
    command.inputs.insert("export.prefix".into(), prefix.into());
    command
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

async fn text(storage: &Storage, bucket: &str, key: &str) -> Result<String> {
    let object = storage.client().get_object().bucket(bucket).key(key).send().await?;
    Ok(String::from_utf8(object.body.collect().await?.into_bytes().to_vec())?)
}

/// What a database export leaves under the prefix: two files and the
/// manifest naming them.
async fn database_part(storage: &Storage, prefix: &str) -> Result<()> {
    let schema = "CREATE TABLE notes (id int, body text);\n";
    let rows = "1\thello\n2\tworld\n";
    put(storage, "landlord-archive", &format!("{prefix}database/schema.sql"), schema).await?;
    put(storage, "landlord-archive", &format!("{prefix}database/tables/notes.tsv"), rows).await?;
    let manifest = json!({
        "tables": [{"name": "notes", "rows": 2}],
        "files": [
            {"path": "database/schema.sql", "size": schema.len(), "sha256": sha256(schema.as_bytes())},
            {"path": "database/tables/notes.tsv", "size": rows.len(), "sha256": sha256(rows.as_bytes())},
        ],
    });
    put(storage, "landlord-archive", &format!("{prefix}database/manifest.json"), &manifest.to_string()).await
}

#[tokio::test]
async fn suspend_marks_the_bucket_and_resume_takes_the_mark_away() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    run(&storage, "create_bucket", &acme).await?;
    put(&storage, "landlord-acme", "data.csv", "1,2").await?;
    let ok = act(&storage, "suspend", &step("s-suspend", &acme)).await?;
    // s3s-fs keeps no bucket policies: detected, and the marker is all there is.
    assert_eq!(ok.outputs["storage.policy"], "unsupported");
    assert_eq!(marker(&storage, "landlord-acme", SUSPENDED).await?, ("id-acme".into(), Some("s-suspend".into())));
    // Twice is once.
    assert_eq!(act(&storage, "suspend", &step("s-suspend", &acme)).await?, ok);
    assert_eq!(keys(&storage, "landlord-acme", "").await?, [SUSPENDED, MARKER, "data.csv"]);

    // The compensation of another saga's suspend leaves this suspension.
    let mut stale = step("s-other", &acme);
    stale.compensate = true;
    let left = act(&storage, "resume", &stale).await?;
    assert!(left.outputs[FENCED].contains("suspended by saga s-suspend"), "{left:?}");
    assert!(keys(&storage, "landlord-acme", "").await?.contains(&SUSPENDED.to_owned()));

    // A resume (any saga) lifts it; twice is once; the data stays.
    let ok = act(&storage, "resume", &step("s-resume", &acme)).await?;
    assert_eq!(ok.outputs["storage.policy"], "unsupported");
    act(&storage, "resume", &step("s-resume", &acme)).await?;
    assert_eq!(keys(&storage, "landlord-acme", "").await?, [MARKER, "data.csv"]);

    // The suspend saga's own compensation lifts its suspension.
    act(&storage, "suspend", &step("s-2", &acme)).await?;
    let mut undo = step("s-2", &acme);
    undo.compensate = true;
    act(&storage, "resume", &undo).await?;
    assert_eq!(keys(&storage, "landlord-acme", "").await?, [MARKER, "data.csv"]);

    // Pooled: the marker under the prefix; the shared bucket's policy is not touched.
    let one = tenant("one", pb::Tier::Pooled);
    run(&storage, "create_bucket", &one).await?;
    let ok = act(&storage, "suspend", &step("s-1", &one)).await?;
    assert_eq!(ok.outputs["storage.policy"], "not_applicable");
    assert_eq!(marker(&storage, "landlord-pooled", "tenants/one/.landlord-suspended").await?.0, "id-one");
    act(&storage, "resume", &step("s-1", &one)).await?;
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/one/").await?, ["tenants/one/.landlord/tenant"]);
    Ok(())
}

#[tokio::test]
async fn another_tenants_place_is_never_suspended_exported_or_purged() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    storage.client().create_bucket().bucket("landlord-taken").send().await?;
    put(&storage, "landlord-taken", MARKER, "id-someone-else").await?;
    put(&storage, "landlord-taken", "theirs.csv", "precious").await?;
    let taken = tenant("taken", pb::Tier::Bridge);
    let prefix = "taken/id-taken/20261206T000000Z/";
    for (action, command) in [
        ("suspend", step("s1", &taken)),
        ("resume", step("s1", &taken)),
        ("export", export_command("s1", &taken, prefix)),
        ("purge", step("s1", &taken)),
    ] {
        let error = act(&storage, action, &command).await.expect_err(action);
        assert!(!error.retryable && error.code == "conflicting_owner", "{action}: {error}");
        assert!(error.message.contains("id-someone-else"), "{action}: {error}");
    }
    assert_eq!(keys(&storage, "landlord-taken", "").await?, [MARKER, "theirs.csv"], "nothing written or deleted");
    // Objects without a marker: not Landlord's either.
    storage.client().create_bucket().bucket("landlord-foreign").send().await?;
    put(&storage, "landlord-foreign", "precious.csv", "data").await?;
    let error = act(&storage, "purge", &step("s1", &tenant("foreign", pb::Tier::Bridge))).await.expect_err("foreign");
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    assert_eq!(keys(&storage, "landlord-foreign", "").await?, ["precious.csv"]);
    Ok(())
}

#[tokio::test]
async fn an_export_copies_the_objects_checks_every_file_and_writes_a_verified_manifest() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    run(&storage, "create_bucket", &acme).await?;
    put(&storage, "landlord-acme", "reports/2026 q4.csv", "a,b\n1,2\n").await?;
    put(&storage, "landlord-acme", "logo+small.png", "PNG…").await?;
    act(&storage, "suspend", &step("s-off", &acme)).await?;
    let prefix = format!("acme/id-acme/{}/", export_time(OffsetDateTime::now_utc()));
    storage.client().create_bucket().bucket("landlord-archive").send().await?;
    database_part(&storage, &prefix).await?;

    let ok = act(&storage, "export", &export_command("s-off", &acme, &prefix)).await?;
    assert_eq!(ok.outputs["export.location"], format!("s3://landlord-archive/{prefix}"));
    assert_eq!(ok.outputs["export.verified"], "true");
    let copies = keys(&storage, "landlord-archive", &format!("{prefix}objects/")).await?;
    assert_eq!(copies.len(), 2, "the tenant's objects and not Landlord's markers: {copies:?}");
    assert_eq!(
        text(&storage, "landlord-archive", &format!("{prefix}objects/reports/2026 q4.csv")).await?,
        "a,b\n1,2\n"
    );
    let manifest: Value =
        serde_json::from_str(&text(&storage, "landlord-archive", &format!("{prefix}manifest.json")).await?)?;
    assert_eq!(manifest["verified"], true);
    assert_eq!((manifest["tenant"].as_str(), manifest["key"].as_str()), (Some("id-acme"), Some("acme")));
    assert!(
        OffsetDateTime::parse(
            manifest["created_at"].as_str().unwrap_or(""),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    let objects = manifest["objects"].as_array().cloned().unwrap_or_default();
    assert_eq!(objects.len(), 2);
    let report = objects.iter().find(|o| o["key"] == "reports/2026 q4.csv").cloned().unwrap_or_default();
    assert_eq!((report["size"].as_u64(), report["sha256"].as_str()), (Some(8), Some(sha256(b"a,b\n1,2\n").as_str())));
    assert_eq!(manifest["database"]["included"], true);
    assert_eq!(manifest["database"]["tables"][0]["rows"], 2);
    assert_eq!(manifest["database"]["files"].as_array().map(Vec::len), Some(2));
    assert_eq!(manifest["database"]["files"][0]["key"], "database/schema.sql");
    assert_eq!(text(&storage, "landlord-archive", ARCHIVE_MARKER).await?, "landlord-archive");

    // Again: the same export, nothing doubled; a copy whose source is gone since is removed.
    storage.client().delete_object().bucket("landlord-acme").key("logo+small.png").send().await?;
    act(&storage, "export", &export_command("s-off", &acme, &prefix)).await?;
    assert_eq!(
        keys(&storage, "landlord-archive", &format!("{prefix}objects/")).await?,
        [format!("{prefix}objects/reports/2026 q4.csv")]
    );

    // Pooled: the prefix's objects only, keys relative to it; no database step recorded as such.
    let (one, two) = (tenant("one", pb::Tier::Pooled), tenant("two", pb::Tier::Pooled));
    run(&storage, "create_bucket", &one).await?;
    run(&storage, "create_bucket", &two).await?;
    put(&storage, "landlord-pooled", "tenants/one/a.txt", "1").await?;
    put(&storage, "landlord-pooled", "tenants/two/b.txt", "2").await?;
    let pooled_prefix = "one/id-one/20261206T000000Z/";
    act(&storage, "export", &export_command("s-p", &one, pooled_prefix)).await?;
    assert_eq!(
        keys(&storage, "landlord-archive", &format!("{pooled_prefix}objects/")).await?,
        [format!("{pooled_prefix}objects/a.txt")]
    );
    let manifest: Value =
        serde_json::from_str(&text(&storage, "landlord-archive", &format!("{pooled_prefix}manifest.json")).await?)?;
    assert_eq!(manifest["database"]["included"], false);
    assert_eq!(manifest["objects"][0]["key"], "a.txt");

    // Without a prefix there is nothing to do.
    let error = act(&storage, "export", &step("s-off", &acme)).await.expect_err("no prefix");
    assert_eq!(error.code, "invalid_export_prefix");
    Ok(())
}

#[tokio::test]
async fn a_file_that_does_not_match_its_manifest_fails_the_export_naming_it() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    run(&storage, "create_bucket", &acme).await?;
    put(&storage, "landlord-acme", "data.csv", "1").await?;
    let prefix = "acme/id-acme/20261206T000000Z/";
    storage.client().create_bucket().bucket("landlord-archive").send().await?;
    database_part(&storage, prefix).await?;
    act(&storage, "export", &export_command("s1", &acme, prefix)).await?;

    // The rows file changed after the database step wrote its manifest.
    put(&storage, "landlord-archive", &format!("{prefix}database/tables/notes.tsv"), "1\thello\n2\tWORLD\n").await?;
    let error = act(&storage, "export", &export_command("s1", &acme, prefix)).await.expect_err("tampered");
    assert!(!error.retryable && error.code == "export_unverified", "{error}");
    assert!(error.message.contains("database/tables/notes.tsv") && error.message.contains("SHA-256"), "{error}");
    // Shorter: the size says so first.
    put(&storage, "landlord-archive", &format!("{prefix}database/tables/notes.tsv"), "1").await?;
    let error = act(&storage, "export", &export_command("s1", &acme, prefix)).await.expect_err("truncated");
    assert!(error.code == "export_unverified" && error.message.contains("bytes, expected"), "{error}");
    // Gone.
    storage
        .client()
        .delete_object()
        .bucket("landlord-archive")
        .key(format!("{prefix}database/tables/notes.tsv"))
        .send()
        .await?;
    let error = act(&storage, "export", &export_command("s1", &acme, prefix)).await.expect_err("missing");
    assert!(error.code == "export_unverified" && error.message.contains("notes.tsv is missing"), "{error}");
    // Restored, plus a file the manifest does not list.
    database_part(&storage, prefix).await?;
    put(&storage, "landlord-archive", &format!("{prefix}database/extra.sql"), "DROP TABLE notes;").await?;
    let error = act(&storage, "export", &export_command("s1", &acme, prefix)).await.expect_err("stray");
    assert!(error.code == "export_unverified" && error.message.contains("database/extra.sql is not in"), "{error}");
    storage
        .client()
        .delete_object()
        .bucket("landlord-archive")
        .key(format!("{prefix}database/extra.sql"))
        .send()
        .await?;
    act(&storage, "export", &export_command("s1", &acme, prefix)).await?;
    Ok(())
}

#[tokio::test]
async fn a_purge_removes_everything_then_the_bucket_and_is_done_when_gone() -> Result<()> {
    let mut s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    let acme = tenant("acme", pb::Tier::Bridge);
    run(&storage, "create_bucket", &acme).await?;
    futures_util::stream::iter(0..1_200)
        .map(|i| {
            let storage = &storage;
            async move { put(storage, "landlord-acme", &format!("data/{i:04}"), "x").await }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    act(&storage, "suspend", &step("s-off", &acme)).await?;
    // An upload never completed.
    let upload = storage.client().create_multipart_upload().bucket("landlord-acme").key("big.bin").send().await?;
    storage
        .client()
        .upload_part()
        .bucket("landlord-acme")
        .key("big.bin")
        .upload_id(upload.upload_id().unwrap_or_default())
        .part_number(1)
        .body(ByteStream::from_static(b"part"))
        .send()
        .await?;

    // The server goes away mid-way: retryable, and back up the purge finishes.
    s3.kill();
    let error = act(&storage, "purge", &step("s-purge", &acme)).await.expect_err("down");
    assert!(error.retryable, "{error}");
    s3.restart().await?;
    let ok = act(&storage, "purge", &step("s-purge", &acme)).await?;
    assert_eq!(
        ok.outputs["storage.removed_objects"], "1202",
        "1,200 objects, the suspension marker and the ownership marker"
    );
    // s3s-fs cannot list unfinished uploads; a server that can has them aborted.
    assert_eq!(ok.outputs["storage.uploads_aborted"], "unsupported");
    assert!(!bucket_exists(&storage, "landlord-acme").await);
    let again = act(&storage, "purge", &step("s-purge", &acme)).await?;
    assert!(again.outputs["storage.purge"].contains("already gone"), "{again:?}");
    Ok(())
}

#[tokio::test]
async fn a_pooled_purge_empties_its_prefix_and_leaves_the_other_tenants() -> Result<()> {
    let s3 = S3Server::start().await?;
    let storage = super::storage(&s3)?;
    let (one, two) = (tenant("one", pb::Tier::Pooled), tenant("two", pb::Tier::Pooled));
    run(&storage, "create_bucket", &one).await?;
    run(&storage, "create_bucket", &two).await?;
    put(&storage, "landlord-pooled", "tenants/one/a/b.txt", "1").await?;
    put(&storage, "landlord-pooled", "tenants/two/c.txt", "2").await?;
    // A key that shares the prefix's first letters is another tenant's.
    run(&storage, "create_bucket", &tenant("one-more", pb::Tier::Pooled)).await?;
    put(&storage, "landlord-pooled", "tenants/one-more/d.txt", "3").await?;
    act(&storage, "purge", &step("s-purge", &one)).await?;
    assert!(keys(&storage, "landlord-pooled", "tenants/one/").await?.is_empty());
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/two/").await?.len(), 2);
    assert_eq!(keys(&storage, "landlord-pooled", "tenants/one-more/").await?.len(), 2);
    assert!(bucket_exists(&storage, "landlord-pooled").await);
    act(&storage, "purge", &step("s-purge", &one)).await?;
    Ok(())
}

#[tokio::test]
async fn the_sweep_deletes_exports_past_their_retention_only() -> Result<()> {
    let s3 = S3Server::start().await?;
    let mut env = env_for(&s3);
    env.push(("LANDLORD_EXPORT_RETENTION".into(), "2h".into()));
    let settings = Settings::from_env(&Env::from_pairs(env))?;
    assert_eq!(settings.export_retention, Duration::from_secs(7200));
    let storage = Storage::new(settings);
    let now = OffsetDateTime::now_utc();
    let old = format!("acme/id-acme/{}/", export_time(now - Duration::from_secs(3 * 3600)));
    let fresh = format!("acme/id-acme/{}/", export_time(now - Duration::from_secs(3600)));
    let other = format!("beta/id-beta/{}/", export_time(now - Duration::from_secs(30 * 24 * 3600)));
    let (acme, beta) = (tenant("acme", pb::Tier::Bridge), tenant("beta", pb::Tier::Bridge));
    run(&storage, "create_bucket", &acme).await?;
    run(&storage, "create_bucket", &beta).await?;
    put(&storage, "landlord-acme", "f.txt", "x").await?;
    for (prefix, who) in [(&old, &acme), (&fresh, &acme), (&other, &beta)] {
        act(&storage, "export", &export_command("s", who, prefix)).await?;
    }
    // A folder whose segment is not a time: dated by its manifest's created_at.
    let named = "beta/id-beta/manual/";
    let created = (now - Duration::from_secs(5 * 3600)).format(&time::format_description::well_known::Rfc3339)?;
    put(&storage, "landlord-archive", &format!("{named}manifest.json"), &json!({"created_at": created}).to_string())
        .await?;
    put(&storage, "landlord-archive", &format!("{named}objects/x"), "x").await?;
    let unknown = "beta/id-beta/undated/";
    put(&storage, "landlord-archive", &format!("{unknown}objects/x"), "x").await?;

    let mut removed = storage.sweep_exports(now, storage.settings().export_retention).await?;
    removed.sort();
    let mut expected = vec![old.clone(), other.clone(), named.to_owned()];
    expected.sort();
    assert_eq!(removed, expected);
    for gone in &expected {
        assert!(keys(&storage, "landlord-archive", gone).await?.is_empty(), "{gone}");
    }
    assert!(keys(&storage, "landlord-archive", &fresh).await?.len() >= 2, "the fresh export stays");
    assert_eq!(keys(&storage, "landlord-archive", unknown).await?.len(), 1, "undated: left alone");
    assert_eq!(keys(&storage, "landlord-archive", ARCHIVE_MARKER).await?.len(), 1);
    assert!(storage.sweep_exports(now, storage.settings().export_retention).await?.is_empty());
    Ok(())
}
