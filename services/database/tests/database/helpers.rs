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
    NatsServer, Postgres, Process, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, eventually, free_port, http_get, pg_bin_dir,
    scratch_dir, unique_namespace, workspace_binary,
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

/// The variables that send exports to `s3`, into a bucket of the test's own.
pub(crate) fn archive_env(s3: &S3Server) -> Vec<(String, String)> {
    vec![
        ("LANDLORD_S3_ENDPOINT".into(), s3.endpoint()),
        ("LANDLORD_S3_PATH_STYLE".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), S3_ACCESS_KEY.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET_KEY.into()),
        ("LANDLORD_ARCHIVE_BUCKET".into(), format!("archive-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])),
    ]
}

impl Fixture {
    pub(crate) async fn new() -> Result<Self> {
        Self::with_env(&[]).await
    }

    /// A fixture whose worker also reads `extra` (the archive's settings).
    pub(crate) async fn with_env(extra: &[(String, String)]) -> Result<Self> {
        let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
        let db = postgres.fresh_database().await?;
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let provisioner = Provisioner::connect(settings_with(&db.url, &SecretsKey::generate()?, &extra)?)?;
        provisioner.prepare().await?;
        Ok(Self { provisioner, url: db.url, database: db.name, port: postgres.port() })
    }

    /// A fixture whose worker is not a superuser: a login role with
    /// CREATEROLE, CREATEDB and BYPASSRLS that owns the tenant-data
    /// database and administers the shared roles — what a deployment's
    /// provisioning role is, and a role whose privileges a test can take
    /// away. Returns the fixture and the worker role's name.
    pub(crate) async fn unprivileged() -> Result<(Self, String)> {
        Self::unprivileged_with_env(&[]).await
    }

    /// [`Self::unprivileged`], the worker also reading `extra`.
    pub(crate) async fn unprivileged_with_env(extra: &[(String, String)]) -> Result<(Self, String)> {
        let postgres = tokio::task::spawn_blocking(Postgres::shared).await??;
        let db = postgres.fresh_database().await?;
        let mut admin = PgConnection::connect(&db.url).await?;
        for role in ["landlord_tenants", "landlord_pooled_app", "landlord_pooled_export"] {
            let create = format!("CREATE ROLE {role} NOLOGIN");
            match sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut admin).await {
                Ok(_) => {}
                Err(e) if matches!(sqlstate(&e).as_deref(), Some("42710" | "23505")) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let worker = format!("worker_{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let password = uuid::Uuid::new_v4().simple().to_string();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {worker} LOGIN CREATEROLE CREATEDB BYPASSRLS PASSWORD '{password}';
             GRANT landlord_tenants, landlord_pooled_app, landlord_pooled_export TO {worker} WITH ADMIN OPTION;
             ALTER DATABASE \"{}\" OWNER TO {worker};",
            db.name
        )))
        .execute(&mut admin)
        .await?;
        let url = format!("postgres://{worker}:{password}@127.0.0.1:{}/{}", postgres.port(), db.name);
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let provisioner = Provisioner::connect(settings_with(&url, &SecretsKey::generate()?, &extra)?)?;
        provisioner.prepare().await?;
        Ok((Self { provisioner, url: db.url, database: db.name, port: postgres.port() }, worker))
    }

    /// A lifecycle command (suspend, resume, export, purge) of a saga of
    /// its own, as the orchestrator sends it; `inputs` as the saga gives them.
    pub(crate) async fn lifecycle(
        &self,
        action: &str,
        spec: &pb::TenantSpec,
        inputs: &[(&str, &str)],
    ) -> Result<pb::StepOk, StepFailure> {
        let mut command = in_saga(&format!("{action}-{}", spec.key), spec, false);
        command.inputs = inputs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.run(action, &command).await
    }

    /// Whether the role may log in.
    pub(crate) async fn can_login(&self, role: &str) -> Result<bool> {
        let (login,): (bool,) = sqlx::query_as("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_one(&mut self.admin().await?)
            .await?;
        Ok(login)
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
