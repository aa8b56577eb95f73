//! Several tenant-data servers (docs/tenant-data.md) against two real
//! PostgreSQL clusters: this binary's shared one and a second one started
//! for these tests, each test on a fresh database of each. Placement by
//! fewest tenants, capacity, draining, pins, a provision delivered again
//! (also after a crash between placing and provisioning, and twice at
//! once), and every later command finding the tenant's server.

use std::sync::OnceLock;

use landlord_database::{Servers, Tenant};

use super::helpers::*;

/// The second PostgreSQL cluster, started on first use.
fn second() -> Result<&'static Postgres> {
    static SECOND: OnceLock<Result<Postgres, String>> = OnceLock::new();
    SECOND.get_or_init(|| Postgres::start().map_err(|e| format!("{e:#}"))).as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Two servers, `a` on the shared cluster and `b` on the second.
struct Two {
    a: String,
    b: String,
    key: SecretsKey,
    extra: Vec<(String, String)>,
}

impl Two {
    async fn new() -> Result<Self> {
        Self::with_env(Vec::new()).await
    }

    async fn with_env(extra: Vec<(String, String)>) -> Result<Self> {
        let a = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let b = tokio::task::spawn_blocking(second).await??.fresh_database().await?;
        Ok(Self { a: a.url, b: b.url, key: SecretsKey::generate()?, extra })
    }

    /// A worker over both servers; `a` and `b` add fields to each entry.
    fn worker(&self, a: serde_json::Value, b: serde_json::Value) -> Result<Servers> {
        let entry = |name: &str, url: &str, more: serde_json::Value| {
            let mut entry = serde_json::json!({"name": name, "url": url, "capacity": 100});
            if let (Some(entry), serde_json::Value::Object(more)) = (entry.as_object_mut(), more) {
                entry.extend(more);
            }
            entry
        };
        let list = serde_json::json!([entry("a", &self.a, a), entry("b", &self.b, b)]).to_string();
        let mut pairs = vec![
            ("LANDLORD_TENANT_DATABASES".to_owned(), list),
            ("LANDLORD_SECRETS_KEY".to_owned(), self.key.to_base64()),
            ("LANDLORD_TENANT_DATABASE_TIMEOUT".to_owned(), "6s".to_owned()),
        ];
        pairs.extend(self.extra.iter().cloned());
        Ok(Servers::from_env(&Env::from_pairs(pairs))?)
    }

    fn open(&self) -> Result<Servers> {
        self.worker(serde_json::json!({}), serde_json::json!({}))
    }

    fn url(&self, server: &str) -> &str {
        if server == "a" { &self.a } else { &self.b }
    }

    /// Whether `sql` (one bind: `name`) is true on `server`.
    async fn holds(&self, server: &str, sql: &'static str, name: &str) -> Result<bool> {
        let mut conn = PgConnection::connect(self.url(server)).await?;
        let (found,): (bool,) = sqlx::query_as(sql).bind(name).fetch_one(&mut conn).await?;
        Ok(found)
    }

