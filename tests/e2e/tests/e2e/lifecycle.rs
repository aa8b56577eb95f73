//! The tenant lifecycle after ACTIVE (issue 25, docs/lifecycle.md) through
//! the gateway's API, each outcome checked in the backends themselves:
//! suspend and resume per tier, an update of domains, offboarding with its
//! export, restore, the purge when the grace period ends and the key used
//! again; duplicate and concurrent requests; Clerk's `organization.deleted`
//! delivered five times.

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{ARCHIVE_BUCKET, Operation, SHARED_REALM, Stack, TenantLogin};
use landlord_testkit::{eventually, sha256_hex};
use serde_json::{Value, json};

use crate::support::outcome;

/// Provisions `(key, plan)` pairs at once with the CLI; each must be ACTIVE.
pub(crate) async fn provision(stack: &Stack, tenants: &[(&str, &str)]) -> Result<()> {
    let requests = tenants.iter().map(|(key, plan)| stack.request(key, plan));
    for ((key, _), output) in tenants.iter().zip(futures_util::future::join_all(requests).await) {
        let (ok, text) = outcome(&output?);
        anyhow::ensure!(ok && text.contains("ACTIVE"), "{key}: {text}\n{}", stack.logs());
    }
    Ok(())
}

/// The tenant's pooled rows as an application sees them: a login role
/// granted `landlord_pooled_app`, with `landlord.tenant_id` set.
pub(crate) struct PooledApp {
    url: String,
}

impl PooledApp {
    /// Creates the application's role, as an operator would.
    pub(crate) async fn create(stack: &Stack) -> Result<Self> {
        let mut data = stack.tenant_data().await?;
        let database = stack.tenant_data.name.clone();
        for statement in [
            "CREATE ROLE pooled_app LOGIN PASSWORD 'pooled-app-password' IN ROLE landlord_pooled_app".to_owned(),
            format!("GRANT CONNECT ON DATABASE \"{database}\" TO pooled_app"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut data).await?;
        }
        let superuser = format!("postgres:{}@", stack.pg.password());
        Ok(Self { url: stack.pg.url(&database).replace(&superuser, "pooled_app:pooled-app-password@") })
    }

    /// How many of the tenant's settings rows the application sees.
    pub(crate) async fn visible_rows(&self, tenant_id: &str) -> Result<i64> {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(tenant_id).execute(&mut *tx).await?;
        let rows = sqlx::query_scalar("SELECT count(*) FROM landlord_pooled.settings").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }
}

/// Whether a connection still answers.
async fn answers(conn: &mut sqlx::PgConnection) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(conn).await.is_ok()
}

/// The `enabled` flag of the tenant's realm (bridge, silo) or organization
/// (pooled) in the Keycloak double.
fn idp_enabled(stack: &Stack, key: &str, tier: &str) -> Result<bool> {
    let record = if tier == "pooled" {
        stack.keycloak.organizations(SHARED_REALM).into_iter().find(|o| o["name"] == key)
    } else {
        stack.keycloak.realm(&format!("tenant-{key}"))
    };
    let record = record.with_context(|| format!("{key}: no realm or organization"))?;
    Ok(record["enabled"].as_bool().unwrap_or(true))
}

/// Where the storage worker puts the suspension marker.
fn suspension_marker(stack: &Stack, key: &str, tier: &str) -> std::path::PathBuf {
    let data = stack.s3.data_dir();
    if tier == "pooled" {
        data.join("landlord-pooled").join("tenants").join(key).join(".landlord-suspended")
    } else {
        data.join(format!("landlord-{key}")).join(".landlord-suspended")
    }
}

/// A table of the tenant's own schema, qualified.
fn accounts(login: &TenantLogin) -> String {
    format!("\"{}\".accounts", login.schema)
}

