//! The database worker against a real PostgreSQL (a throwaway cluster per
//! test binary, a fresh tenant-data database per test) and, for the binary,
//! a real nats-server.

use std::time::Duration;

use anyhow::{Context as _, Result};
use futures_util::StreamExt as _;
use landlord_contract::pb;
use landlord_database::ident::{quote_ident, quote_literal};
use landlord_database::{PgSecretStore, Provisioner, SecretRef, SecretStore, SecretsKey, Settings, open_delivery};
use landlord_runtime::{
    Broker, Config, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, Service, StepFailure, StepService,
};
use landlord_testkit::{
    NatsServer, Postgres, Process, eventually, free_port, http_get, scratch_dir, unique_namespace, workspace_binary,
};
use prost::Message as _;
use sqlx::{Connection as _, PgConnection};

const WAIT: Duration = Duration::from_secs(30);

/// Roles are cluster-wide and the cluster is shared: keys are unique.
fn unique_key(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

fn tenant(key: &str, tier: pb::Tier) -> pb::TenantSpec {
    pb::TenantSpec {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        key: key.to_owned(),
        tier: tier as i32,
        ..Default::default()
    }
}

fn command(spec: &pb::TenantSpec, compensate: bool) -> pb::StepCommand {
    in_saga(&format!("saga-{}", spec.key), spec, compensate)
}

/// A command of saga `saga` (a retry of a tenant is a new saga).
fn in_saga(saga: &str, spec: &pb::TenantSpec, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: saga.to_owned(),
        step: "database".into(),
        compensate,
        attempt: 1,
        tenant: Some(spec.clone()),
        ..Default::default()
    }
}

fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

struct Fixture {
    provisioner: Provisioner,
    /// The tenant-data database's URL, as the superuser.
    url: String,
    database: String,
    port: u16,
}

fn settings(url: &str, key: &SecretsKey) -> Result<Settings> {
    settings_with(url, key, &[])
}

fn settings_with(url: &str, key: &SecretsKey, extra: &[(&str, &str)]) -> Result<Settings> {
    let mut pairs = vec![
        ("LANDLORD_TENANT_DATABASE_URL".to_owned(), url.to_owned()),
        ("LANDLORD_SECRETS_KEY".to_owned(), key.to_base64()),
        ("LANDLORD_TENANT_DATABASE_TIMEOUT".to_owned(), "6s".to_owned()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Ok(Settings::from_env(&Env::from_pairs(pairs))?)
}

impl Fixture {
    async fn new() -> Result<Self> {
        let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
        let db = postgres.fresh_database().await?;
        let provisioner = Provisioner::connect(settings(&db.url, &SecretsKey::generate()?)?)?;
        provisioner.prepare().await?;
        Ok(Self { provisioner, url: db.url, database: db.name, port: postgres.port() })
    }

    async fn run(&self, action: &str, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
        self.provisioner.run(action, command, &delivery()).await
    }

    async fn provision(&self, spec: &pb::TenantSpec) -> Result<pb::StepOk> {
        Ok(self.run("provision", &command(spec, false)).await?)
    }

    async fn deprovision(&self, spec: &pb::TenantSpec) -> Result<pb::StepOk> {
        Ok(self.run("deprovision", &command(spec, true)).await?)
    }

    async fn admin(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    async fn password(&self, ok: &pb::StepOk) -> Result<String> {
        let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("not a reference")?;
        let password = self.provisioner.secrets().get(&reference).await?.context("no password kept")?;
        Ok(password.expose().to_owned())
    }

    /// Connects as the tenant's role with the password from the store.
    async fn connect_as(&self, ok: &pb::StepOk, database: &str) -> Result<PgConnection, sqlx::Error> {
        let password = self.password(ok).await.map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&ok.outputs["database.role"])
            .password(&password)
            .database(database);
        PgConnection::connect_with(&options).await
    }

    async fn exists(&self, sql: &'static str, name: &str) -> Result<bool> {
        let (found,): (bool,) = sqlx::query_as(sql).bind(name).fetch_one(&mut self.admin().await?).await?;
        Ok(found)
    }

    async fn role_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", name).await
    }

    async fn schema_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", name).await
    }

    async fn database_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).await
    }

    /// The marker row of `kind` `name`: (tenant id, saga id).
    async fn marker(&self, kind: &str, name: &str) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as("SELECT tenant_id, saga_id FROM landlord_admin.markers WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_optional(&mut self.admin().await?)
            .await?)
    }

    async fn password_kept(&self, spec: &pb::TenantSpec) -> Result<bool> {
        let reference = SecretRef::new("database", &spec.tenant_id, "password");
        Ok(self.provisioner.secrets().get(&reference).await?.is_some())
    }
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

