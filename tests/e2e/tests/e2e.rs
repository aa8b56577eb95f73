//! End to end: the real service binaries against real servers (Keycloak:
//! the contract double), tenants asked for with the `landlord` CLI, and
//! every outcome checked in the backends themselves, not only in
//! Landlord's tables.

#[path = "e2e/nemesis.rs"]
mod nemesis;

use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_e2e::{SHARED_REALM, Stack};
use landlord_testkit::eventually;
use serde_json::{Value, json};

/// The CLI's verdict: it exits 0 on ACTIVE, 1 on FAILED.
fn outcome(output: &std::process::Output) -> (bool, String) {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The temporary password the idp worker gave Keycloak for `realm`'s admin.
fn posted_password(stack: &Stack, realm: &str) -> Result<String> {
    let created = stack.keycloak.requests_to("POST", &format!("/admin/realms/{realm}/users"));
    let body: Value = serde_json::from_str(&created.first().context("no user was created")?.body)?;
    Ok(body["credentials"][0]["value"].as_str().context("no password")?.to_owned())
}

fn tenant_id_of(value: &Value) -> Option<String> {
    match &value["attributes"]["tenantId"] {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// Waits until step `step` of tenant `key`'s saga is in `state`.
async fn wait_for_step(stack: &Stack, key: &str, step: &str, state: &str) -> Result<()> {
    eventually(&format!("{key}'s {step} to be {state}"), Duration::from_secs(60), || async {
        let steps = stack.steps(key).await.ok()?;
        steps.iter().any(|(n, s, _)| n == step && s == state).then_some(())
    })
    .await
}

async fn count(db: &mut sqlx::PgConnection, sql: &str, name: &str) -> Result<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).bind(name).fetch_one(db).await?)
}

#[tokio::test]
async fn every_tier_is_provisioned_and_checked_in_each_backend() -> Result<()> {
    let stack = Stack::start().await?;
    let (bridge, silo, pooled) = tokio::join!(
        stack.request("bridgeco", "standard"),
        stack.request("siloco", "enterprise"),
        stack.request("poolco", "free"),
    );
    for (key, output) in [("bridgeco", bridge?), ("siloco", silo?), ("poolco", pooled?)] {
        let (ok, text) = outcome(&output);
        assert!(ok && text.contains("ACTIVE"), "{key}: {text}\n{}", stack.logs());
    }
    let mut data = stack.tenant_data().await?;

    // Bridge: realm, client, admin; schema and role; bucket; the welcome mail.
    let (id, status) = stack.tenant("bridgeco").await?;
    assert_eq!(status, "ACTIVE");
    let realm = stack.keycloak.realm("tenant-bridgeco").context("no realm")?;
    assert_eq!(tenant_id_of(&realm).as_deref(), Some(id.as_str()));
    let client = stack.keycloak.clients("tenant-bridgeco").into_iter().find(|c| c["clientId"] == "bridgeco-app");
    let client = client.context("no client")?;
    assert_eq!(client["publicClient"], true);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["redirectUris"], json!(["https://bridgeco.example.com/*"]));
    let users = stack.keycloak.users("tenant-bridgeco");
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["username"], "admin@bridgeco.test");
    let schema_owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1")
            .bind("tenant_bridgeco")
            .fetch_one(&mut data)
            .await?;
    assert_eq!(schema_owner, "tenant_bridgeco");
    assert!(stack.buckets()?.contains(&"landlord-bridgeco".to_owned()));
    let password = posted_password(&stack, "tenant-bridgeco")?;
    let mails = stack.smtp.mails_to("admin@bridgeco.test");
    assert_eq!(mails.len(), 1, "one welcome mail");
    assert!(mails[0].decoded().contains(&format!("Temporary password: {password}")), "{}", mails[0].raw);
    for service in landlord_e2e::SERVICES {
        assert!(!stack.log(service).contains(&password), "{service} logged the temporary password");
    }

    // Silo: its own realm and database.
    assert!(stack.keycloak.realm("tenant-siloco").is_some());
    let databases = count(&mut data, "SELECT count(*) FROM pg_database WHERE datname = $1", "tenant_siloco").await?;
    assert_eq!(databases, 1);
    let roles = count(&mut data, "SELECT count(*) FROM pg_roles WHERE rolname = $1", "tenant_siloco").await?;
    assert_eq!(roles, 1);
    assert!(stack.buckets()?.contains(&"landlord-siloco".to_owned()));

    // Pooled: an organization in the shared realm, rows, a prefix.
    let (pooled_id, _) = stack.tenant("poolco").await?;
    assert!(stack.keycloak.realm("tenant-poolco").is_none(), "no realm of its own");
    let orgs = stack.keycloak.organizations(SHARED_REALM);
    let org = orgs.iter().find(|o| o["name"] == "poolco").context("no organization")?;
    assert_eq!(tenant_id_of(org).as_deref(), Some(pooled_id.as_str()));
    let members = stack.keycloak.members(SHARED_REALM, org["id"].as_str().unwrap_or_default());
    assert_eq!(members.len(), 1);
    let rows =
        count(&mut data, "SELECT count(*) FROM landlord_pooled.tenants WHERE tenant_id::text = $1", &pooled_id).await?;
    assert_eq!(rows, 1);
    let prefix = stack.s3.data_dir().join("landlord-pooled").join("tenants").join("poolco");
    assert!(prefix.is_dir(), "no prefix {}", prefix.display());
    assert_eq!(stack.smtp.mails().len(), 3, "a welcome mail each");
    stack.assert_no_drift().await
}