#[tokio::test]
async fn every_tier_is_suspended_resumed_and_updated_in_every_backend() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    let tiers = [("bridgelc", "standard", "bridge"), ("silolc", "enterprise", "silo"), ("poollc", "free", "pooled")];
    provision(&stack, &tiers.map(|(key, plan, _)| (key, plan))).await?;
    let app = PooledApp::create(&stack).await?;
    let (pooled_id, _) = stack.tenant("poollc").await?;
    assert_eq!(app.visible_rows(&pooled_id).await?, 3, "the pooled seed's settings");

    // The tenants' own roles, connected and writing, before the suspension.
    let mut open = Vec::new();
    for key in ["bridgelc", "silolc"] {
        let login = stack.tenant_login(key)?;
        let mut conn = login.connect().await.with_context(|| format!("{key} logs in as {}", login.role))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {} (name) VALUES ('before the suspension')",
            accounts(&login)
        )))
        .execute(&mut conn)
        .await?;
        open.push((key, login, conn));
    }

    let (bridge, silo, pooled) =
        tokio::join!(stack.suspend("bridgelc"), stack.suspend("silolc"), stack.suspend("poollc"));
    for end in [bridge?, silo?, pooled?] {
        assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "SUSPENDED"), "{end:?}");
    }
    for (key, login, conn) in &mut open {
        assert!(!answers(conn).await, "{key}: the open connection was terminated");
        let refused = login.connect().await;
        assert!(refused.is_err(), "{key}: the suspended role cannot log in");
    }
    assert_eq!(app.visible_rows(&pooled_id).await?, 0, "a suspended pooled tenant's rows are invisible");
    for (key, _, tier) in tiers {
        assert!(!idp_enabled(&stack, key, tier)?, "{key}: realm or organization disabled");
        assert!(suspension_marker(&stack, key, tier).exists(), "{key}: the bucket or prefix is marked suspended");
    }
    // The admin is told (non-fatal, so only eventually).
    for (key, _, _) in tiers {
        let to = format!("admin@{key}.test");
        eventually(&format!("{key}'s suspension mail"), Duration::from_secs(20), || async {
            (stack.smtp.mails_to(&to).len() >= 2).then_some(())
        })
        .await?;
    }

    let (bridge, silo, pooled) = tokio::join!(stack.resume("bridgelc"), stack.resume("silolc"), stack.resume("poollc"));
    for end in [bridge?, silo?, pooled?] {
        assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "ACTIVE"), "{end:?}");
    }
    for (key, login, _) in &open {
        let mut conn = login.connect().await.with_context(|| format!("{key}: the role logs in again"))?;
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {} WHERE name = 'before the suspension'",
            accounts(login)
        )))
        .fetch_one(&mut conn)
        .await?;
        assert_eq!(rows, 1, "{key}: its data is untouched");
    }
    assert_eq!(app.visible_rows(&pooled_id).await?, 3, "the pooled rows are back");
    for (key, _, tier) in tiers {
        assert!(idp_enabled(&stack, key, tier)?, "{key}: enabled again");
        assert!(!suspension_marker(&stack, key, tier).exists(), "{key}: the marker is gone");
    }

    // An update of domains reaches the OIDC client (bridge, silo) or the
    // organization (pooled).
    for (key, _, tier) in tiers {
        let domains = [format!("{key}.example.org"), format!("app.{key}.example.org")];
        let end = stack.operate(key, &Operation::Update(json!({ "domains": domains }))).await?;
        assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "ACTIVE"), "{end:?}");
        assert_eq!(end.tenant.domains, domains, "{key}");
        if tier == "pooled" {
            let orgs = stack.keycloak.organizations(SHARED_REALM);
            let org = orgs.iter().find(|o| o["name"] == key).context("no organization")?;
            let names: Vec<&str> =
                org["domains"].as_array().into_iter().flatten().filter_map(|d| d["name"].as_str()).collect();
            assert_eq!(names.len(), 2, "{key}: {org}");
            assert!(domains.iter().all(|d| names.contains(&d.as_str())), "{key}: {org}");
        } else {
            let client = stack
                .keycloak
                .clients(&format!("tenant-{key}"))
                .into_iter()
                .find(|c| c["clientId"] == format!("{key}-app"))
                .context("no client")?;
            let redirects: Vec<String> = domains.iter().map(|d| format!("https://{d}/*")).collect();
            assert_eq!(client["redirectUris"], json!(redirects), "{key}: {client}");
            let origins = client["webOrigins"].to_string();
            assert!(domains.iter().all(|d| origins.contains(&format!("https://{d}"))), "{key}: {client}");
            assert!(!origins.contains("example.com"), "{key}: the old origin is gone: {client}");
        }
    }

    // Who asked and why, in the audit log the API serves.
    let audit = stack.call("GET", "/v1/tenants/bridgelc/audit", None, None).await?;
    assert_eq!(audit.status, 200, "{audit}");
    let text = audit.body.to_string();
    for word in ["suspend", "resume", "update", "non-payment", "ops"] {
        assert!(text.contains(word), "no {word:?} in the audit log: {text}");
    }
    stack.assert_no_drift().await
}