#[tokio::test]
async fn bridge_provision_twice_is_once_and_the_password_is_only_a_reference() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("acme");
    let spec = tenant(&key, pb::Tier::Bridge);
    let first = f.provision(&spec).await?;
    let second = f.provision(&spec).await?;
    assert_eq!(first.outputs, second.outputs);
    let schema = format!("tenant_{}", key.replace('-', "_"));
    assert_eq!(first.outputs["database.schema"], schema);
    assert_eq!(first.outputs["database.role"], schema);
    assert_eq!(first.outputs["database.name"], f.database);
    assert_eq!(first.outputs["database.seed"], "default@1");
    let kinds: Vec<_> = first.resources.iter().map(|r| (r.kind.as_str(), r.external_id.as_str())).collect();
    assert_eq!(kinds, [("postgres.role", schema.as_str()), ("postgres.schema", schema.as_str())]);

    // The password is in the store, and nowhere in the result.
    let password = f.password(&first).await?;
    assert_eq!(password.len(), 43);
    let encoded = first.encode_to_vec();
    assert!(!encoded.windows(password.len()).any(|w| w == password.as_bytes()), "password in the StepOk");
    assert!(first.outputs["database.password_ref"].starts_with("landlord-secret:database/"));
    // …and stored encrypted.
    let (sealed,): (Vec<u8>,) = sqlx::query_as("SELECT ciphertext FROM landlord_secrets.secrets WHERE owner = $1")
        .bind(&spec.tenant_id)
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert!(!sealed.windows(password.len()).any(|w| w == password.as_bytes()));
    // The role's stored verifier is SCRAM, and the password works.
    let (verifier,): (String,) = sqlx::query_as("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&schema)
        .fetch_one(&mut f.admin().await?)
        .await?;
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));

    // Exactly one schema, seeded once, owned by the role, marked.
    let mut tenant = f.connect_as(&first, &f.database).await?;
    let (roles, settings, tables): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM roles), (SELECT count(*) FROM settings),
                (SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema())",
    )
    .fetch_one(&mut tenant)
    .await?;
    assert_eq!((roles, settings, tables), (3, 3, 10));
    sqlx::query("INSERT INTO accounts (name) VALUES ('works')").execute(&mut tenant).await?;
    let (comment, owner): (Option<String>, String) = sqlx::query_as(
        "SELECT obj_description(oid, 'pg_namespace'), pg_get_userbyid(nspowner)::text FROM pg_namespace WHERE nspname = $1",
    )
    .bind(&schema)
    .fetch_one(&mut f.admin().await?)
    .await?;
    assert_eq!(comment, None, "no marker in the world-readable catalog");
    assert_eq!(owner, schema);
    let (detail,): (String,) =
        sqlx::query_as("SELECT detail FROM landlord_admin.markers WHERE kind = 'postgres.schema' AND name = $1")
            .bind(&schema)
            .fetch_one(&mut f.admin().await?)
            .await?;
    assert!(detail.starts_with("seed=default@1 sha256="), "{detail}");
    let saga = format!("saga-{key}");
    for kind in ["postgres.role", "postgres.schema"] {
        assert_eq!(f.marker(kind, &schema).await?, Some((spec.tenant_id.clone(), saga.clone())), "{kind}");
    }
    Ok(())
}

#[tokio::test]
async fn compensation_twice_is_once_and_forgets_the_password() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("gone");
    let spec = tenant(&key, pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let role = ok.outputs["database.role"].clone();
    let mut session = f.connect_as(&ok, &f.database).await?;
    let mut undo = command(&spec, true);
    undo.resources = ok.resources.clone();
    f.run("deprovision", &undo).await?;
    f.run("deprovision", &undo).await?;
    assert!(!f.schema_exists(&role).await?);
    assert!(!f.role_exists(&role).await?);
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    assert!(f.provisioner.secrets().get(&reference).await?.is_none());
    // The tenant's open session was ended.
    assert!(sqlx::query("SELECT 1").execute(&mut session).await.is_err());
    // Resources that name someone else's objects are refused.
    let mut forged = command(&spec, true);
    forged.resources =
        vec![pb::Resource { kind: "postgres.schema".into(), external_id: "public".into(), ..Default::default() }];
    let refused = f.run("deprovision", &forged).await.unwrap_err();
    assert_eq!(refused.code, "resource_mismatch");
    assert!(f.schema_exists("public").await?);
    Ok(())
}

#[tokio::test]
async fn compensation_after_a_partial_provision_removes_the_role() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("half");
    let spec = tenant(&key, pb::Tier::Bridge);
    let role = format!("tenant_{}", key.replace('-', "_"));
    // What a run that stopped after the role (an older version, or the silo
    // tier before CREATE DATABASE) leaves: a marked role, no schema.
    let mut admin = f.admin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let mark = quote_literal(&format!("landlord:tenant={}", spec.tenant_id)).map_err(anyhow::Error::msg)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON ROLE {} IS {mark}",
        quote_ident(&role).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    f.deprovision(&spec).await?;
    assert!(!f.role_exists(&role).await?);
    f.deprovision(&spec).await?;
    // And a provision over such a half-made tenant completes it.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {} LOGIN", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "COMMENT ON ROLE {} IS {mark}",
        quote_ident(&role).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    let ok = f.provision(&spec).await?;
    assert!(f.schema_exists(&role).await?);
    assert_eq!(ok.outputs["database.role"], role);
    // The older COMMENT marker was read, and replaced by a marker row.
    assert_eq!(f.marker("postgres.role", &role).await?, Some((spec.tenant_id.clone(), format!("saga-{key}"))));
    let (comment,): (Option<String>,) =
        sqlx::query_as("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&mut admin)
            .await?;
    assert_eq!(comment, None, "the older marker is dropped once rewritten");
    Ok(())
}

/// The object a tier's fencing is judged on, and its name.
fn fenced_object(spec: &pb::TenantSpec, tier: pb::Tier) -> (&'static str, String) {
    let name = format!("tenant_{}", spec.key.replace('-', "_"));
    match tier {
        pb::Tier::Silo => ("postgres.database", name),
        pb::Tier::Pooled => ("postgres.pooled_tenant", spec.tenant_id.clone()),
        _ => ("postgres.schema", name),
    }
}