    async fn schema_on(&self, server: &str, schema: &str) -> Result<bool> {
        self.holds(server, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", schema).await
    }

    async fn can_login(&self, server: &str, role: &str) -> Result<bool> {
        self.holds(server, "SELECT COALESCE((SELECT rolcanlogin FROM pg_roles WHERE rolname = $1), false)", role).await
    }

    /// Whether any marker of `server` names the tenant.
    async fn marked_on(&self, server: &str, spec: &pb::TenantSpec) -> Result<bool> {
        let sql = "SELECT EXISTS (SELECT FROM landlord_admin.markers WHERE tenant_id = $1)";
        self.holds(server, sql, &spec.tenant_id).await
    }
}

async fn provision(w: &Servers, spec: &pb::TenantSpec) -> Result<pb::StepOk, StepFailure> {
    w.run("provision", &command(spec, false), &delivery()).await
}

async fn lifecycle(w: &Servers, action: &str, spec: &pb::TenantSpec) -> Result<pb::StepOk, StepFailure> {
    w.run(action, &in_saga(&format!("{action}-{}", spec.key), spec, false), &delivery()).await
}

fn server_of(ok: &pb::StepOk) -> &str {
    &ok.outputs["database.server"]
}

fn bridge(prefix: &str) -> pb::TenantSpec {
    tenant(&unique_key(prefix), pb::Tier::Bridge)
}

#[tokio::test]
async fn new_tenants_go_to_the_server_with_the_fewest_and_their_resources_say_which() -> Result<()> {
    let two = Two::new().await?;
    let w = two.worker(serde_json::json!({"public_host": "a.db.example.com"}), serde_json::json!({}))?;
    let specs = [bridge("pla"), bridge("plb"), bridge("plc")];
    let mut placed = Vec::new();
    for spec in &specs {
        placed.push(provision(&w, spec).await?);
    }
    // a tie goes to the first listed: a, then b (a has one), then a.
    assert_eq!(placed.iter().map(server_of).collect::<Vec<_>>(), ["a", "b", "a"]);
    for (spec, ok) in specs.iter().zip(&placed) {
        let (on, off) = if server_of(ok) == "a" { ("a", "b") } else { ("b", "a") };
        let schema = &ok.outputs["database.schema"];
        assert!(two.schema_on(on, schema).await?, "{schema} on {on}");
        assert!(!two.schema_on(off, schema).await?, "{schema} not on {off}");
        assert!(two.marked_on(on, spec).await? && !two.marked_on(off, spec).await?);
        for resource in &ok.resources {
            assert_eq!(resource.metadata["server"], on, "{}", resource.kind);
        }
    }
    let on_a = &placed[0];
    assert_eq!(on_a.resources[0].metadata["host"], "a.db.example.com");
    assert_eq!(on_a.outputs["database.host"], "a.db.example.com");
    assert_eq!(placed[1].resources[0].metadata["host"], "127.0.0.1");
    assert_eq!(placed[1].resources[0].metadata["port"], second()?.port().to_string());
    assert_eq!(placed[1].outputs["database.port"], second()?.port().to_string());
    Ok(())
}

#[tokio::test]
async fn a_full_server_sends_tenants_to_the_next_until_none_has_room() -> Result<()> {
    let two = Two::new().await?;
    let w = two.worker(serde_json::json!({"capacity": 1}), serde_json::json!({"capacity": 2}))?;
    let servers: Vec<String> = {
        let mut placed = Vec::new();
        for prefix in ["capa", "capb", "capc"] {
            placed.push(server_of(&provision(&w, &bridge(prefix)).await?).to_owned());
        }
        placed
    };
    assert_eq!(servers, ["a", "b", "b"]);
    let refused = provision(&w, &bridge("capd")).await.unwrap_err();
    assert!(!refused.retryable);
    assert_eq!(refused.code, "no_capacity");
    assert!(refused.message.ends_with("a is full (1 of 1 tenants); b is full (2 of 2 tenants)"), "{}", refused.message);
    Ok(())
}

#[tokio::test]
async fn a_drained_server_takes_no_new_tenant_and_still_serves_its_own() -> Result<()> {
    let two = Two::new().await?;
    let before = two.open()?;
    let old = tenant(&unique_key("drn"), pb::Tier::Silo);
    let ok = provision(&before, &old).await?;
    assert_eq!(server_of(&ok), "a");
    let role = ok.outputs["database.role"].clone();

    // a drained: new tenants go to b, though b has more of them.
    let w = two.worker(serde_json::json!({"drain": true}), serde_json::json!({}))?;
    for prefix in ["drna", "drnb"] {
        assert_eq!(server_of(&provision(&w, &bridge(prefix)).await?), "b");
    }
    // The drained server's tenant, found by its markers (nothing cached).
    lifecycle(&w, "suspend", &old).await?;
    assert!(!two.can_login("a", &role).await?);
    lifecycle(&w, "resume", &old).await?;
    assert!(two.can_login("a", &role).await?);
    lifecycle(&w, "purge", &old).await?;
    assert!(!two.holds("a", "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", &role).await?);
    assert!(!two.marked_on("a", &old).await?, "the placement goes with the tenant");
    // A purge delivered again finds the tenant nowhere: nothing to do.
    lifecycle(&w, "purge", &old).await?;
    let gone = lifecycle(&w, "suspend", &old).await.unwrap_err();
    assert_eq!((gone.code.as_str(), gone.retryable), ("not_provisioned", false), "{gone}");

    let none = two.worker(serde_json::json!({"drain": true}), serde_json::json!({"drain": true}))?;
    let refused = provision(&none, &bridge("drnc")).await.unwrap_err();
    assert_eq!(refused.code, "no_capacity");
    assert!(refused.message.ends_with("a is drained; b is drained"), "{}", refused.message);
    Ok(())
}

#[tokio::test]
async fn a_plan_pinned_to_a_server_goes_there_and_others_do_not() -> Result<()> {
    let two = Two::new().await?;
    let w = two.worker(serde_json::json!({}), serde_json::json!({"plans": ["enterprise"]}))?;
    for prefix in ["pina", "pinb"] {
        assert_eq!(server_of(&provision(&w, &bridge(prefix)).await?), "a", "b is kept for enterprise");
    }
    let mut big = bridge("pinc");
    big.plan = "enterprise".into();
    assert_eq!(server_of(&provision(&w, &big).await?), "b");
    let mut labelled = bridge("pind");
    labelled.labels.insert("region".into(), "eu".into());
    let eu = two.worker(serde_json::json!({"labels": {"region": "eu"}, "capacity": 3}), serde_json::json!({}))?;
    assert_eq!(server_of(&provision(&eu, &labelled).await?), "a");
    let mut second_eu = bridge("pine");
    second_eu.labels.insert("region".into(), "eu".into());
    let refused = provision(&eu, &second_eu).await.unwrap_err();
    assert_eq!(refused.code, "no_capacity");
    assert!(
        refused.message.contains("a is full (3 of 3 tenants); b is not pinned to this tenant"),
        "{}",
        refused.message
    );
    Ok(())
}

#[tokio::test]
async fn a_provision_delivered_again_stays_on_its_server() -> Result<()> {
    let two = Two::new().await?;
    let first = two.open()?;
    let spec = bridge("again");
    assert_eq!(server_of(&provision(&first, &spec).await?), "a");
    // Delivered again to another replica, a now drained and emptier b: a.
    let other = two.worker(serde_json::json!({"drain": true}), serde_json::json!({}))?;
    let ok = provision(&other, &spec).await?;
    assert_eq!(server_of(&ok), "a");
    assert!(!two.marked_on("b", &spec).await?);

    // A crash right after placing (the marker written, nothing else): b,
    // which has fewer tenants.
    let placed_only = bridge("crash");
    let tenant = Tenant::from_command(&placed_only, &command(&placed_only, false))?;
    assert_eq!(first.place(&tenant, &placed_only).await?, 1);
    assert!(two.marked_on("b", &placed_only).await?);
    let lone = || async {
        let mut conn = PgConnection::connect(&two.b).await?;
        anyhow::Ok(landlord_database::marker::lone_placements(&mut conn).await?)
    };
    assert_eq!(lone().await?, std::slice::from_ref(&placed_only.tenant_id), "placed, nothing made");
    assert!(!two.schema_on("b", &format!("tenant_{}", placed_only.key.replace('-', "_"))).await?);
    let b_drained = two.worker(serde_json::json!({}), serde_json::json!({"drain": true}))?;
    let ok = provision(&b_drained, &placed_only).await?;
    assert_eq!(server_of(&ok), "b", "continues where it was placed, though b is drained now");
    assert!(two.schema_on("b", &ok.outputs["database.schema"]).await?);
    assert!(!two.marked_on("a", &placed_only).await?);
    assert!(lone().await?.is_empty());

    // Twice at once, on two replicas: one server.
    let racing = bridge("race");
    let (one, two_replica) = (two.open()?, two.open()?);
    let (x, y) = tokio::join!(provision(&one, &racing), provision(&two_replica, &racing));
    assert_eq!(server_of(&x?), server_of(&y?));
    assert!(two.marked_on("a", &racing).await? != two.marked_on("b", &racing).await?, "marked on exactly one");
    Ok(())
}

#[tokio::test]
async fn every_later_command_finds_the_tenants_server() -> Result<()> {
    let s3 = S3Server::shared().await;
    let two = Two::with_env(archive_env(s3)).await?;
    let w = two.open()?;
    let on_a = tenant(&unique_key("fna"), pb::Tier::Silo);
    let on_b = tenant(&unique_key("fnb"), pb::Tier::Bridge);
    let pooled = tenant(&unique_key("fnc"), pb::Tier::Pooled);
    let mut placed = Vec::new();
    for spec in [&on_a, &on_b, &pooled] {
        placed.push(provision(&w, spec).await?);
    }
    assert_eq!(placed.iter().map(server_of).collect::<Vec<_>>(), ["a", "b", "a"]);

    // A replica that never saw them: found by their markers.
    let fresh = two.open()?;
    for (spec, ok) in [&on_a, &on_b].into_iter().zip(&placed) {
        let (server, role) = (server_of(ok), &ok.outputs["database.role"]);
        lifecycle(&fresh, "suspend", spec).await?;
        assert!(!two.can_login(server, role).await?, "{role} suspended on {server}");
        lifecycle(&fresh, "resume", spec).await?;
        assert!(two.can_login(server, role).await?);
        let prefix = format!("{}/{}/20261206T070000Z/", spec.key, spec.tenant_id);
        let mut export = in_saga(&format!("export-{}", spec.key), spec, false);
        export.inputs.insert("export.prefix".into(), prefix.clone());
        let exported = fresh.run("export", &export, &delivery()).await?;
        assert_eq!(exported.outputs["export.database"], format!("{prefix}database/manifest.json"));
    }
    let suspended = lifecycle(&fresh, "suspend", &pooled).await?;
    assert_eq!(suspended.outputs["database.suspended"], "true");

    // A compensation carries the resources, which name the server.
    let mut undo = command(&on_b, true);
    undo.resources = placed[1].resources.clone();
    fresh.run("deprovision", &undo, &delivery()).await?;
    assert!(!two.schema_on("b", &placed[1].outputs["database.schema"]).await?);
    assert!(!two.marked_on("b", &on_b).await?, "nothing of it left on b, placement included");
    // A resource naming a server the worker does not know.
    let mut unknown = command(&on_a, true);
    unknown.resources = placed[0].resources.clone();
    unknown.resources[0].metadata.insert("server".into(), "c".into());
    let refused = fresh.run("deprovision", &unknown, &delivery()).await.unwrap_err();
    assert_eq!((refused.code.as_str(), refused.retryable), ("server.unknown", false), "{refused}");
    assert!(refused.message.contains("not one of this worker's (a, b)"), "{}", refused.message);
    // Compensation without resources: found by its markers.
    fresh.run("deprovision", &command(&on_a, true), &delivery()).await?;
    assert!(!two.marked_on("a", &on_a).await?);
    assert!(!two.marked_on("b", &on_a).await?);
    lifecycle(&fresh, "purge", &pooled).await?;
    assert!(!two.marked_on("a", &pooled).await?);
    Ok(())
}

#[tokio::test]
async fn a_list_of_one_server_keeps_its_capacity() -> Result<()> {
    let two = Two::new().await?;
    let list = serde_json::json!([{"name": "only", "url": two.a, "capacity": 1}]).to_string();
    let env = Env::from_pairs([
        ("LANDLORD_TENANT_DATABASES".to_owned(), list),
        ("LANDLORD_SECRETS_KEY".to_owned(), two.key.to_base64()),
    ]);
    let w = Servers::from_env(&env)?;
    let first = bridge("onea");
    assert_eq!(server_of(&provision(&w, &first).await?), "only");
    let refused = provision(&w, &bridge("oneb")).await.unwrap_err();
    assert_eq!(refused.code, "no_capacity");
    assert!(refused.message.ends_with("only is full (1 of 1 tenants)"), "{}", refused.message);
    // Its tenant is still served, and delivered again still provisioned.
    assert_eq!(server_of(&provision(&w, &first).await?), "only");
    lifecycle(&w, "suspend", &first).await?;
    Ok(())
}

#[tokio::test]
async fn the_worker_binary_reads_the_list_and_checks_each_server() -> Result<()> {
    let nats = NatsServer::shared().await;
    let two = Two::new().await?;
    let list = serde_json::json!([
        {"name": "a", "url": two.a, "capacity": 10},
        {"name": "b", "url": two.b, "capacity": 10, "drain": true},
    ]);
    let path = scratch_dir("servers")?.join("servers.json");
    std::fs::write(&path, list.to_string())?;
    let port = free_port();
    let _service = Process::start(
        "database-servers",
        &workspace_binary("landlord-database")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), unique_namespace().root().to_owned()),
            ("LANDLORD_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
            ("LANDLORD_TENANT_DATABASES".into(), path.display().to_string()),
            ("LANDLORD_SECRETS_KEY".into(), two.key.to_base64()),
        ],
        &scratch_dir("logs")?,
    )?;
    let ready = || async move {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await.ok()??;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 200 && body["checks"]["tenant_data_database.b"].is_string()).then_some(body)
    };
    let body = eventually("the worker to be ready", WAIT, ready).await?;
    assert_eq!(body["checks"]["tenant_data_database.a"], "ok", "{body}");
    assert_eq!(body["checks"]["tenant_data_database.b"], "ok", "{body}");
    Ok(())
}