/// The export at `location`: verified; every file either manifest lists
/// (the export's: the database part, its manifest and the objects; the
/// database worker's: its files) is stored with that size and SHA-256; the
/// database manifest counts `rows` rows in `accounts`; the dump holds `row`.
fn check_export(stack: &Stack, location: &str, rows: i64, row: &str) -> Result<()> {
    let prefix = location
        .strip_prefix(&format!("s3://{ARCHIVE_BUCKET}/"))
        .with_context(|| format!("not in the archive bucket: {location}"))?;
    let manifest = stack.archive_manifest(location)?;
    assert_eq!(manifest["verified"], true, "{manifest}");
    let database: Value = serde_json::from_slice(&stack.archive_file(location, "database/manifest.json")?)?;
    // (folder, entry): the export's objects are named by their key in the
    // tenant's bucket, copied under `objects/`; the rest by their key in
    // the export (relative, or with the prefix).
    let mut listed: Vec<(&str, &Value)> = Vec::new();
    listed.extend(manifest["database"]["files"].as_array().into_iter().flatten().map(|f| ("", f)));
    listed.extend(manifest["objects"].as_array().into_iter().flatten().map(|f| ("objects/", f)));
    listed.push(("", &manifest["database"]["manifest"]));
    listed.extend(database["files"].as_array().into_iter().flatten().map(|f| ("", f)));
    for (folder, file) in &listed {
        let key = file["key"].as_str().with_context(|| format!("a file without a key: {file}"))?;
        let key = format!("{folder}{}", key.strip_prefix(prefix).unwrap_or(key));
        let bytes = stack.archive_file(location, &key)?;
        assert_eq!(file["size"].as_u64(), Some(bytes.len() as u64), "{key}: {file}");
        assert_eq!(file["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()), "{key}: {file}");
    }
    assert!(listed.len() >= 3, "the manifests list the files: {manifest}");
    let rows_of = |tables: &Value| {
        tables
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["name"].as_str().is_some_and(|n| n == "accounts" || n.ends_with(".accounts")))
            .and_then(|t| t["rows"].as_i64())
    };
    assert_eq!(rows_of(&database["tables"]), Some(rows), "row count of accounts: {database}");
    assert_eq!(rows_of(&manifest["database"]["tables"]), Some(rows), "the export's manifest agrees: {manifest}");
    let files = stack.archive_files(location)?;
    let dumped = files
        .iter()
        .filter(|f| f.starts_with("database/") && !f.ends_with("manifest.json"))
        .any(|f| stack.archive_file(location, f).is_ok_and(|b| String::from_utf8_lossy(&b).contains(row)));
    assert!(dumped, "the tenant's row {row:?} is in the dump: {files:?}");
    Ok(())
}

#[tokio::test]
async fn offboarding_exports_restores_then_purges_and_the_key_is_free_again() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    provision(&stack, &[("leaving", "standard")]).await?;
    let (first_id, _) = stack.tenant("leaving").await?;
    let login = stack.tenant_login("leaving")?;
    let mut conn = login.connect().await?;
    let row = "written by the tenant itself";
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {} (name) VALUES ('{row}')", accounts(&login))))
        .execute(&mut conn)
        .await?;
    drop(conn);
    // An object of the tenant's, as its application would have put it.
    let bucket = stack.s3.data_dir().join("landlord-leaving");
    std::fs::write(bucket.join("invoice-1.txt"), b"an object of the tenant's")?;

    // Offboarding: suspended at once, exported, the purge an hour away.
    let end = stack.operate("leaving", &Operation::offboard(3600)).await?;
    assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "DELETION_SCHEDULED"), "{end:?}");
    let purge_in = end.tenant.purge_in.context("no purge_at")?;
    assert!((3500.0..=3600.0).contains(&purge_in), "the purge is due in an hour: {purge_in}");
    assert!(login.connect().await.is_err(), "offboarding suspends: the role cannot log in");
    assert!(!idp_enabled(&stack, "leaving", "bridge")?);
    let location = end.tenant.export_location.clone().context("no export location")?;
    assert!(location.contains(&format!("/leaving/{first_id}/")), "{location}");
    check_export(&stack, &location, 1, row)?;
    let files = stack.archive_files(&location)?;
    let object = files.iter().find(|f| f.starts_with("objects/") && f.ends_with("invoice-1.txt"));
    let object = object.with_context(|| format!("the object is exported: {files:?}"))?;
    assert_eq!(stack.archive_file(&location, object)?, b"an object of the tenant's");

    // Restored within the grace period: ACTIVE, the row readable by the role.
    let end = stack.operate("leaving", &Operation::Restore).await?;
    assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "ACTIVE"), "{end:?}");
    assert!(end.tenant.purge_in.is_none(), "the purge is called off: {end:?}");
    let mut conn = login.connect().await.context("the restored role logs in")?;
    let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {} WHERE name = '{row}'",
        accounts(&login)
    )))
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(found, 1);
    drop(conn);
    assert!(idp_enabled(&stack, "leaving", "bridge")?);

    // Offboarded again with a short grace period: the timer purges it.
    let end = stack.operate("leaving", &Operation::offboard(2)).await?;
    assert_eq!(end.tenant.status, "DELETION_SCHEDULED", "{end:?}");
    let tombstone = stack.wait_status("leaving", "DELETED", Duration::from_secs(60)).await?;
    assert_eq!(tombstone.id, first_id);
    // The tombstone keeps who asked for the deletion and why: the
    // offboarding's, not the purge timer's.
    assert_eq!(
        (tombstone.deleted_by.as_deref(), tombstone.deletion_reason.as_deref()),
        (Some("ops"), Some("customer left")),
        "{tombstone:?}"
    );
    let left = stack.backend_objects("leaving").await?;
    assert!(left.is_empty(), "every backend object is gone: {left:?}");
    assert!(!stack.keycloak.realm_names().contains(&"tenant-leaving".to_owned()));
    let resources = stack.resources("leaving").await?;
    assert!(resources.iter().all(|(_, _, deleted)| *deleted), "every resource marked deleted: {resources:?}");
    let operations: Vec<String> =
        stack.sagas("leaving").await?.into_iter().map(|(_, op, state)| format!("{op} {state}")).collect();
    assert_eq!(
        operations,
        ["provision succeeded", "offboard succeeded", "restore succeeded", "offboard succeeded", "purge succeeded"]
    );
    stack.assert_no_drift().await?;
    // The export stays for its retention period.
    assert!(stack.archive_manifest(&location).is_ok(), "the export outlives the tenant");

    // The key is free: a new request (a new Idempotency-Key) makes a new
    // tenant with a new id.
    let again = stack.create("leaving", "standard", "leaving-again").await?;
    assert_eq!(again.status, 202, "{again}");
    stack.wait_status("leaving", "ACTIVE", Duration::from_secs(60)).await?;
    let tenants = stack.tenants_of_key("leaving").await?;
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    assert_eq!(tenants[0], (first_id.clone(), "DELETED".to_owned()));
    assert_eq!(tenants[1].1, "ACTIVE");
    assert_ne!(tenants[1].0, first_id, "a new tenant id");
    assert!(stack.keycloak.realm("tenant-leaving").is_some());
    stack.assert_no_drift().await
}