/// Issue 22's fencing in every tier: a retry (saga S2) adopts what saga S1
/// made; S1's late compensation then leaves it, succeeding with a note;
/// S2's own compensation removes it.
#[tokio::test]
async fn a_retry_adopts_and_a_stale_compensation_leaves_what_it_adopted() -> Result<()> {
    let f = Fixture::new().await?;
    for tier in [pb::Tier::Bridge, pb::Tier::Silo, pb::Tier::Pooled] {
        let spec = tenant(&unique_key("adopt"), tier);
        let (s1, s2) = (format!("s1-{}", spec.key), format!("s2-{}", spec.key));
        let (kind, name) = fenced_object(&spec, tier);
        let role = format!("tenant_{}", spec.key.replace('-', "_"));
        let first = f.run("provision", &in_saga(&s1, &spec, false)).await?;
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s1.clone())), "{tier:?}");

        let second = f.run("provision", &in_saga(&s2, &spec, false)).await?;
        assert_eq!(first.outputs, second.outputs, "{tier:?}: adopting changes nothing the tenant sees");
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s2.clone())), "{tier:?}");
        if tier != pb::Tier::Pooled {
            assert_eq!(f.marker("postgres.role", &role).await?, Some((spec.tenant_id.clone(), s2.clone())));
        }

        // S1's compensation, redelivered late, with the resources S1 recorded.
        let mut stale = in_saga(&s1, &spec, true);
        stale.resources = first.resources.clone();
        let left = f.run("deprovision", &stale).await?;
        assert!(left.outputs["fenced"].contains(&format!("{kind} {name} belongs to saga {s2}")), "{tier:?}: {left:?}");
        assert_eq!(f.marker(kind, &name).await?, Some((spec.tenant_id.clone(), s2.clone())), "{tier:?}");
        match tier {
            pb::Tier::Pooled => {
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM landlord_pooled.tenants WHERE tenant_id = $1")
                    .bind(&spec.tenant_id)
                    .fetch_one(&mut f.admin().await?)
                    .await?;
                assert_eq!(n, 1, "the pooled row stays");
            }
            _ => {
                assert!(f.role_exists(&role).await?);
                assert!(f.password_kept(&spec).await?, "{tier:?}: the adopted role's password stays");
                // The tenant still logs in, with the password it was given.
                f.connect_as(&second, &second.outputs["database.name"]).await?;
            }
        }

        // S2's own compensation removes everything.
        let mut own = in_saga(&s2, &spec, true);
        own.resources = second.resources.clone();
        let done = f.run("deprovision", &own).await?;
        assert!(!done.outputs.contains_key("fenced"), "{tier:?}: {done:?}");
        assert_eq!(f.marker(kind, &name).await?, None);
        if tier != pb::Tier::Pooled {
            assert!(!f.role_exists(&role).await? && !f.password_kept(&spec).await?, "{tier:?}");
            assert!(!f.schema_exists(&role).await? && !f.database_exists(&role).await?, "{tier:?}");
        }
    }
    Ok(())
}

/// A provision that fails after keeping the password (the first thing it
/// does) leaves only that; the compensation of the failed step — which has
/// no resources to go by — finds it from the tenant spec and removes it,
/// and leaves the object that made the provision fail.
#[tokio::test]
async fn the_compensation_of_a_failed_provision_removes_its_kept_password() -> Result<()> {
    let f = Fixture::new().await?;
    let key = unique_key("partial");
    let name = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {}", quote_ident(&name).map_err(anyhow::Error::msg)?)))
        .execute(&mut f.admin().await?)
        .await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    assert!(f.password_kept(&spec).await?, "the partial effect");
    assert!(!f.role_exists(&name).await?, "role and schema are one transaction");
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(!f.password_kept(&spec).await?);
    assert!(f.schema_exists(&name).await?, "not ours: left alone");
    Ok(())
}

/// Issue 23, item 9: markers are where only the worker's role reads them;
/// the catalogs every tenant can read name no tenant id.
#[tokio::test]
async fn tenants_can_read_neither_markers_nor_tenant_ids_in_the_catalogs() -> Result<()> {
    let f = Fixture::new().await?;
    let one = tenant(&unique_key("seer"), pb::Tier::Bridge);
    let others = [tenant(&unique_key("seen"), pb::Tier::Bridge), tenant(&unique_key("seensilo"), pb::Tier::Silo)];
    let ok = f.provision(&one).await?;
    for other in &others {
        f.provision(other).await?;
    }
    let mut tenant_session = f.connect_as(&ok, &f.database).await?;
    let denied = sqlx::query("SELECT * FROM landlord_admin.markers").execute(&mut tenant_session).await.unwrap_err();
    assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{denied}");
    let comments: Vec<(String,)> = sqlx::query_as(
        "SELECT c FROM (SELECT obj_description(oid, 'pg_namespace') AS c FROM pg_namespace
                        UNION ALL SELECT shobj_description(oid, 'pg_authid') FROM pg_roles
                        UNION ALL SELECT shobj_description(oid, 'pg_database') FROM pg_database) x
         WHERE c IS NOT NULL",
    )
    .fetch_all(&mut tenant_session)
    .await?;
    for other in &others {
        assert!(!comments.iter().any(|(c,)| c.contains(&other.tenant_id)), "{comments:?}");
    }
    // What the tier documentation says: schema-per-tenant still shows the
    // other tenants' schema names (PostgreSQL's catalogs are public).
    let schemas: Vec<(String,)> =
        sqlx::query_as("SELECT nspname::text FROM pg_namespace").fetch_all(&mut tenant_session).await?;
    let seen = format!("tenant_{}", others[0].key.replace('-', "_"));
    assert!(schemas.iter().any(|(n,)| *n == seen), "{schemas:?}");
    Ok(())
}

/// Issue 23, item 8: the test cluster, like the local stack, checks
/// passwords over TCP (scram-sha-256): a tenant role gets in with the
/// password the worker generated, and not with a wrong one or none.
#[tokio::test]
async fn a_tenant_role_logs_in_only_with_the_password_the_worker_generated() -> Result<()> {
    let f = Fixture::new().await?;
    for tier in [pb::Tier::Bridge, pb::Tier::Silo] {
        let ok = f.provision(&tenant(&unique_key("login"), tier)).await?;
        let password = f.password(&ok).await?;
        let mut session = connect_with_outputs(&ok, &password).await?;
        let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&mut session).await?;
        assert_eq!(user, ok.outputs["database.role"]);
        for wrong in ["not-the-password", ""] {
            let refused = connect_with_outputs(&ok, wrong).await.unwrap_err();
            assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{tier:?} {wrong:?}: {refused}");
        }
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&ok.outputs["database.host"])
            .port(f.port)
            .username(&ok.outputs["database.role"])
            .database(&ok.outputs["database.name"]);
        let refused = PgConnection::connect_with(&options).await.unwrap_err();
        assert!(sqlstate(&refused).is_some_and(|c| c.starts_with("28")), "{tier:?} without a password: {refused}");
    }
    // The superuser too, over TCP.
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    let url = postgres.url("postgres").replace(postgres.password(), "wrong");
    let refused = PgConnection::connect(&url).await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("28P01"), "{refused}");
    Ok(())
}