#[tokio::test]
async fn a_stopped_s3_server_fails_the_tenant_and_undoes_exactly_what_was_done() -> Result<()> {
    let mut stack = Stack::start().await?;
    stack.s3.kill();
    let request = stack.spawn_request("nobucket", "standard")?;
    // The failed step is compensated too (it may have made the bucket before
    // failing), first of all: its compensation waits for S3 to come back.
    wait_for_step(&stack, "nobucket", "storage", "compensating").await?;
    stack.s3.restart().await?;
    let (ok, text) = outcome(&request.wait_with_output().await?);
    assert!(!ok && text.contains("FAILED at storage"), "{text}\n{}", stack.logs());
    let (_, status) = stack.tenant("nobucket").await?;
    assert_eq!(status, "FAILED");
    // The identity and the database steps were undone, in the backends.
    assert!(stack.keycloak.realm("tenant-nobucket").is_none(), "the realm is gone");
    let mut data = stack.tenant_data().await?;
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_nobucket").await?, 0);
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_roles WHERE rolname = $1", "tenant_nobucket").await?, 0);
    let steps = stack.steps("nobucket").await?;
    let states: Vec<(&str, &str)> = steps.iter().map(|(n, s, _)| (n.as_str(), s.as_str())).collect();
    assert_eq!(
        states,
        [
            ("idp_realm", "compensated"),
            ("idp_client", "compensated"),
            ("idp_admin_user", "compensated"),
            ("database", "compensated"),
            ("storage", "compensated"),
            ("welcome_email", "pending"),
        ]
    );
    // Every resource recorded is marked deleted.
    let resources = stack.resources("nobucket").await?;
    assert!(!resources.is_empty() && resources.iter().all(|(_, _, deleted)| *deleted), "{resources:?}");
    // The admin is told (the failure mail is sent after the saga ended).
    let mails = eventually("the failure mail", Duration::from_secs(20), || async {
        let mails = stack.smtp.mails_to("admin@nobucket.test");
        (!mails.is_empty()).then_some(mails)
    })
    .await?;
    assert_eq!(mails.len(), 1);
    assert!(mails[0].raw.contains("What failed: storage"), "{}", mails[0].raw);
    // Back up, the next tenant goes through.
    let (ok, text) = outcome(&stack.request("withbucket", "standard").await?);
    assert!(ok, "{text}");
    stack.assert_no_drift().await
}

#[tokio::test]
async fn an_smtp_outage_leaves_the_tenant_active_with_the_mail_reported() -> Result<()> {
    let mut stack = Stack::start().await?;
    stack.smtp.kill();
    let (ok, text) = outcome(&stack.request("nomail", "standard").await?);
    assert!(ok && text.contains("ACTIVE"), "mail trouble never fails a tenant: {text}");
    assert!(text.contains("welcome_email attempt 3"), "retried before giving up: {text}");
    let steps = stack.steps("nomail").await?;
    let (_, state, error) = steps.iter().find(|(n, _, _)| n == "welcome_email").context("no mail step")?;
    assert_eq!(state, "failed");
    assert!(error.as_deref().unwrap_or_default().contains("smtp"), "{error:?}");
    assert!(stack.keycloak.realm("tenant-nomail").is_some(), "nothing was undone");
    assert!(stack.buckets()?.contains(&"landlord-nomail".to_owned()));
    stack.assert_no_drift().await
}