#[tokio::test]
async fn duplicate_requests_make_one_operation_and_a_conflicting_one_gets_409() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    provision(&stack, &[("dupco", "standard")]).await?;

    // The same request five times at once, one Idempotency-Key: one saga.
    let same = Operation::suspend();
    let answers = futures_util::future::join_all((0..5).map(|_| stack.ask_with("dupco", &same, "suspend-once"))).await;
    let mut sagas = std::collections::BTreeSet::new();
    for answer in answers {
        let answer = answer?;
        assert_eq!(answer.status, 202, "a repeat is accepted again: {answer}");
        sagas.insert(answer.saga_id().context("no saga id")?);
    }
    assert_eq!(sagas.len(), 1, "one saga for one idempotency key: {sagas:?}");
    let saga = sagas.pop_first().context("no saga")?;
    // Another operation while it runs (or is requested): 409 naming it.
    let conflicting = stack.ask("dupco", &Operation::offboard(3600)).await?;
    let end = stack.wait_saga(&saga, Duration::from_secs(60)).await?;
    assert_eq!((end.state.as_str(), end.tenant.status.as_str()), ("succeeded", "SUSPENDED"), "{end:?}");
    assert_eq!(conflicting.status, 409, "{conflicting}");
    assert!(conflicting.body.to_string().contains(&saga), "the 409 names the running saga: {conflicting}");
    // The repeat after the end names the same saga, and starts nothing.
    let again = stack.ask_with("dupco", &same, "suspend-once").await?;
    assert_eq!((again.status, again.saga_id()), (202, Some(saga.clone())), "{again}");
    // Not allowed from SUSPENDED: 409.
    let twice = stack.ask("dupco", &Operation::suspend()).await?;
    assert_eq!(twice.status, 409, "{twice}");

    // Different requests at once: exactly one is accepted.
    let (offboard, update) = (Operation::offboard(3600), Operation::Update(json!({ "display_name": "Dup Co." })));
    let (resume, offboard, update) = tokio::join!(
        stack.ask("dupco", &Operation::Resume),
        stack.ask("dupco", &offboard),
        stack.ask("dupco", &update),
    );
    let answers = [resume?, offboard?, update?];
    let accepted: Vec<&landlord_e2e::Answer> = answers.iter().filter(|a| a.status == 202).collect();
    let refused = answers.iter().filter(|a| a.status == 409).count();
    assert_eq!((accepted.len(), refused), (1, 2), "{answers:?}");
    let winner = accepted[0].saga_id().context("no saga id")?;
    for loser in answers.iter().filter(|a| a.status == 409) {
        assert!(loser.body.to_string().contains(&winner), "the 409 names the accepted saga {winner}: {loser}");
    }
    let end = stack.wait_saga(&winner, Duration::from_secs(60)).await?;
    assert_eq!(end.state, "succeeded", "{end:?}");

    let operations: Vec<String> = stack.sagas("dupco").await?.into_iter().map(|(_, op, _)| op).collect();
    assert_eq!(operations.len(), 3, "provision, one suspend and one more: {operations:?}");
    assert_eq!(operations[..2], ["provision", "suspend"]);
    stack.assert_no_drift().await
}