#[tokio::test]
async fn a_tenant_role_sees_only_its_own_schema() -> Result<()> {
    let f = Fixture::new().await?;
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    // A control-plane database on the same server, with a table in public.
    let control = postgres.fresh_database().await?;
    let mut cp = PgConnection::connect(&control.url).await?;
    sqlx::query("CREATE TABLE sagas (id int)").execute(&mut cp).await?;
    sqlx::query("CREATE TABLE public.shared_stuff (x int)").execute(&mut f.admin().await?).await?;
    // Hardening covers databases that exist when it runs (a restart).
    let again = Provisioner::connect(settings(&f.url, &SecretsKey::generate()?)?)?;
    again.prepare().await?;

    let a = f.provision(&tenant(&unique_key("alpha"), pb::Tier::Bridge)).await?;
    let b = f.provision(&tenant(&unique_key("bravo"), pb::Tier::Bridge)).await?;
    let b_schema = quote_ident(&b.outputs["database.schema"]).map_err(anyhow::Error::msg)?;
    let mut as_a = f.connect_as(&a, &f.database).await?;

    let read = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {b_schema}.settings"))).execute(&mut as_a).await;
    assert_eq!(sqlstate(&read.unwrap_err()).as_deref(), Some("42501"), "reading B's table");
    let create =
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {b_schema}.x (y int)"))).execute(&mut as_a).await;
    assert_eq!(sqlstate(&create.unwrap_err()).as_deref(), Some("42501"), "creating in B's schema");
    let listed: Vec<(String,)> =
        sqlx::query_as("SELECT table_schema::text FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
            .fetch_all(&mut as_a)
            .await?;
    assert!(listed.iter().all(|(s,)| s == &a.outputs["database.schema"]), "A lists {listed:?}");
    let schemas: Vec<(String,)> = sqlx::query_as(
        "SELECT schema_name::text FROM information_schema.schemata WHERE schema_name NOT LIKE 'pg\\_%' AND schema_name <> 'information_schema'",
    )
    .fetch_all(&mut as_a)
    .await?;
    assert_eq!(schemas, vec![(a.outputs["database.schema"].clone(),)]);
    for sql in [
        "SELECT * FROM public.shared_stuff",
        "CREATE TABLE public.mine (x int)",
        "SELECT * FROM landlord_secrets.secrets",
        "SELECT * FROM landlord_pooled.settings",
    ] {
        let denied = sqlx::query(sql).execute(&mut as_a).await.unwrap_err();
        assert_eq!(sqlstate(&denied).as_deref(), Some("42501"), "{sql}");
    }
    // No other database: not the control plane, not `postgres`.
    for database in [control.name.as_str(), "postgres"] {
        let refused = f.connect_as(&a, database).await.unwrap_err();
        assert_eq!(sqlstate(&refused).as_deref(), Some("42501"), "connecting to {database}: {refused}");
    }
    Ok(())
}

#[tokio::test]
async fn hostile_keys_never_reach_sql() -> Result<()> {
    let f = Fixture::new().await?;
    let mut admin = f.admin().await?;
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS sentinel; CREATE TABLE IF NOT EXISTS sentinel.t (x int)")
        .execute(&mut admin)
        .await?;
    let url = f.url.clone();
    let count = |sql: &'static str| {
        let url = url.clone();
        async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut PgConnection::connect(&url).await?).await?;
            anyhow::Ok(n)
        }
    };
    let before = (count("SELECT count(*) FROM pg_namespace").await?, count("SELECT count(*) FROM pg_roles").await?);
    let hostile = [
        "x\"; DROP SCHEMA sentinel CASCADE; --",
        "\"; DROP SCHEMA public CASCADE; --",
        "acme'; DROP ROLE postgres; --",
        "a;b",
        "tenant\\",
        "ünïcødé",
        "acme\0",
        "ACME",
        "a b",
        "public",
        "--",
        "",
    ];
    for key in hostile {
        for (action, compensate) in [("provision", false), ("deprovision", true)] {
            let failure = f.run(action, &command(&tenant(key, pb::Tier::Bridge), compensate)).await.unwrap_err();
            assert!(!failure.retryable, "{key:?}: {failure}");
            assert!(failure.code.starts_with("tenant_key."), "{key:?}: {failure}");
        }
    }
    let after = (count("SELECT count(*) FROM pg_namespace").await?, count("SELECT count(*) FROM pg_roles").await?);
    assert_eq!(before, after);
    assert_eq!(count("SELECT count(*) FROM sentinel.t").await?, 0);
    // The quoting itself, against the real parser: each hostile name makes
    // exactly one schema of exactly that name, and harms nothing.
    for name in hostile.iter().filter(|k| !k.is_empty() && !k.contains('\0') && **k != "public") {
        let quoted = quote_ident(name).map_err(anyhow::Error::msg)?;
        let comment = quote_literal(name).map_err(anyhow::Error::msg)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {quoted}"))).execute(&mut admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("COMMENT ON SCHEMA {quoted} IS {comment}")))
            .execute(&mut admin)
            .await?;
        let (back,): (String,) =
            sqlx::query_as("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1")
                .bind(name)
                .fetch_one(&mut admin)
                .await?;
        assert_eq!(&back, name);
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {quoted}"))).execute(&mut admin).await?;
    }
    assert!(f.schema_exists("sentinel").await? && f.schema_exists("public").await?);
    // Tenant ids go into comments: they must be UUIDs.
    let mut bad_id = tenant(&unique_key("idbad"), pb::Tier::Bridge);
    bad_id.tenant_id = "x' ; DROP SCHEMA sentinel CASCADE; --".into();
    assert_eq!(f.run("provision", &command(&bad_id, false)).await.unwrap_err().code, "tenant_id.invalid");
    Ok(())
}