#[tokio::test]
async fn keycloak_answering_500_fails_the_tenant_before_anything_exists() -> Result<()> {
    let stack = Stack::start().await?;
    stack.keycloak.fail_next(1_000, 500);
    let request = stack.spawn_request("noidp", "standard")?;
    // The failed realm step is compensated too: its compensation waits for
    // Keycloak to answer again.
    wait_for_step(&stack, "noidp", "idp_realm", "compensating").await?;
    stack.keycloak.clear_failures();
    let (ok, text) = outcome(&request.wait_with_output().await?);
    assert!(!ok && text.contains("FAILED at idp_realm"), "{text}");
    assert!(text.contains("keycloak_unavailable"), "{text}");
    let mut data = stack.tenant_data().await?;
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_noidp").await?, 0);
    assert!(!stack.buckets()?.contains(&"landlord-noidp".to_owned()));
    assert!(stack.resources("noidp").await?.is_empty());
    stack.assert_no_drift().await
}

#[tokio::test]
async fn a_revoked_database_privilege_undoes_the_identity_steps() -> Result<()> {
    let mut stack = Stack::servers().await?;
    // The database worker runs as a provisioning role, as in production,
    // not as a superuser.
    let mut data = stack.tenant_data().await?;
    let database = stack.tenant_data.name.clone();
    for statement in [
        "CREATE ROLE provisioner LOGIN CREATEROLE CREATEDB PASSWORD 'provisioner-password'".to_owned(),
        format!("ALTER DATABASE \"{database}\" OWNER TO provisioner"),
        "ALTER SCHEMA public OWNER TO provisioner".to_owned(),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut data).await?;
    }
    let superuser = format!("postgres:{}@", stack.pg.password());
    stack.tenant_data_url = stack.pg.url(&database).replace(&superuser, "provisioner:provisioner-password@");
    stack.start_services().await?;
    let (ok, text) = outcome(&stack.request("granted", "standard").await?);
    assert!(ok, "the provisioning role is enough: {text}\n{}", stack.log("database"));
    // The operator takes CREATEROLE away: the next tenant cannot get a role.
    sqlx::raw_sql("ALTER ROLE provisioner NOCREATEROLE").execute(&mut data).await?;
    let (ok, text) = outcome(&stack.request("revoked", "standard").await?);
    assert!(!ok && text.contains("FAILED at database"), "{text}\n{}", stack.log("database"));
    assert!(stack.keycloak.realm("tenant-revoked").is_none(), "the realm was undone");
    assert!(stack.keycloak.realm("tenant-granted").is_some(), "the other tenant is untouched");
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_revoked").await?, 0);
    assert!(!stack.buckets()?.contains(&"landlord-revoked".to_owned()));
    stack.assert_no_drift().await
}