/// Clerk's `organization.created` and its creator's `org:admin`
/// membership, then `organization.deleted` (a deleted-object stub).
fn clerk_events(org: &str, slug: &str) -> [Value; 3] {
    [
        json!({
            "type": "organization.created", "object": "event", "timestamp": 1_717_000_000_000_u64,
            "data": {
                "object": "organization", "id": org, "name": "Gone Soon Inc.", "slug": slug,
                "created_by": "user_gone", "members_count": 1, "max_allowed_memberships": 5,
                "admin_delete_enabled": true, "has_image": false, "public_metadata": {},
                "created_at": 1_717_000_000_000_u64, "updated_at": 1_717_000_000_000_u64,
            },
        }),
        json!({
            "type": "organizationMembership.created", "object": "event", "timestamp": 1_717_000_000_001_u64,
            "data": {
                "object": "organization_membership", "id": "orgmem_gone", "role": "org:admin",
                "permissions": ["org:sys_memberships:manage"],
                "organization": {"object": "organization", "id": org, "name": "Gone Soon Inc.", "slug": slug},
                "public_user_data": {"user_id": "user_gone", "identifier": format!("admin@{slug}.test"),
                                     "first_name": "Ada", "last_name": "Gone", "has_image": false},
                "created_at": 1_717_000_000_001_u64, "updated_at": 1_717_000_000_001_u64,
            },
        }),
        json!({
            "type": "organization.deleted", "object": "event", "timestamp": 1_717_000_100_000_u64,
            "data": { "object": "organization", "id": org, "deleted": true },
        }),
    ]
}