#[tokio::test]
async fn objects_not_marked_as_ours_are_conflicts_never_reused_or_dropped() -> Result<()> {
    let f = Fixture::new().await?;
    let mut admin = f.admin().await?;
    // A schema of that name made by someone else.
    let key = unique_key("taken");
    let name = format!("tenant_{}", key.replace('-', "_"));
    let quoted = quote_ident(&name).map_err(anyhow::Error::msg)?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {quoted}"))).execute(&mut admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {quoted}.precious (x int)"))).execute(&mut admin).await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    let failure = f.run("provision", &command(&spec, false)).await.unwrap_err();
    assert_eq!((failure.code.as_str(), failure.retryable), ("conflict", false), "{failure}");
    assert!(failure.message.contains("not marked"), "{failure}");
    // Nothing was left behind by the failed provision (one transaction).
    assert!(!f.role_exists(&name).await?);
    // A compensation leaves it, and says so.
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(f.schema_exists(&name).await?);
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {quoted}.precious"))).execute(&mut admin).await?;

    // Another tenant's marker is not ours either.
    let other = tenant(&unique_key("owner"), pb::Tier::Bridge);
    f.provision(&other).await?;
    let mut impostor = other.clone();
    impostor.tenant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(f.run("provision", &command(&impostor, false)).await.unwrap_err().code, "conflict");
    let left = f.run("deprovision", &command(&impostor, true)).await?;
    assert!(left.outputs["fenced"].contains(&format!("belongs to tenant {}", other.tenant_id)), "{left:?}");
    f.provision(&other).await?;

    // A role made by hand.
    let key = unique_key("byhand");
    let role = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {}", quote_ident(&role).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let spec = tenant(&key, pb::Tier::Bridge);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains("carries no marker"), "{left:?}");
    assert!(f.role_exists(&role).await?);
    Ok(())
}

#[tokio::test]
async fn silo_tenants_get_a_database_of_their_own() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("silo"), pb::Tier::Silo);
    let ok = f.provision(&spec).await?;
    assert_eq!(ok, f.provision(&spec).await?);
    let name = ok.outputs["database.name"].clone();
    assert_eq!(ok.outputs["database.tier"], "silo");
    assert!(ok.resources.iter().any(|r| r.kind == "postgres.database" && r.external_id == name));
    let mut inside = f.connect_as(&ok, &name).await?;
    let (settings,): (i64,) = sqlx::query_as("SELECT count(*) FROM settings").fetch_one(&mut inside).await?;
    assert_eq!(settings, 3);
    // Not into the tenant-data database, and others not into this one.
    assert_eq!(sqlstate(&f.connect_as(&ok, &f.database).await.unwrap_err()).as_deref(), Some("42501"));
    let neighbour = f.provision(&tenant(&unique_key("next"), pb::Tier::Bridge)).await?;
    assert_eq!(sqlstate(&f.connect_as(&neighbour, &name).await.unwrap_err()).as_deref(), Some("42501"));

    // A half-made silo (database created, not marked yet) is finished.
    drop(inside);
    let mut admin = f.admin().await?;
    assert_eq!(
        f.marker("postgres.database", &name).await?,
        Some((spec.tenant_id.clone(), format!("saga-{}", spec.key)))
    );
    sqlx::query("DELETE FROM landlord_admin.markers WHERE kind = 'postgres.database' AND name = $1")
        .bind(&name)
        .execute(&mut admin)
        .await?;
    f.provision(&spec).await?;
    assert!(f.marker("postgres.database", &name).await?.is_some());
    // …and one its own saga's compensation finds unmarked is undone.
    sqlx::query("DELETE FROM landlord_admin.markers WHERE kind = 'postgres.database' AND name = $1")
        .bind(&name)
        .execute(&mut admin)
        .await?;

    f.deprovision(&spec).await?;
    f.deprovision(&spec).await?;
    assert!(!f.database_exists(&name).await?);
    assert!(!f.role_exists(&ok.outputs["database.role"]).await?);

    // A database of that name that is not ours: conflict, left alone.
    let key = unique_key("foreign");
    let foreign = format!("tenant_{}", key.replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&foreign).map_err(anyhow::Error::msg)?)))
        .execute(&mut admin)
        .await?;
    let spec = tenant(&key, pb::Tier::Silo);
    assert_eq!(f.run("provision", &command(&spec, false)).await.unwrap_err().code, "conflict");
    // The failed provision had kept a password and made the role before
    // it met the database: its compensation undoes both, and leaves the
    // database.
    assert!(f.role_exists(&foreign).await? && f.password_kept(&spec).await?);
    let left = f.run("deprovision", &command(&spec, true)).await?;
    assert!(left.outputs["fenced"].contains(&format!("postgres.database {foreign} carries no marker")), "{left:?}");
    assert!(f.database_exists(&foreign).await?);
    assert!(!f.role_exists(&foreign).await?);
    assert!(!f.password_kept(&spec).await?);
    Ok(())
}

