//! What the database tests share: the fixture (a fresh tenant-data database
//! per test), settings, tenants and commands.

#[allow(unused_imports)]
pub(crate) use std::time::Duration;

#[allow(unused_imports)]
pub(crate) use anyhow::{Context as _, Result};
#[allow(unused_imports)]
pub(crate) use futures_util::StreamExt as _;
#[allow(unused_imports)]
pub(crate) use landlord_contract::pb;
#[allow(unused_imports)]
pub(crate) use landlord_database::ident::{quote_ident, quote_literal};
#[allow(unused_imports)]
pub(crate) use landlord_database::{
    PgSecretStore, Provisioner, SecretRef, SecretStore, SecretsKey, Settings, open_delivery,
};
#[allow(unused_imports)]
pub(crate) use landlord_runtime::{
    Broker, Config, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, Service, StepFailure, StepService,
};
#[allow(unused_imports)]
pub(crate) use landlord_testkit::{
    NatsServer, Postgres, Process, eventually, free_port, http_get, scratch_dir, unique_namespace, workspace_binary,
};
#[allow(unused_imports)]
pub(crate) use prost::Message as _;
#[allow(unused_imports)]
pub(crate) use sqlx::{Connection as _, PgConnection};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Roles are cluster-wide and the cluster is shared: keys are unique.
pub(crate) fn unique_key(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub(crate) fn tenant(key: &str, tier: pb::Tier) -> pb::TenantSpec {
    pb::TenantSpec {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        key: key.to_owned(),
        tier: tier as i32,
        ..Default::default()
    }
}

pub(crate) fn command(spec: &pb::TenantSpec, compensate: bool) -> pb::StepCommand {
    in_saga(&format!("saga-{}", spec.key), spec, compensate)
}

/// A command of saga `saga` (a retry of a tenant is a new saga).
pub(crate) fn in_saga(saga: &str, spec: &pb::TenantSpec, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: saga.to_owned(),
        step: "database".into(),
        compensate,
        attempt: 1,
        tenant: Some(spec.clone()),
        ..Default::default()
    }
}

pub(crate) fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

pub(crate) struct Fixture {
    pub(crate) provisioner: Provisioner,
    /// The tenant-data database's URL, as the superuser.
    pub(crate) url: String,
    pub(crate) database: String,
    pub(crate) port: u16,
}

pub(crate) fn settings(url: &str, key: &SecretsKey) -> Result<Settings> {
    settings_with(url, key, &[])
}

pub(crate) fn settings_with(url: &str, key: &SecretsKey, extra: &[(&str, &str)]) -> Result<Settings> {
    let mut pairs = vec![
        ("LANDLORD_TENANT_DATABASE_URL".to_owned(), url.to_owned()),
        ("LANDLORD_SECRETS_KEY".to_owned(), key.to_base64()),
        ("LANDLORD_TENANT_DATABASE_TIMEOUT".to_owned(), "6s".to_owned()),
    ];
    pairs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Ok(Settings::from_env(&Env::from_pairs(pairs))?)
}

impl Fixture {
    pub(crate) async fn new() -> Result<Self> {
        let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
        let db = postgres.fresh_database().await?;
        let provisioner = Provisioner::connect(settings(&db.url, &SecretsKey::generate()?)?)?;
        provisioner.prepare().await?;
        Ok(Self { provisioner, url: db.url, database: db.name, port: postgres.port() })
    }

    pub(crate) async fn run(&self, action: &str, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
        self.provisioner.run(action, command, &delivery()).await
    }

    pub(crate) async fn provision(&self, spec: &pb::TenantSpec) -> Result<pb::StepOk> {
        Ok(self.run("provision", &command(spec, false)).await?)
    }

    pub(crate) async fn deprovision(&self, spec: &pb::TenantSpec) -> Result<pb::StepOk> {
        Ok(self.run("deprovision", &command(spec, true)).await?)
    }

    pub(crate) async fn admin(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    pub(crate) async fn password(&self, ok: &pb::StepOk) -> Result<String> {
        let reference = SecretRef::parse(&ok.outputs["database.password_ref"]).context("not a reference")?;
        let password = self.provisioner.secrets().get(&reference).await?.context("no password kept")?;
        Ok(password.expose().to_owned())
    }

    /// Connects as the tenant's role with the password from the store.
    pub(crate) async fn connect_as(&self, ok: &pb::StepOk, database: &str) -> Result<PgConnection, sqlx::Error> {
        let password = self.password(ok).await.map_err(|e| sqlx::Error::Configuration(e.into()))?;
        let options = sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&ok.outputs["database.role"])
            .password(&password)
            .database(database);
        PgConnection::connect_with(&options).await
    }

    pub(crate) async fn exists(&self, sql: &'static str, name: &str) -> Result<bool> {
        let (found,): (bool,) = sqlx::query_as(sql).bind(name).fetch_one(&mut self.admin().await?).await?;
        Ok(found)
    }

    pub(crate) async fn role_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", name).await
    }

    pub(crate) async fn schema_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", name).await
    }

    pub(crate) async fn database_exists(&self, name: &str) -> Result<bool> {
        self.exists("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).await
    }

    /// The marker row of `kind` `name`: (tenant id, saga id).
    pub(crate) async fn marker(&self, kind: &str, name: &str) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as("SELECT tenant_id, saga_id FROM landlord_admin.markers WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_optional(&mut self.admin().await?)
            .await?)
    }

    pub(crate) async fn password_kept(&self, spec: &pb::TenantSpec) -> Result<bool> {
        let reference = SecretRef::new("database", &spec.tenant_id, "password");
        Ok(self.provisioner.secrets().get(&reference).await?.is_some())
    }
}

pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned())
}

/// The object a tier's fencing is judged on, and its name.
pub(crate) fn fenced_object(spec: &pb::TenantSpec, tier: pb::Tier) -> (&'static str, String) {
    let name = format!("tenant_{}", spec.key.replace('-', "_"));
    match tier {
        pb::Tier::Silo => ("postgres.database", name),
        pb::Tier::Pooled => ("postgres.pooled_tenant", spec.tenant_id.clone()),
        _ => ("postgres.schema", name),
    }
}

/// Connects with what the result says (host, port, database, role) and
/// `password`.
pub(crate) async fn connect_with_outputs(ok: &pb::StepOk, password: &str) -> Result<PgConnection, sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::new()
        .host(&ok.outputs["database.host"])
        .port(ok.outputs["database.port"].parse().unwrap_or(5432))
        .username(&ok.outputs["database.role"])
        .password(password)
        .database(&ok.outputs["database.name"]);
    PgConnection::connect_with(&options).await
}