#[tokio::test]
async fn the_audit_reports_drift_both_ways_and_removes_only_marked_orphans() -> Result<()> {
    let stack = Stack::start().await?;
    for (key, plan) in [("kept", "standard"), ("lost", "standard"), ("pool", "free"), ("gone", "enterprise")] {
        let (ok, text) = outcome(&stack.request(key, plan).await?);
        assert!(ok, "{key}: {text}");
    }
    stack.assert_no_drift().await?;
    // Drift: the control plane forgets some of "lost"'s and "pool"'s
    // resources (as a crash between the backend and the record would
    // leave them), and "gone"'s realm disappears behind Landlord's back.
    let mut control = stack.control().await?;
    sqlx::query(
        "UPDATE resources SET deleted_at = now() WHERE tenant_id = (SELECT id FROM tenants WHERE key = $1)
         AND kind IN ('s3.bucket', 'postgres.schema', 'postgres.role', 'keycloak.realm')",
    )
    .bind("lost")
    .execute(&mut control)
    .await?;
    sqlx::query(
        "UPDATE resources SET deleted_at = now() WHERE tenant_id = (SELECT id FROM tenants WHERE key = $1)
         AND kind IN ('s3.prefix', 'keycloak.organization', 'postgres.pooled_tenant')",
    )
    .bind("pool")
    .execute(&mut control)
    .await?;
    let (_, gone_status) = stack.tenant("gone").await?;
    assert_eq!(gone_status, "ACTIVE");
    stack.keycloak.delete_realm("tenant-gone");
    // An unmarked bucket and schema of someone else's are none of the audit's business.
    std::fs::create_dir_all(stack.s3.data_dir().join("not-landlords"))?;
    let mut data = stack.tenant_data().await?;
    sqlx::raw_sql("CREATE SCHEMA tenant_unmarked").execute(&mut data).await?;

    let (clean, report) = stack.audit(false).await?;
    assert!(!clean, "{report}");
    for line in [
        "orphan   s3.bucket               landlord-lost",
        "orphan   postgres.schema         tenant_lost",
        "orphan   postgres.role           tenant_lost",
        "orphan   keycloak.realm          tenant-lost",
        "orphan   s3.prefix               landlord-pooled/tenants/pool/",
        "orphan   keycloak.organization",
        "orphan   postgres.pooled_tenant",
        "missing  keycloak.realm          tenant-gone",
    ] {
        assert!(report.contains(line), "no {line:?} in:\n{report}");
    }
    assert!(!report.contains("not-landlords") && !report.contains("tenant_unmarked"), "{report}");
    assert!(!report.contains("kept"), "the healthy tenant is not drift: {report}");

    // "lost" and "pool" are still ACTIVE, made so by the sagas their
    // objects' markers name: those objects are the live tenants', whatever
    // the resources table says, and the removal leaves them.
    let (clean, skipped) = stack.audit(true).await?;
    assert!(!clean, "{skipped}");
    assert_eq!(skipped.matches("skipped: tenant ACTIVE with saga").count(), 7, "{skipped}");
    assert!(!skipped.contains("removed"), "{skipped}");
    assert!(stack.keycloak.realm("tenant-lost").is_some());
    assert!(stack.buckets()?.contains(&"landlord-lost".to_owned()));
    // Now make them what a crash leaves: the sagas that made these objects
    // ended FAILED and their compensations never reached the backends.
    sqlx::query(
        "UPDATE sagas SET state = 'failed', finished_at = now() WHERE tenant_id IN
         (SELECT id FROM tenants WHERE key IN ('lost', 'pool'))",
    )
    .execute(&mut control)
    .await?;
    sqlx::query("UPDATE tenants SET status = 'FAILED' WHERE key IN ('lost', 'pool')").execute(&mut control).await?;

    let (_, removal) = stack.audit(true).await?;
    assert_eq!(removal.matches("removed").count(), 7, "{removal}");
    assert!(!removal.contains("NOT removed"), "{removal}");
    assert!(stack.keycloak.realm("tenant-lost").is_none());
    assert!(!stack.buckets()?.contains(&"landlord-lost".to_owned()));
    assert!(stack.buckets()?.contains(&"not-landlords".to_owned()), "unmarked: left alone");
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_lost").await?, 0);
    assert_eq!(count(&mut data, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", "tenant_unmarked").await?, 1);
    assert!(stack.keycloak.realm("tenant-kept").is_some(), "the healthy tenant is untouched");
    // What is missing cannot be removed: it stays reported.
    let (clean, after) = stack.audit(false).await?;
    assert!(!clean && after.contains("missing  keycloak.realm          tenant-gone"), "{after}");
    assert!(!after.contains("orphan"), "{after}");
    Ok(())
}

/// A small xorshift generator: the chaos is random but its seed is printed,
/// so a failing run can be replayed with `LANDLORD_CHAOS_SEED`.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::env::var("LANDLORD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        println!("chaos seed: {seed} (LANDLORD_CHAOS_SEED={seed} replays it)");
        Self(seed.max(1))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn chaos_every_service_killed_and_nats_restarted_yet_every_tenant_ends_clean() -> Result<()> {
    let tenants: usize = std::env::var("LANDLORD_CHAOS_TENANTS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut stack = Stack::start().await?;
    let mut dice = Dice::new();
    let broker = landlord_runtime::Broker::connect(&stack.nats.url(), "chaos", stack.namespace.clone()).await?;
    let publisher = landlord_runtime::Publisher::new(&broker, "chaos");
    let plans = ["standard", "standard", "standard", "standard", "free", "free", "enterprise"];
    let keys: Vec<String> = (0..tenants).map(|i| format!("chaos-{i:03}")).collect();
    for key in &keys {
        let request = landlord_contract::pb::TenantRequested {
            idempotency_id: format!("chaos-{key}"),
            key: key.clone(),
            display_name: key.clone(),
            plan: plans[dice.below(plans.len() as u64) as usize].to_owned(),
            admin: Some(landlord_contract::pb::AdminContact {
                email: format!("admin@{key}.test"),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec![format!("{key}.example.com")],
            source: "chaos".into(),
            ..Default::default()
        };
        let tenant_key = landlord_contract::TenantKey::parse(key)?;
        let envelope = landlord_runtime::Envelope::new(request.idempotency_id.clone());
        publisher.publish_event(&tenant_key, &request, &envelope).await?;
    }
    drop(broker);
    // Kill a random service every second or so while the sagas run; restart
    // NATS once in the middle.
    let mut kills = Vec::new();
    for round in 0..16 {
        if round == 6 {
            stack.nats.restart().await?;
            kills.push("nats-server");
            continue;
        }
        let name = landlord_e2e::SERVICES[dice.below(5) as usize];
        tokio::time::sleep(Duration::from_millis(300 + dice.below(1_200))).await;
        stack.kill_service(name);
        stack.start_service(name).await?;
        kills.push(name);
    }
    println!("killed and restarted, in order: {kills:?}");
    // Every saga reaches an end: no tenant is left pending or half-done.
    let finished = eventually("every tenant to reach ACTIVE or FAILED", Duration::from_secs(300), || async {
        let mut control = stack.control().await.ok()?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenants WHERE status NOT IN ('ACTIVE', 'FAILED') AND key LIKE 'chaos-%'",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        (open == 0).then_some(())
    })
    .await;
    let mut control = stack.control().await?;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    finished.with_context(|| format!("statuses: {statuses:?}\n{}", stack.logs()))?;
    let total: i64 = statuses.iter().map(|(_, n)| n).sum();
    assert_eq!(total, tenants as i64, "one tenant per request: {statuses:?}");
    println!("chaos outcome: {statuses:?}");
    // A FAILED tenant has nothing left; an ACTIVE one has exactly one of
    // each object: no command was applied twice in effect.
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM resources r JOIN tenants t ON t.id = r.tenant_id
         WHERE t.status = 'FAILED' AND r.deleted_at IS NULL",
    )
    .fetch_one(&mut control)
    .await?;
    assert_eq!(leftovers, 0);
    for key in &keys {
        let (_, status) = stack.tenant(key).await?;
        if status == "ACTIVE" && stack.keycloak.realm(&format!("tenant-{key}")).is_some() {
            assert_eq!(stack.keycloak.users(&format!("tenant-{key}")).len(), 1, "{key}: one admin user");
            let clients = stack.keycloak.clients(&format!("tenant-{key}"));
            assert_eq!(clients.iter().filter(|c| c["clientId"] == format!("{key}-app")).count(), 1, "{key}");
        }
    }
    stack.assert_no_drift().await
}

/// One delivery as Svix makes it (attempted until answered 2xx): a Clerk
/// event's body under one svix-id.
#[derive(Debug, Clone)]
struct Delivery {
    org: usize,
    kind: &'static str,
    svix_id: String,
    body: std::sync::Arc<str>,
}

/// What the sender saw: answers of the deliveries that got their 2xx, and
/// the attempts that had to be made again.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    duplicate: usize,
    /// No answer: connection refused or reset (the gateway was down).
    unreachable: usize,
    /// 5xx or 429: an answer that asks to be retried.
    retryable: usize,
}

/// Clerk's `organization.created` for organization `i`, with the fields of
/// a real payload (the bridge reads `id`, `slug` and `name`).
fn organization_created(i: usize) -> Value {
    json!({
        "type": "organization.created", "object": "event", "timestamp": 1_717_000_000_000_u64 + i as u64,
        "data": {
            "object": "organization", "id": format!("org_storm{i:02}"), "name": format!("Storm {i:02} Inc."),
            "slug": format!("Storm_{i:02}"), "created_by": format!("user_storm{i:02}"), "members_count": 1,
            "max_allowed_memberships": 5, "admin_delete_enabled": true, "has_image": false,
            "public_metadata": {}, "created_at": 1_717_000_000_000_u64, "updated_at": 1_717_000_000_000_u64,
        },
    })
}

/// Clerk's `organizationMembership.created` making the creator `org:admin`
/// (the bridge reads `role`, `organization.id` and `public_user_data`).
fn admin_membership_created(i: usize) -> Value {
    json!({
        "type": "organizationMembership.created", "object": "event", "timestamp": 1_717_000_000_001_u64 + i as u64,
        "data": {
            "object": "organization_membership", "id": format!("orgmem_storm{i:02}"), "role": "org:admin",
            "permissions": ["org:sys_memberships:manage"],
            "organization": {"object": "organization", "id": format!("org_storm{i:02}"),
                             "name": format!("Storm {i:02} Inc."), "slug": format!("Storm_{i:02}")},
            "public_user_data": {"user_id": format!("user_storm{i:02}"), "identifier": format!("admin@storm{i:02}.test"),
                                 "first_name": "Ada", "last_name": format!("Storm{i:02}"), "has_image": false},
            "created_at": 1_717_000_000_001_u64, "updated_at": 1_717_000_000_001_u64,
        },
    })
}

/// Svix, as far as the storm needs it: delivers until the gateway answers
/// 2xx (on a compressed schedule), every attempt stamped and signed afresh,
/// a refused connection or a 5xx/429 retried with backoff; any other
/// answer fails the test.
#[derive(Debug)]
struct Sender {
    http: reqwest::Client,
    url: String,
    signer: landlord_testkit::svix::SvixSigner,
    /// Deliveries answered 2xx so far.
    acknowledged: std::sync::atomic::AtomicUsize,
    tally: std::sync::Mutex<Tally>,
}

impl Sender {
    fn acknowledged(&self) -> usize {
        self.acknowledged.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The answer's `delivery`: `accepted` or `duplicate`.
    async fn deliver(&self, delivery: &Delivery) -> Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let mut backoff = Duration::from_millis(25);
        loop {
            let body = delivery.body.to_string();
            let mut request = self.http.post(&self.url).header("content-type", "application/json");
            for (name, value) in self.signer.headers(&delivery.svix_id, body.as_bytes()) {
                request = request.header(name, value);
            }
            let unreachable = match request.body(body).send().await {
                Ok(response) if response.status().is_success() => {
                    self.acknowledged.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer: Value =
                        serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or_default();
                    return Ok(answer["delivery"].as_str().unwrap_or("unreadable").to_owned());
                }
                Ok(response) if response.status().is_server_error() || response.status().as_u16() == 429 => false,
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    anyhow::bail!("{}: refused with {status}: {text}", delivery.svix_id)
                }
                Err(_) => true,
            };
            if let Ok(mut tally) = self.tally.lock() {
                if unreachable {
                    tally.unreachable += 1;
                } else {
                    tally.retryable += 1;
                }
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "{}: no 2xx within 90s", delivery.svix_id);
            // The sender's retry schedule, not a wait for a condition.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// How many messages the events stream holds on `subject`.
async fn stream_count(broker: &landlord_runtime::Broker, subject: &str) -> Result<u64> {
    use futures_util::TryStreamExt as _;
    let stream =
        broker.jetstream.get_stream(broker.namespace.stream_name(landlord_contract::StreamKind::Events)).await?;
    let mut info = stream.info_with_subjects(subject).await?;
    let mut total = 0;
    while let Some((_, count)) = info.try_next().await? {
        total += count as u64;
    }
    Ok(total)
}

/// Issue 7, "duplicate storm": 1,000 signed Clerk deliveries for 50
/// organizations — each organization's `organization.created` and its
/// `org:admin` membership, each under 2 svix-ids (Clerk re-sent it), each
/// svix-id delivered 5 times — 32 at a time in a seeded shuffled order,
/// with the gateway SIGKILLed and restarted when half of them have been
/// acknowledged. Exactly one tenant and one saga per organization, all
/// ACTIVE, one `TenantRequested` each on the events stream, no drift.
#[tokio::test]
async fn a_storm_of_duplicate_clerk_deliveries_through_a_gateway_crash_makes_one_tenant_per_organization() -> Result<()>
{
    const ORGANIZATIONS: usize = 50;
    const SVIX_IDS_PER_EVENT: usize = 2;
    const ATTEMPTS_PER_SVIX_ID: usize = 5;
    const IN_FLIGHT: usize = 32;
    const DELIVERIES: usize = ORGANIZATIONS * 2 * SVIX_IDS_PER_EVENT * ATTEMPTS_PER_SVIX_ID;
    const KILL_AFTER: usize = DELIVERIES / 2;
    const LATE: usize = 10;
    let began = std::time::Instant::now();
    let mut stack = Stack::start().await?;
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let started = began.elapsed();
    let mut dice = Dice::new();

    // Some organizations get one half only after the restart (Clerk's
    // membership event, or the organization's, stuck in Svix's retry
    // queue): the restart then falls between their two halves.
    let mut late = std::collections::HashMap::new();
    while late.len() < LATE {
        let kind = if dice.below(2) == 0 { "organization" } else { "membership" };
        late.entry(dice.below(ORGANIZATIONS as u64) as usize).or_insert(kind);
    }
    let (mut deliveries, mut held_back) = (Vec::with_capacity(DELIVERIES), Vec::new());
    for org in 0..ORGANIZATIONS {
        for (kind, event) in
            [("organization", organization_created(org)), ("membership", admin_membership_created(org))]
        {
            let body: std::sync::Arc<str> = event.to_string().into();
            for copy in 0..SVIX_IDS_PER_EVENT {
                let svix_id = format!("msg_storm{org:02}_{kind}_{copy}");
                for _ in 0..ATTEMPTS_PER_SVIX_ID {
                    let delivery = Delivery { org, kind, svix_id: svix_id.clone(), body: body.clone() };
                    if late.get(&org) == Some(&kind) { held_back.push(delivery) } else { deliveries.push(delivery) }
                }
            }
        }
    }
    let mut shuffle = |deliveries: &mut Vec<Delivery>| {
        for i in (1..deliveries.len()).rev() {
            deliveries.swap(i, dice.below(i as u64 + 1) as usize);
        }
    };
    shuffle(&mut deliveries);
    let mut second_half = deliveries.split_off(KILL_AFTER);
    second_half.append(&mut held_back);
    shuffle(&mut second_half);
    deliveries.append(&mut second_half);
    assert_eq!(deliveries.len(), DELIVERIES);
    let mut first_seen: std::collections::HashMap<usize, &str> = std::collections::HashMap::new();
    for delivery in &deliveries {
        first_seen.entry(delivery.org).or_insert(delivery.kind);
    }
    let membership_first = first_seen.values().filter(|kind| **kind == "membership").count();
    println!(
        "storm: {DELIVERIES} deliveries, {ORGANIZATIONS} organizations, {membership_first} of them with the \
         membership sent first, {LATE} with one half sent only after the restart; stack up in {started:.1?}"
    );
    assert!(membership_first > 0 && membership_first < ORGANIZATIONS, "both orders occur");

    let sender = std::sync::Arc::new(Sender {
        // Svix gives an endpoint 15 s to answer.
        http: landlord_runtime::http::client_builder(&Default::default()).timeout(Duration::from_secs(15)).build()?,
        url: format!("{}/v1/webhooks/clerk", stack.api_url()),
        signer: stack.clerk.clone(),
        acknowledged: Default::default(),
        tally: Default::default(),
    });
    let storm = tokio::spawn({
        use futures_util::StreamExt as _;
        let sender = sender.clone();
        let sent = std::time::Instant::now();
        let answers = futures_util::stream::iter(deliveries)
            .map(move |delivery| {
                let sender = sender.clone();
                async move { sender.deliver(&delivery).await }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<Result<String>>>();
        async move { (answers.await, sent.elapsed()) }
    });

    // Half-way through, SIGKILL the gateway and start it again.
    eventually("half the deliveries to be acknowledged", Duration::from_secs(120), || async {
        (sender.acknowledged() >= KILL_AFTER).then_some(())
    })
    .await?;
    let killed_at = sender.acknowledged();
    let kill = std::time::Instant::now();
    stack.kill_service(landlord_e2e::GATEWAY);
    let mut control = stack.control().await?;
    let requested: i64 = sqlx::query_scalar("SELECT count(*) FROM clerk_organizations WHERE requested_at IS NOT NULL")
        .fetch_one(&mut control)
        .await?;
    println!("storm: gateway SIGKILLed with {requested} of {ORGANIZATIONS} organizations requested");
    stack.start_service(landlord_e2e::GATEWAY).await?;
    let outage = kill.elapsed();
    let back_at = sender.acknowledged();

    let (answers, storm_took) = storm.await?;
    let mut tally = std::mem::take(&mut *sender.tally.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?);
    for answer in answers {
        match answer?.as_str() {
            "accepted" => tally.accepted += 1,
            "duplicate" => tally.duplicate += 1,
            other => anyhow::bail!("unexpected answer {other:?}\n{}", stack.log(landlord_e2e::GATEWAY)),
        }
    }
    println!(
        "storm: {DELIVERIES} acknowledged in {storm_took:.1?} ({IN_FLIGHT} in flight); gateway SIGKILLed after \
         {killed_at} acknowledgements, API back {outage:.1?} later (by then {back_at}); answers: {} accepted, {} \
         duplicate; attempts retried: {} unreachable, {} 5xx/429",
        tally.accepted, tally.duplicate, tally.unreachable, tally.retryable
    );
    assert_eq!(tally.accepted + tally.duplicate, DELIVERIES);
    // A delivery committed just before the kill whose answer was lost is
    // answered `duplicate` when retried: at most one `accepted` per svix-id.
    let distinct_ids = ORGANIZATIONS * 2 * SVIX_IDS_PER_EVENT;
    assert!(tally.accepted <= distinct_ids, "{tally:?}");
    assert!(tally.unreachable + tally.retryable > 0, "the restart was felt by the sender: {tally:?}");

    // The gateway: every svix-id recorded once, every organization requested once.
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries").fetch_one(&mut control).await?;
    assert_eq!(recorded, distinct_ids as i64);
    let organizations: Vec<(String, Option<String>, bool, Option<String>)> = sqlx::query_as(
        "SELECT org_id, tenant_key, requested_at IS NOT NULL, rejected_rule FROM clerk_organizations ORDER BY org_id",
    )
    .fetch_all(&mut control)
    .await?;
    assert_eq!(organizations.len(), ORGANIZATIONS);
    for (i, (org_id, key, requested, rejected)) in organizations.iter().enumerate() {
        assert_eq!(org_id, &format!("org_storm{i:02}"));
        assert_eq!(key.as_deref(), Some(format!("storm-{i:02}").as_str()), "{org_id}: slug Storm_{i:02}");
        assert!(*requested && rejected.is_none(), "{org_id}: {rejected:?}");
    }

    // The control plane: every tenant ACTIVE, none failed on the way.
    let provisioning = std::time::Instant::now();
    let settled = eventually("every Clerk tenant to be ACTIVE", Duration::from_secs(240), || async {
        let mut control = stack.control().await.ok()?;
        let (active, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'ACTIVE'),
                    count(*) FILTER (WHERE status IN ('COMPENSATING', 'FAILED', 'CANCELLED'))
             FROM tenants",
        )
        .fetch_one(&mut control)
        .await
        .ok()?;
        (active == ORGANIZATIONS as i64 || failed > 0).then_some(failed)
    })
    .await;
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status ORDER BY status")
            .fetch_all(&mut control)
            .await?;
    let failed = settled.with_context(|| format!("statuses: {statuses:?}\n{}", stack.logs()))?;
    assert_eq!(failed, 0, "statuses: {statuses:?}\n{}", stack.logs());
    println!(
        "storm: {ORGANIZATIONS} tenants ACTIVE {:.1?} after the last acknowledgement ({:.1?} since the stack was up)",
        provisioning.elapsed(),
        began.elapsed() - started
    );
    assert_eq!(statuses, [("ACTIVE".to_owned(), ORGANIZATIONS as i64)]);
    // Each organization's tenant, as the bridge made it from the two halves.
    let tenants: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', key, plan, tier, source, idempotency_id, admin_email, admin_first_name,
                          admin_last_name, display_name)
         FROM tenants ORDER BY key",
    )
    .fetch_all(&mut control)
    .await?;
    let expected: Vec<String> = (0..ORGANIZATIONS)
        .map(|i| {
            format!(
                "storm-{i:02} standard bridge clerk clerk:org_storm{i:02} admin@storm{i:02}.test Ada Storm{i:02} \
                 Storm {i:02} Inc."
            )
        })
        .collect();
    assert_eq!(tenants, expected);
    let (sagas, saga_tenants, succeeded): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT tenant_id), count(*) FILTER (WHERE state = 'succeeded') FROM sagas",
    )
    .fetch_one(&mut control)
    .await?;
    assert_eq!(
        (sagas, saga_tenants, succeeded),
        (ORGANIZATIONS as i64, ORGANIZATIONS as i64, ORGANIZATIONS as i64),
        "one saga per tenant, each succeeded"
    );

    // The broker: one TenantRequested per organization, nothing rejected.
    let broker = landlord_runtime::Broker::connect(&stack.nats.url(), "storm", stack.namespace.clone()).await?;
    let events = |kind| stack.namespace.event_filter(None, Some(kind));
    let requested = stream_count(&broker, &events(landlord_contract::EventKind::Requested)).await?;
    let rejected = stream_count(&broker, &events(landlord_contract::EventKind::Rejected)).await?;
    let activated = stream_count(&broker, &events(landlord_contract::EventKind::Activated)).await?;
    let clerk_events = stream_count(&broker, &format!("{}.v1.events._clerk.>", stack.namespace.root())).await?;
    println!(
        "storm: events stream holds {requested} TenantRequested, {rejected} TenantRejected, {activated} \
         TenantActivated, {clerk_events} republished Clerk events (for {distinct_ids} svix-ids)"
    );
    assert_eq!((requested, rejected, activated), (ORGANIZATIONS as u64, 0, ORGANIZATIONS as u64));

    // The backends: each realm's one admin is the Clerk admin.
    for i in 0..ORGANIZATIONS {
        let users = stack.keycloak.users(&format!("tenant-storm-{i:02}"));
        assert_eq!(users.len(), 1, "storm-{i:02}: {users:?}");
        assert_eq!(users[0]["email"], format!("admin@storm{i:02}.test"));
    }
    let audit = std::time::Instant::now();
    stack.assert_no_drift().await?;
    println!("storm: no drift (audit {:.1?}); whole test {:.1?}", audit.elapsed(), began.elapsed());
    Ok(())
}