#[tokio::test]
async fn pooled_tenants_are_rows_behind_row_level_security() -> Result<()> {
    let f = Fixture::new().await?;
    let one = tenant(&unique_key("poolone"), pb::Tier::Pooled);
    let two = tenant(&unique_key("pooltwo"), pb::Tier::Pooled);
    let ok = f.provision(&one).await?;
    assert_eq!(ok, f.provision(&one).await?);
    f.provision(&two).await?;
    assert_eq!(ok.resources[0].kind, "postgres.pooled_tenant");
    assert!(!ok.outputs.contains_key("database.password_ref"));

    // An application role, as a deployment would make one.
    let app = format!("app_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let mut admin = f.admin().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {app} LOGIN PASSWORD 'app' IN ROLE landlord_pooled_app")))
        .execute(&mut admin)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "GRANT CONNECT ON DATABASE {} TO {app}",
        quote_ident(&f.database).map_err(anyhow::Error::msg)?
    )))
    .execute(&mut admin)
    .await?;
    let options = sqlx::postgres::PgConnectOptions::new()
        .host("127.0.0.1")
        .port(f.port)
        .username(&app)
        .password("app")
        .database(&f.database);
    let mut conn = PgConnection::connect_with(&options).await?;
    let (unset,): (i64,) = sqlx::query_as("SELECT count(*) FROM landlord_pooled.settings").fetch_one(&mut conn).await?;
    assert_eq!(unset, 0, "no tenant set: no rows");
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT set_config('landlord.tenant_id', $1, true)").bind(&one.tenant_id).execute(&mut *tx).await?;
    let ids: Vec<(String,)> =
        sqlx::query_as("SELECT DISTINCT tenant_id FROM landlord_pooled.settings").fetch_all(&mut *tx).await?;
    assert_eq!(ids, vec![(one.tenant_id.clone(),)]);
    let sneaky = sqlx::query("INSERT INTO landlord_pooled.settings (tenant_id, name, value) VALUES ($1, 'x', 'y')")
        .bind(&two.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&sneaky).as_deref(), Some("42501"), "writing another tenant's row");
    tx.rollback().await?;

    // The key taken by another tenant id: conflict.
    let mut impostor = one.clone();
    impostor.tenant_id = uuid::Uuid::new_v4().to_string();
    assert_eq!(f.run("provision", &command(&impostor, false)).await.unwrap_err().code, "conflict");

    f.deprovision(&one).await?;
    f.deprovision(&one).await?;
    let (left_one, left_two): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM landlord_pooled.settings",
    )
    .bind(&one.tenant_id)
    .bind(&two.tenant_id)
    .fetch_one(&mut admin)
    .await?;
    assert_eq!((left_one, left_two), (0, 3));
    Ok(())
}

#[tokio::test]
async fn backend_down_is_retryable_and_back_up_succeeds() -> Result<()> {
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let provisioner = Provisioner::connect(settings(&db.url, &SecretsKey::generate()?)?)?;
    let spec = tenant(&unique_key("flaky"), pb::Tier::Bridge);
    provisioner.run("provision", &command(&spec, false), &delivery()).await?;
    let postgres = tokio::task::spawn_blocking(move || postgres.stop().map(|()| postgres)).await??;
    let mut postgres = postgres;
    for (action, compensate) in [("provision", false), ("deprovision", true)] {
        let failure = provisioner.run(action, &command(&spec, compensate), &delivery()).await.unwrap_err();
        assert!(failure.retryable, "{action}: {failure}");
    }
    let silo = tenant(&unique_key("flakysilo"), pb::Tier::Silo);
    assert!(provisioner.run("provision", &command(&silo, false), &delivery()).await.unwrap_err().retryable);
    postgres = tokio::task::spawn_blocking(move || postgres.restart().map(|()| postgres)).await??;
    provisioner.run("deprovision", &command(&spec, true), &delivery()).await?;
    provisioner.run("provision", &command(&silo, false), &delivery()).await?;
    provisioner.run("deprovision", &command(&silo, true), &delivery()).await?;
    drop(postgres);
    Ok(())
}

#[tokio::test]
async fn a_fresh_service_reads_back_the_password_with_the_same_key_only() -> Result<()> {
    let f = Fixture::new().await?;
    let spec = tenant(&unique_key("keyed"), pb::Tier::Bridge);
    let ok = f.provision(&spec).await?;
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    let pool = f.provisioner.pool().clone();
    let wrong = PgSecretStore::new(pool, SecretsKey::generate()?);
    assert!(wrong.get(&reference).await.is_err(), "another key cannot open it");
    // The row cannot be moved under another reference either.
    sqlx::query("UPDATE landlord_secrets.secrets SET reference = 'landlord-secret:moved' WHERE reference = $1")
        .bind(reference.as_str())
        .execute(&mut f.admin().await?)
        .await?;
    let moved = SecretRef::parse("landlord-secret:moved").context("reference")?;
    assert!(f.provisioner.secrets().get(&moved).await.is_err());
    Ok(())
}

/// Connects with what the result says (host, port, database, role) and
/// `password`.
async fn connect_with_outputs(ok: &pb::StepOk, password: &str) -> Result<PgConnection, sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::new()
        .host(&ok.outputs["database.host"])
        .port(ok.outputs["database.port"].parse().unwrap_or(5432))
        .username(&ok.outputs["database.role"])
        .password(password)
        .database(&ok.outputs["database.name"]);
    PgConnection::connect_with(&options).await
}