/// One signed delivery to the gateway's Clerk webhook: its status.
async fn deliver(stack: &Stack, svix_id: &str, event: &Value) -> Result<u16> {
    Ok(stack.deliver_clerk(svix_id, event).await?.0)
}

#[tokio::test]
async fn clerk_organization_deleted_delivered_five_times_offboards_once() -> Result<()> {
    let stack = Stack::start_with_gateway().await?;
    let [created, membership, deleted] = clerk_events("org_gone", "gonesoon");
    assert!((200..300).contains(&deliver(&stack, "msg_gone_created", &created).await?));
    assert!((200..300).contains(&deliver(&stack, "msg_gone_admin", &membership).await?));
    stack.wait_status("gonesoon", "ACTIVE", Duration::from_secs(60)).await?;

    // Svix delivers the deletion five times under one svix-id: three at
    // once, then two more.
    let first = futures_util::future::join_all((0..3).map(|_| deliver(&stack, "msg_gone_deleted", &deleted))).await;
    let mut statuses: Vec<u16> = first.into_iter().collect::<Result<_>>()?;
    for _ in 0..2 {
        statuses.push(deliver(&stack, "msg_gone_deleted", &deleted).await?);
    }
    assert!(statuses.iter().all(|s| (200..300).contains(s)), "every delivery acknowledged: {statuses:?}");
    let scheduled = stack.wait_status("gonesoon", "DELETION_SCHEDULED", Duration::from_secs(60)).await?;
    // The default grace period (LANDLORD_DELETION_GRACE, 30 days here).
    let purge_in = scheduled.purge_in.context("no purge_at")?;
    assert!(purge_in > 29.0 * 86_400.0, "the default grace period: {purge_in} s");
    let sagas = stack.sagas("gonesoon").await?;
    let offboards: Vec<_> = sagas.iter().filter(|(_, op, _)| op == "offboard").collect();
    assert_eq!(offboards.len(), 1, "one offboarding: {sagas:?}");
    assert_eq!(sagas.len(), 2, "provision and offboard: {sagas:?}");
    let mut control = stack.control().await?;
    let requested_by: String = sqlx::query_scalar("SELECT requested_by FROM sagas WHERE id = $1::uuid")
        .bind(&offboards[0].0)
        .fetch_one(&mut control)
        .await?;
    assert_eq!(requested_by, "clerk");
    stack.assert_no_drift().await
}