#[tokio::test]
async fn the_password_reaches_the_admin_only_through_a_sealed_delivery_copy() -> Result<()> {
    let postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let nats = NatsServer::shared().await;
    let namespace = unique_namespace();
    let broker = Broker::connect(&nats.url(), "database-test", namespace.clone()).await?;
    let key = SecretsKey::generate()?;
    let settings = settings(&db.url, &key)?;
    let store = open_delivery(&settings, &broker, 1).await?;
    let provisioner = Provisioner::connect(settings)?.with_delivery(store);
    provisioner.prepare().await?;
    // The notification worker's side: the same bucket, opened with the same key.
    let mail = KvSecrets::open(&broker.jetstream, namespace.root(), 1, Duration::from_secs(3600), key).await?;
    let bucket = broker.jetstream.get_key_value(format!("{}_secrets", namespace.root())).await?;

    for tier in [pb::Tier::Bridge, pb::Tier::Silo] {
        let spec = tenant(&unique_key("handover"), tier);
        let ok = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(ok.outputs["database.password_delivery"], "welcome-email");
        let durable = SecretRef::parse(&ok.outputs["database.password_ref"]).context("durable reference")?;
        let reference = SecretRef::parse(&ok.outputs["database.delivery_ref"]).context("delivery reference")?;
        assert_eq!(reference.as_str(), format!("landlord-secret:database/{}/delivery-password", spec.tenant_id));
        assert_ne!(reference, durable, "the delivery copy has a reference of its own");
        let copy = mail.get(&reference).await?.context("a delivery copy is sealed")?;
        assert_eq!(copy.len(), 43);

        // It is the password that logs in, with the connection details the result gives.
        let mut session = connect_with_outputs(&ok, &copy).await?;
        let (user,): (String,) = sqlx::query_as("SELECT current_user::text").fetch_one(&mut session).await?;
        assert_eq!(user, ok.outputs["database.role"]);
        let wrong = connect_with_outputs(&ok, "not-the-password").await.unwrap_err();
        assert_eq!(sqlstate(&wrong).as_deref(), Some("28P01"), "passwords are checked: {wrong}");
        assert_eq!(
            ok.outputs["database.url"],
            format!(
                "postgresql://{}@{}:{}/{}",
                ok.outputs["database.role"],
                ok.outputs["database.host"],
                ok.outputs["database.port"],
                ok.outputs["database.name"]
            )
        );

        // Sealed in the bucket, and nowhere in the result.
        let stored = bucket.get(format!("database/{}/delivery-password", spec.tenant_id)).await?.context("stored")?;
        assert!(!stored.windows(copy.len()).any(|w| w == copy.as_bytes()), "stored in the clear");
        assert!(!ok.encode_to_vec().windows(copy.len()).any(|w| w == copy.as_bytes()), "password in the StepOk");

        // A redelivered provision reuses it; after the mail purged it, a
        // late redelivery seals the same password, never a new one.
        let again = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(again.outputs, ok.outputs);
        assert_eq!(mail.get(&reference).await?.as_deref(), Some(copy.as_str()));
        mail.delete(&reference).await?;
        provisioner.run("provision", &command(&spec, false), &delivery()).await?;
        assert_eq!(mail.get(&reference).await?.as_deref(), Some(copy.as_str()));

        // Compensation forgets both copies.
        drop(session);
        let mut undo = command(&spec, true);
        undo.resources = ok.resources.clone();
        provisioner.run("deprovision", &undo, &delivery()).await?;
        assert!(mail.get(&reference).await?.is_none());
        assert!(provisioner.secrets().get(&durable).await?.is_none());
    }

    // A stale copy (say, of an earlier password for the same tenant id) is replaced.
    let spec = tenant(&unique_key("stale"), pb::Tier::Bridge);
    let stale = SecretRef::new("database", &spec.tenant_id, "delivery-password");
    mail.put_if_absent(&stale, "an-earlier-password").await?;
    let ok = provisioner.run("provision", &command(&spec, false), &delivery()).await?;
    let copy = mail.get(&stale).await?.context("sealed")?;
    assert_ne!(copy, "an-earlier-password");
    connect_with_outputs(&ok, &copy).await?;

    // `none`: no delivery copy, no reference; the durable copy stays.
    let none = settings_with(&db.url, &SecretsKey::generate()?, &[("LANDLORD_DATABASE_PASSWORD_DELIVERY", "none")])?;
    assert!(open_delivery(&none, &broker, 1).await?.is_none());
    let quiet = Provisioner::connect(none)?.with_delivery(Some(mail.clone()));
    assert!(quiet.delivery().is_none(), "a store is not used when delivery is none");
    let spec = tenant(&unique_key("nomail"), pb::Tier::Bridge);
    let ok = quiet.run("provision", &command(&spec, false), &delivery()).await?;
    assert_eq!(ok.outputs["database.password_delivery"], "none");
    assert!(!ok.outputs.contains_key("database.delivery_ref"));
    assert!(ok.outputs.contains_key("database.password_ref"));
    let unsent = SecretRef::new("database", &spec.tenant_id, "delivery-password");
    assert!(mail.get(&unsent).await?.is_none());
    drop(postgres);
    Ok(())
}

#[tokio::test]
async fn readyz_of_the_worker_follows_the_tenant_data_database() -> Result<()> {
    let nats = NatsServer::shared().await;
    let mut postgres = tokio::task::spawn_blocking(Postgres::start).await??;
    let db = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let port = free_port();
    let _service = Process::start(
        "database-readyz",
        &workspace_binary("landlord-database")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
            ("LANDLORD_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
            ("LANDLORD_TENANT_DATABASE_URL".into(), db.url.clone()),
            ("LANDLORD_SECRETS_KEY".into(), SecretsKey::generate()?.to_base64()),
        ],
        &scratch_dir("logs")?,
    )?;
    // The endpoint is up a moment before the worker adds its check: wait for both.
    let readyz = |want: u16| async move {
        let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await.ok()??;
        let body: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == want && body["checks"]["tenant_data_database"].is_string()).then_some(body)
    };
    let body = eventually("the worker to be ready", WAIT, || readyz(200)).await?;
    assert_eq!(body["checks"]["tenant_data_database"], "ok", "{body}");
    assert_eq!((body["broker"].as_str(), body["database"].as_str()), (Some("ok"), Some("not used")), "{body}");

    postgres = tokio::task::spawn_blocking(move || postgres.stop().map(|()| postgres)).await??;
    let body = eventually("503 while the tenant-data server is down", WAIT, || readyz(503)).await?;
    assert_eq!(body["status"], "not ready", "{body}");
    let check = body["checks"]["tenant_data_database"].as_str().unwrap_or_default();
    assert!(check.starts_with("unreachable"), "names the tenant-data database: {body}");
    assert_eq!(body["broker"], "ok", "only the tenant-data database is down: {body}");

    postgres = tokio::task::spawn_blocking(move || postgres.restart().map(|()| postgres)).await??;
    eventually("ready again once it is back", WAIT, || readyz(200)).await?;
    drop(postgres);
    Ok(())
}

#[test]
fn settings_errors_name_the_variable_and_hide_secrets() {
    let err =
        |pairs: &[(&str, &str)]| Settings::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err().to_string();
    assert!(err(&[]).starts_with("LANDLORD_TENANT_DATABASE_URL is required"));
    let e = err(&[("LANDLORD_TENANT_DATABASE_URL", "mysql://u:hunter2@x/y")]);
    assert!(e.starts_with("LANDLORD_TENANT_DATABASE_URL") && !e.contains("hunter2"), "{e}");
    let url = ("LANDLORD_TENANT_DATABASE_URL", "postgres://127.0.0.1/t");
    assert!(err(&[url]).starts_with("LANDLORD_SECRETS_KEY is required"));
    let e = err(&[url, ("LANDLORD_SECRETS_KEY", "c2hvcnQ=")]);
    assert!(e.starts_with("LANDLORD_SECRETS_KEY") && e.contains("32 bytes"), "{e}");
    let key = SecretsKey::generate().map(|k| k.to_base64()).unwrap_or_default();
    let key = ("LANDLORD_SECRETS_KEY", key.as_str());
    let e = err(&[url, key, ("LANDLORD_DATABASE_PASSWORD_DELIVERY", "carrier-pigeon")]);
    assert!(e.starts_with("LANDLORD_DATABASE_PASSWORD_DELIVERY") && e.contains("welcome-email or none"), "{e}");
    // Defaults, and where tenants are told to connect.
    let settings = Settings::from_env(&Env::from_pairs([url, key])).unwrap();
    assert_eq!(settings.password_delivery, landlord_database::PasswordDelivery::WelcomeEmail);
    assert_eq!(settings.secrets_ttl, Duration::from_secs(7 * 24 * 3600));
    assert_eq!((settings.public_host.as_str(), settings.public_port), ("127.0.0.1", 5432));
    let public = [url, key, ("LANDLORD_TENANT_DATABASE_PUBLIC_HOST", "db.example.com")];
    let settings = Settings::from_env(&Env::from_pairs(public)).unwrap();
    assert_eq!((settings.public_host.as_str(), settings.public_port), ("db.example.com", 5432));
}

#[tokio::test]
async fn the_service_binary_answers_a_provision_command_over_nats() -> Result<()> {
    let nats = NatsServer::shared().await;
    let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
    let db = postgres.fresh_database().await?;
    let namespace = unique_namespace();
    let key = SecretsKey::generate()?;
    let service = Process::start(
        "database",
        &workspace_binary("landlord-database")?,
        &[],
        &[
            ("LANDLORD_NATS_URL".into(), nats.url()),
            ("LANDLORD_NAMESPACE".into(), namespace.root().to_owned()),
            ("LANDLORD_TENANT_DATABASE_URL".into(), db.url.clone()),
            ("LANDLORD_SECRETS_KEY".into(), key.to_base64()),
            ("RUST_LOG".into(), "debug".into()),
        ],
        &scratch_dir("logs")?,
    )?;
    let client = async_nats::connect(nats.url()).await?;
    let mut answers = client.subscribe(namespace.result_subject("database", "provision")).await?;
    let env = Env::from_pairs([("LANDLORD_NATS_URL", nats.url()), ("LANDLORD_NAMESPACE", namespace.root().to_owned())]);
    let sender = Service::build(Config::from("test", &env)?).await?;
    let publisher = Publisher::new(&sender.broker, "test");
    let spec = tenant(&unique_key("wire"), pb::Tier::Bridge);
    publisher
        .publish(
            namespace.command_subject("database", "provision"),
            &command(&spec, false),
            &Envelope::new("cmd-db-wire"),
        )
        .await?;
    let answer = tokio::time::timeout(WAIT, answers.next()).await?.context("no result")?;
    let result = pb::StepResult::decode(answer.payload.clone())?;
    let Some(pb::step_result::Outcome::Ok(ok)) = result.outcome else { anyhow::bail!("not ok: {result:?}") };
    assert_eq!(result.saga_id, format!("saga-{}", spec.key));
    // The password: in the store, not on the wire, not in the log.
    let key_copy = key.clone();
    let store = PgSecretStore::new(sqlx::PgPool::connect(&db.url).await?, key);
    let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("reference")?;
    let password = store.get(&reference).await?.context("kept")?;
    let wire = answer.payload.to_vec();
    assert!(!wire.windows(43).any(|w| w == password.expose().as_bytes()));
    // The binary seals the delivery copy (welcome-email is the default).
    assert_eq!(ok.outputs["database.password_delivery"], "welcome-email");
    let delivery_ref = SecretRef::parse(&ok.outputs["database.delivery_ref"]).context("delivery reference")?;
    let mail =
        KvSecrets::open(&sender.broker.jetstream, namespace.root(), 1, Duration::from_secs(3600), key_copy).await?;
    assert_eq!(mail.get(&delivery_ref).await?.as_deref(), Some(password.expose()));
    let log = eventually("the service logs the tenant", WAIT, || {
        let output = service.output();
        async move { output.contains("bridge tenant ready").then_some(output) }
    })
    .await?;
    assert!(!log.contains(password.expose()), "password in the log");
    assert!(log.contains(&spec.key) && log.contains(&result.saga_id), "spans carry key and saga id:\n{log}");
    Ok(())
}
