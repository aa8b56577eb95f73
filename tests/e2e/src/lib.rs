//! The whole system as processes: [`Stack`] starts real servers (NATS with
//! JetStream, PostgreSQL, s3s-fs, aiosmtpd), the Keycloak Admin API
//! **contract double** (Keycloak cannot be installed here), and the service
//! binaries built from this workspace, each on its own ports and subject
//! namespace, so that tests can run side by side. Tenants are asked for
//! with the `landlord` CLI, as a person would, or through the gateway
//! ([`GATEWAY`], started on demand) as Clerk's webhooks ask for them.
//!
//! NATS runs with the accounts configuration Landlord ships
//! (deploy/nats/accounts.conf, passwords generated per run): each service
//! binary connects as its own bus user, the CLI and the tests' own
//! connections as the operator ([`Stack::connect`], [`crate::bus`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_contract::Namespace;
use landlord_runtime::SecretsKey;
use landlord_testkit::svix::SvixSigner;
use landlord_testkit::{
    KEYCLOAK_DOUBLE_CLIENT, KeycloakDouble, NatsServer, Postgres, Process, S3_ACCESS_KEY, S3_SECRET_KEY, S3Server,
    SmtpCapture, TestDatabase, eventually, free_port, http_get, scratch_dir, unique_namespace, workspace_binary,
};
use sqlx::{Connection as _, PgConnection};

pub use crate::bus::{OPERATOR, PLATFORM};

mod bus;
mod replicas;
mod tenant_servers;

/// The services, in the order they start.
pub const SERVICES: [&str; 5] = ["orchestrator", "idp", "database", "storage", "notification"];

/// The gateway (HTTP API and Clerk bridge). Not among [`SERVICES`]: only
/// the tests that speak HTTP start it ([`Stack::start_service`]), which
/// spares the others a process on two cores.
pub const GATEWAY: &str = "gateway";

/// The shared realm of pooled tenants, as an operator sets it up.
pub const SHARED_REALM: &str = "landlord";

/// The plans the tests run: the shipped pipelines (deploy/plans.toml),
/// graphs included — realm → client → admin user beside the database and
/// beside the bucket, the welcome mail after all; suspend and resume side
/// by side; the offboard's exports after their suspends — with short
/// timeouts and backoff, so that retries and compensation take seconds,
/// not minutes.
const PLANS: &str = r#"
[defaults]
timeout = "5s"
max_attempts = 3
backoff = ["100ms"]

[plans.free]
tier = "pooled"
pipeline = "default"

[plans.standard]
tier = "bridge"
pipeline = "default"

[plans.enterprise]
tier = "silo"
pipeline = "default"

[[pipelines.default]]
name = "idp_realm"
command = "idp.create_realm"
compensation = "idp.delete_realm"

[[pipelines.default]]
name = "idp_client"
command = "idp.create_client"
compensation = "idp.delete_client"
after = ["idp_realm"]

[[pipelines.default]]
name = "idp_admin_user"
command = "idp.create_admin_user"
compensation = "idp.delete_admin_user"
after = ["idp_client"]

[[pipelines.default]]
name = "database"
command = "database.provision"
compensation = "database.deprovision"
timeout = "20s"

[[pipelines.default]]
name = "storage"
command = "storage.create_bucket"
compensation = "storage.delete_bucket"

[[pipelines.default]]
name = "welcome_email"
command = "notification.send_welcome"
fatal = false
after = ["idp_admin_user", "database", "storage"]

# The lifecycle (docs/lifecycle.md), as deploy/plans.toml ships it (the
# same graphs), with the tests' short timeouts and backoff.
[operations]
restore = "resume"

[[pipelines.suspend]]
name = "idp_suspend"
command = "idp.suspend"
compensation = "idp.resume"

[[pipelines.suspend]]
name = "database_suspend"
command = "database.suspend"
compensation = "database.resume"

[[pipelines.suspend]]
name = "storage_suspend"
command = "storage.suspend"
compensation = "storage.resume"

[[pipelines.suspend]]
name = "suspended_email"
command = "notification.send_suspended"
fatal = false
after = ["idp_suspend", "database_suspend", "storage_suspend"]

[[pipelines.resume]]
name = "idp_resume"
command = "idp.resume"
compensation = "idp.suspend"

[[pipelines.resume]]
name = "database_resume"
command = "database.resume"
compensation = "database.suspend"

[[pipelines.resume]]
name = "storage_resume"
command = "storage.resume"
compensation = "storage.suspend"

[[pipelines.resume]]
name = "resumed_email"
command = "notification.send_resumed"
fatal = false
after = ["idp_resume", "database_resume", "storage_resume"]

[[pipelines.update]]
name = "idp_update"
command = "idp.update"
compensation = "idp.update"

[[pipelines.offboard]]
name = "idp_suspend"
command = "idp.suspend"
compensation = "idp.resume"

[[pipelines.offboard]]
name = "database_suspend"
command = "database.suspend"
compensation = "database.resume"

[[pipelines.offboard]]
name = "storage_suspend"
command = "storage.suspend"
compensation = "storage.resume"

[[pipelines.offboard]]
name = "database_export"
command = "database.export"
timeout = "20s"
after = ["database_suspend"]

[[pipelines.offboard]]
name = "storage_export"
command = "storage.export"
timeout = "20s"
after = ["storage_suspend", "database_export"]

[[pipelines.offboard]]
name = "deletion_email"
command = "notification.send_deletion_scheduled"
fatal = false
after = ["idp_suspend", "database_export", "storage_export"]

[[pipelines.export]]
name = "database_export"
command = "database.export"
timeout = "20s"

[[pipelines.export]]
name = "storage_export"
command = "storage.export"
timeout = "20s"

[[pipelines.purge]]
name = "idp_purge"
command = "idp.purge"
max_attempts = 0
backoff = ["100ms", "200ms", "500ms"]

[[pipelines.purge]]
name = "database_purge"
command = "database.purge"
max_attempts = 0
backoff = ["100ms", "200ms", "500ms"]
timeout = "20s"

[[pipelines.purge]]
name = "storage_purge"
command = "storage.purge"
max_attempts = 0
backoff = ["100ms", "200ms", "500ms"]

[[pipelines.purge]]
name = "deleted_email"
command = "notification.send_deleted"
fatal = false
"#;

/// Where exports go (`LANDLORD_ARCHIVE_BUCKET`, for the database and
/// storage workers).
pub const ARCHIVE_BUCKET: &str = "landlord-archive";

/// The orchestrator's setting for how often its purge timer looks for
/// tenants whose grace period has ended.
pub const PURGE_TIMER_VAR: &str = "LANDLORD_PURGE_INTERVAL";

/// The scopes of the tests' bearer token: everything, the purge without a
/// grace period included.
pub const SCOPES: [&str; 3] = ["tenants:read", "tenants:write", "tenants:purge"];

/// The tenant-data servers of a stack that runs two
/// ([`Stack::add_tenant_data_server`]): the stack's own PostgreSQL, then a
/// second cluster.
pub const TENANT_SERVERS: [&str; 2] = ["first", "second"];

#[derive(Debug)]
struct Running {
    process: Process,
    port: u16,
}

/// Servers, the double and the services of one test. One stack runs at a
/// time in a test binary ([`Stack::servers`] waits for the previous one to
/// be dropped): ten processes per stack are what two cores carry without
/// step deadlines turning into noise.
#[derive(Debug)]
pub struct Stack {
    pub namespace: Namespace,
    pub nats: NatsServer,
    pub pg: Postgres,
    pub control: TestDatabase,
    pub tenant_data: TestDatabase,
    pub s3: S3Server,
    pub smtp: SmtpCapture,
    pub keycloak: KeycloakDouble,
    secrets_key: SecretsKey,
    /// Signs Clerk deliveries with the secret the gateway verifies them with
    /// (`LANDLORD_CLERK_WEBHOOK_SECRET`, generated per stack).
    pub clerk: SvixSigner,
    /// The gateway's HS256 key for bearer tokens (`LANDLORD_JWT_SECRET`).
    pub jwt_secret: String,
    /// The gateway's API port, kept across its restarts.
    api_port: u16,
    /// Replaces the database worker's tenant-data URL (another role).
    pub tenant_data_url: String,
    /// The second tenant-data server's cluster and database, when the
    /// stack runs two ([`Self::add_tenant_data_server`]).
    pub second_pg: Option<(Postgres, TestDatabase)>,
    /// The tenant-data servers the database worker and the audit get as
    /// `LANDLORD_TENANT_DATABASES` (docs/tenant-data.md), one JSON object
    /// each; empty: the one server of [`Self::tenant_data_url`]
    /// (`LANDLORD_TENANT_DATABASE_URL`).
    pub tenant_servers: Vec<serde_json::Value>,
    dir: PathBuf,
    plans: PathBuf,
    /// Behind a lock so that a test may restart services while others
    /// use the stack ([`Self::restart_service`]).
    services: std::sync::Mutex<BTreeMap<&'static str, Running>>,
    /// Settings that replace the tests' defaults (set before the services start).
    pub overrides: Vec<(String, String)>,
    /// Whether NATS runs with the accounts configuration (every client a
    /// user of its own, [`crate::bus`]); not on a cluster of
    /// [`Self::use_cluster`].
    accounts: bool,
    /// Last, so that it is released after everything above is dropped.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Stack {
    /// The servers and the double, no services yet; PostgreSQL with fsync
    /// off, as tests want it.
    pub async fn servers() -> Result<Self> {
        Self::servers_with(false).await
    }

    /// The servers and the double; `durable`: PostgreSQL with fsync on, as
    /// a deployment runs it (benchmarks).
    pub async fn servers_with(durable: bool) -> Result<Self> {
        static TURN: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
        let turn = TURN.get_or_init(Default::default).clone().lock_owned().await;
        let namespace = unique_namespace();
        let nats = NatsServer::start_with_accounts(&namespace).await?;
        let pg = tokio::task::spawn_blocking(move || Postgres::start_with(durable)).await??;
        let control = pg.fresh_database().await?;
        let tenant_data = pg.fresh_database().await?;
        let keycloak = KeycloakDouble::start().await?;
        keycloak.add_realm(serde_json::json!({"realm": SHARED_REALM, "enabled": true, "organizationsEnabled": true}));
        keycloak.set_unmanaged_attribute_policy(SHARED_REALM, "ADMIN_EDIT");
        let dir = scratch_dir("e2e")?;
        let plans = dir.join("plans.toml");
        std::fs::write(&plans, PLANS)?;
        Ok(Self {
            namespace,
            tenant_data_url: tenant_data.url.clone(),
            second_pg: None,
            tenant_servers: Vec::new(),
            nats,
            pg,
            control,
            tenant_data,
            s3: S3Server::start().await?,
            smtp: SmtpCapture::start().await?,
            keycloak,
            secrets_key: SecretsKey::generate()?,
            clerk: SvixSigner::generate()?,
            jwt_secret: SecretsKey::generate()?.to_base64(),
            api_port: free_port(),
            dir,
            plans,
            services: Default::default(),
            overrides: Vec::new(),
            accounts: true,
            _turn: turn,
        })
    }

    /// The servers, the double and every service, ready.
    pub async fn start() -> Result<Self> {
        Self::start_with(false).await
    }

    /// [`Self::start`], with a durable PostgreSQL when `durable`.
    pub async fn start_with(durable: bool) -> Result<Self> {
        let mut stack = Self::servers_with(durable).await?;
        stack.start_services().await?;
        Ok(stack)
    }

    pub async fn start_services(&mut self) -> Result<()> {
        for name in SERVICES {
            self.start_service(name).await?;
        }
        Ok(())
    }

    /// What the services are given, on the bus as the operator (the
    /// CLI's user, [`OPERATOR`]): for the CLI and for code run in process
    /// that only needs the streams.
    pub fn service_env(&self) -> Vec<(String, String)> {
        self.env_as(OPERATOR, 0)
    }

    /// What service `name` is given, on the bus as its own user (the
    /// users of deploy/nats/accounts.conf are named after the services).
    pub fn service_env_for(&self, name: &str) -> Vec<(String, String)> {
        self.env_as(name, 0)
    }

    /// What every service is given, connecting as bus user `user`; each
    /// reads what it needs.
    fn env_as(&self, user: &str, port: u16) -> Vec<(String, String)> {
        self.env_with(user, port, Vec::new())
    }

    /// [`Self::env_as`] and `extra`; [`Self::overrides`] still win.
    fn env_with(&self, user: &str, port: u16, extra: Vec<(&str, String)>) -> Vec<(String, String)> {
        let pairs = [
            ("LANDLORD_NATS_URL", self.nats.url()),
            ("LANDLORD_NAMESPACE", self.namespace.root().to_owned()),
            ("LANDLORD_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("RUST_LOG", "info".to_owned()),
            // A retryable error is redelivered once, then the orchestrator's
            // retry policy takes over.
            ("LANDLORD_MAX_DELIVER", "2".to_owned()),
            ("LANDLORD_BACKOFF", "100ms".to_owned()),
            ("LANDLORD_ACK_WAIT", "10s".to_owned()),
            ("LANDLORD_DATABASE_URL", self.control.url.clone()),
            ("LANDLORD_PLANS", self.plans.display().to_string()),
            ("LANDLORD_TIMER_INTERVAL", "50ms".to_owned()),
            ("LANDLORD_RELAY_GRACE", "500ms".to_owned()),
            ("LANDLORD_TENANT_DATABASE_URL", self.tenant_data_url.clone()),
            ("LANDLORD_TENANT_DATABASE_TIMEOUT", "5s".to_owned()),
            ("LANDLORD_SECRETS_KEY", self.secrets_key.to_base64()),
            ("LANDLORD_S3_ENDPOINT", self.s3.endpoint()),
            ("LANDLORD_S3_PATH_STYLE", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
            ("LANDLORD_SMTP_URL", self.smtp.url()),
            ("LANDLORD_SMTP_TIMEOUT", "2s".to_owned()),
            ("LANDLORD_KEYCLOAK_URL", self.keycloak.url()),
            ("LANDLORD_KEYCLOAK_CLIENT_ID", KEYCLOAK_DOUBLE_CLIENT.0.to_owned()),
            ("LANDLORD_KEYCLOAK_CLIENT_SECRET", KEYCLOAK_DOUBLE_CLIENT.1.to_owned()),
            ("LANDLORD_KEYCLOAK_SHARED_REALM", SHARED_REALM.to_owned()),
            ("LANDLORD_KEYCLOAK_TIMEOUT", "2s".to_owned()),
            ("LANDLORD_ARCHIVE_BUCKET", ARCHIVE_BUCKET.to_owned()),
            // The orchestrator's purge timer: a look at `tenants.purge_at`
            // this often, so that a grace period of a second or two ends
            // in the test's time.
            (PURGE_TIMER_VAR, "200ms".to_owned()),
        ];
        let mut env: Vec<(String, String)> = pairs.into_iter().chain(extra).map(|(k, v)| (k.to_owned(), v)).collect();
        env.extend(self.nats_env(user));
        if !self.tenant_servers.is_empty() {
            // The list replaces the one URL (setting both is refused).
            env.retain(|(k, _)| k != "LANDLORD_TENANT_DATABASE_URL");
            let list = serde_json::Value::Array(self.tenant_servers.clone()).to_string();
            env.push(("LANDLORD_TENANT_DATABASES".to_owned(), list));
        }
        env.retain(|(k, _)| !self.overrides.iter().any(|(o, _)| o == k));
        env.extend(self.overrides.iter().cloned());
        env
    }

    /// What the gateway is given besides what every service gets.
    fn gateway_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LANDLORD_API_ADDR", format!("127.0.0.1:{}", self.api_port)),
            ("LANDLORD_JWT_SECRET", self.jwt_secret.clone()),
            ("LANDLORD_CLERK_WEBHOOK_SECRET", self.clerk.secret().to_owned()),
            // Every request of a test comes from 127.0.0.1, which the
            // per-client rate limit would otherwise treat as one client.
            ("LANDLORD_API_RATE", "100000".to_owned()),
            ("LANDLORD_API_BURST", "100000".to_owned()),
            ("LANDLORD_RELAY_POLL", "100ms".to_owned()),
            // Offboardings name their grace period; Clerk's get the default.
            ("LANDLORD_DELETION_GRACE", "30d".to_owned()),
            ("LANDLORD_DELETION_GRACE_MAX", "30d".to_owned()),
        ]
    }

    /// The gateway's API, e.g. `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Delivers `event` to the gateway's Clerk webhook, signed as Svix
    /// signs it with id `svix_id`: the answer's status and JSON body.
    pub async fn deliver_clerk(&self, svix_id: &str, event: &serde_json::Value) -> Result<(u16, serde_json::Value)> {
        let body = event.to_string();
        let http =
            landlord_runtime::http::client_builder(&Default::default()).timeout(Duration::from_secs(15)).build()?;
        let mut request =
            http.post(format!("{}/v1/webhooks/clerk", self.api_url())).header("content-type", "application/json");
        for (name, value) in self.clerk.headers(svix_id, body.as_bytes()) {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await?;
        let status = response.status().as_u16();
        Ok((status, serde_json::from_str(&response.text().await?).unwrap_or_default()))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Running>> {
        self.services.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts (or starts again) one service and waits until it is ready;
    /// the gateway also until its API answers (its health endpoint is up
    /// before the API listens).
    pub async fn start_service(&mut self, name: &'static str) -> Result<()> {
        self.restart_service(name).await
    }

    /// [`Self::start_service`] through a shared reference: SIGKILLs the
    /// service if it runs, starts it again on its port and waits until it
    /// is ready — while other tasks use the stack (the lifecycle chaos).
    pub async fn restart_service(&self, name: &'static str) -> Result<()> {
        let old = self.running().remove(name);
        let port = match old {
            Some(mut old) => {
                old.process.kill();
                old.port
            }
            None => free_port(),
        };
        let binary = workspace_binary(&format!("landlord-{name}"))?;
        let (env, api) = if name == GATEWAY {
            (self.env_with(name, port, self.gateway_env()), Some(self.api_port))
        } else {
            (self.env_as(name, port), None)
        };
        let process = Process::start(name, &binary, &[], &env, &self.dir)?;
        let mut running = Running { process, port };
        let ready = eventually(&format!("{name} to be ready"), Duration::from_secs(30), || {
            let exited = running.process.try_status();
            async move {
                if exited.is_some() {
                    return Some(false);
                }
                let answers = tokio::task::spawn_blocking(move || {
                    let ok = |port, path| http_get(port, path).is_some_and(|(status, _)| status == 200);
                    ok(port, "/readyz") && api.is_none_or(|api| ok(api, "/v1/openapi.json"))
                });
                answers.await.unwrap_or(false).then_some(true)
            }
        })
        .await;
        match ready {
            Ok(true) => {
                self.running().insert(name, running);
                Ok(())
            }
            Ok(false) => anyhow::bail!("{name} exited at start:\n{}", running.process.output()),
            Err(error) => Err(error.context(running.process.output())),
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill_service(&mut self, name: &str) {
        if let Some(running) = self.running().get_mut(name) {
            running.process.kill();
        }
    }

    /// SIGSTOP a service (the nemesis run): its connections stay open, its
    /// messages wait — past their deadlines if the pause is long enough.
    pub fn pause_service(&self, name: &str) {
        if let Some(running) = self.running().get(name) {
            running.process.pause();
        }
    }

    /// SIGCONT after [`Self::pause_service`].
    pub fn resume_service(&self, name: &str) {
        if let Some(running) = self.running().get(name) {
            running.process.resume();
        }
    }

    /// A service's log so far.
    pub fn log(&self, name: &str) -> String {
        self.running().get(name).map(|r| r.process.output()).unwrap_or_default()
    }

    /// Every service's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.running().iter().map(|(name, r)| format!("--- {name}\n{}\n", r.process.output())).collect()
    }

    /// `landlord request <key> …` with the CLI, waiting for the saga's end.
    pub async fn request(&self, key: &str, plan: &str) -> Result<Output> {
        Ok(self.request_command(key, plan)?.output().await?)
    }

    /// `landlord request <key> …` started, not awaited: for a test that
    /// must act on the stack while the saga runs (bring a backend back).
    pub fn spawn_request(&self, key: &str, plan: &str) -> Result<tokio::process::Child> {
        let mut command = self.request_command(key, plan)?;
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        Ok(command.spawn()?)
    }

    fn request_command(&self, key: &str, plan: &str) -> Result<tokio::process::Command> {
        let cli = workspace_binary("landlord")?;
        let env = self.env_as(OPERATOR, 0);
        let args = [
            "request",
            key,
            "--plan",
            plan,
            "--name",
            &format!("{key} Inc."),
            "--admin-email",
            &format!("admin@{key}.test"),
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
            "--domain",
            &format!("{key}.example.com"),
            "--timeout",
            "60s",
        ]
        .map(str::to_owned);
        let mut command = tokio::process::Command::new(cli);
        command.args(args).envs(env);
        Ok(command)
    }

    /// `landlord audit [--remove-orphans]`: whether it found no drift (or
    /// removed it all), and what it printed.
    pub async fn audit(&self, remove_orphans: bool) -> Result<(bool, String)> {
        let mut command = tokio::process::Command::new(workspace_binary("landlord")?);
        command.arg("audit").envs(self.env_as(OPERATOR, 0));
        if remove_orphans {
            command.arg("--remove-orphans");
        }
        let output = command.output().await?;
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        Ok((output.status.success(), text))
    }

    /// Fails unless the audit finds every backend as the control plane
    /// recorded it.
    pub async fn assert_no_drift(&self) -> Result<()> {
        let (clean, text) = self.audit(false).await?;
        anyhow::ensure!(clean && text.contains("no drift"), "the audit found drift:\n{text}");
        Ok(())
    }

    pub async fn control(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.control.url).await?)
    }

    pub async fn tenant_data(&self) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.tenant_data.url).await?)
    }

    /// The tenant's id and status in the control plane: the live tenant of
    /// the key, else its latest tombstone (a DELETED tenant's key is free
    /// for a new tenant).
    pub async fn tenant(&self, key: &str) -> Result<(String, String)> {
        let mut db = self.control().await?;
        sqlx::query_as(
            "SELECT id::text, status FROM tenants WHERE key = $1
             ORDER BY status = 'DELETED', created_at DESC LIMIT 1",
        )
        .bind(key)
        .fetch_one(&mut db)
        .await
        .with_context(|| format!("no tenant {key}"))
    }

    /// Kinds of the resources the control plane holds for the tenant:
    /// `(kind, external id, deleted)`.
    pub async fn resources(&self, key: &str) -> Result<Vec<(String, String, bool)>> {
        let mut db = self.control().await?;
        Ok(sqlx::query_as(
            "SELECT r.kind, r.external_id, r.deleted_at IS NOT NULL FROM resources r
             JOIN tenants t ON t.id = r.tenant_id WHERE t.key = $1 ORDER BY r.id",
        )
        .bind(key)
        .fetch_all(&mut db)
        .await?)
    }

    /// The saga's steps: `(name, state, last error)`.
    pub async fn steps(&self, key: &str) -> Result<Vec<(String, String, Option<String>)>> {
        let mut db = self.control().await?;
        Ok(sqlx::query_as(
            "SELECT st.name, st.state, st.last_error FROM saga_steps st JOIN sagas s ON s.id = st.saga_id
             JOIN tenants t ON t.id = s.tenant_id WHERE t.key = $1 ORDER BY st.position",
        )
        .bind(key)
        .fetch_all(&mut db)
        .await?)
    }

    /// Buckets on the S3 server (s3s-fs keeps one folder each).
    pub fn buckets(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.s3.data_dir())?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

/// What the gateway answered: the status and the body (JSON; a body that
/// is not JSON as a string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Answer {
    /// The saga the answer names (`saga_id`), for a 202 or a 409.
    pub fn saga_id(&self) -> Option<String> {
        let saga = &self.body["saga_id"];
        saga.as_str().or_else(|| self.body["operation"]["saga_id"].as_str()).map(str::to_owned)
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// A lifecycle operation as the API asks for it (docs/lifecycle.md).
#[derive(Debug, Clone)]
pub enum Operation {
    Suspend {
        reason: String,
    },
    Resume,
    /// `PATCH /v1/tenants/{key}` with this body.
    Update(serde_json::Value),
    /// `DELETE /v1/tenants/{key}`: offboarding with `grace` seconds
    /// (`None`: the default) and an export unless `export` is false.
    Offboard {
        reason: String,
        grace: Option<u64>,
        export: bool,
    },
    Restore,
    Export,
}

impl Operation {
    pub fn suspend() -> Self {
        Self::Suspend { reason: "non-payment".into() }
    }

    /// Offboarding with `grace` seconds and an export.
    pub fn offboard(grace: u64) -> Self {
        Self::Offboard { reason: "customer left".into(), grace: Some(grace), export: true }
    }

    /// Method, path and body of the request for tenant `key`.
    pub fn request(&self, key: &str) -> (&'static str, String, Option<serde_json::Value>) {
        use serde_json::json;
        let tenant = format!("/v1/tenants/{key}");
        match self {
            Self::Suspend { reason } => ("POST", format!("{tenant}/suspend"), Some(json!({ "reason": reason }))),
            Self::Resume => ("POST", format!("{tenant}/resume"), Some(json!({}))),
            Self::Update(patch) => ("PATCH", tenant, Some(patch.clone())),
            Self::Offboard { reason, grace, export } => {
                let mut body = json!({ "reason": reason, "export": export });
                if let Some(grace) = grace {
                    body["grace"] = json!(grace);
                }
                ("DELETE", tenant, Some(body))
            }
            Self::Restore => ("POST", format!("{tenant}/restore"), Some(json!({}))),
            Self::Export => ("POST", format!("{tenant}/export"), Some(json!({}))),
        }
    }

    /// The tenant's status once the operation succeeded (`None`: unchanged).
    pub fn leads_to(&self) -> Option<&'static str> {
        match self {
            Self::Suspend { .. } => Some("SUSPENDED"),
            Self::Resume | Self::Restore => Some("ACTIVE"),
            Self::Offboard { .. } => Some("DELETION_SCHEDULED"),
            Self::Update(_) | Self::Export => None,
        }
    }
}

/// How a lifecycle saga ended, and the tenant after it.
#[derive(Debug, Clone)]
pub struct OperationEnd {
    pub saga_id: String,
    /// The saga's state: `succeeded`, `failed` or `cancelled`.
    pub state: String,
    pub failure_reason: Option<String>,
    pub tenant: TenantRow,
}

/// A tenant's row as the lifecycle tests read it.
#[derive(Debug, Clone)]
pub struct TenantRow {
    pub id: String,
    pub key: String,
    pub status: String,
    pub tier: String,
    pub domains: Vec<String>,
    pub display_name: String,
    pub failure_reason: Option<String>,
    /// Seconds from now to the purge (negative: due).
    pub purge_in: Option<f64>,
    pub export_location: Option<String>,
    pub export_waived: bool,
    pub deleted_by: Option<String>,
    pub deletion_reason: Option<String>,
}

/// How the tenant's own role logs in to its database, from the welcome
/// mail's "Your database" section (the only place the password is written
/// out).
#[derive(Debug, Clone)]
pub struct TenantLogin {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub schema: String,
    pub role: String,
    pub password: String,
}

impl TenantLogin {
    /// A new connection as the tenant's role.
    pub async fn connect(&self) -> std::result::Result<PgConnection, sqlx::Error> {
        let options = sqlx::postgres::PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.role)
            .password(&self.password);
        PgConnection::connect_with(&options).await
    }
}

/// The lifecycle (docs/lifecycle.md): operations through the gateway, and
/// what the tests look at in the backends.
impl Stack {
    /// [`Self::start`] and the gateway: what the lifecycle tests need.
    pub async fn start_with_gateway() -> Result<Self> {
        let mut stack = Self::start().await?;
        stack.start_service(GATEWAY).await?;
        Ok(stack)
    }

    /// A bearer token for the gateway, for `subject` with `scopes`.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> String {
        landlord_testkit::jwt::hs256(&self.jwt_secret, subject, scopes, Duration::from_secs(3600))
    }

    fn http(&self) -> Result<reqwest::Client> {
        static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        if let Some(client) = CLIENT.get() {
            return Ok(client.clone());
        }
        let client =
            landlord_runtime::http::client_builder(&Default::default()).timeout(Duration::from_secs(30)).build()?;
        Ok(CLIENT.get_or_init(|| client).clone())
    }

    /// One request to the gateway as `ops` with every scope; `idempotency`
    /// is sent as `Idempotency-Key`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        idempotency: Option<&str>,
    ) -> Result<Answer> {
        self.call_as(&self.token("ops", &SCOPES), method, path, body, idempotency).await
    }

    /// [`Self::call`] with another token.
    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        idempotency: Option<&str>,
    ) -> Result<Answer> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http()?.request(method, format!("{}{path}", self.api_url())).bearer_auth(token);
        if let Some(key) = idempotency {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok(Answer { status, body })
    }

    /// `POST /v1/tenants`: a tenant `key` of `plan`, as the CLI's request
    /// makes it, under the Idempotency-Key `idempotency`.
    pub async fn create(&self, key: &str, plan: &str, idempotency: &str) -> Result<Answer> {
        let body = serde_json::json!({
            "key": key, "display_name": format!("{key} Inc."), "plan": plan,
            "admin": { "email": format!("admin@{key}.test"), "first_name": "Ada", "last_name": "Lovelace" },
            "domains": [format!("{key}.example.com")],
        });
        self.call("POST", "/v1/tenants", Some(body), Some(idempotency)).await
    }

    /// Asks for `operation` on tenant `key` with a new idempotency key.
    pub async fn ask(&self, key: &str, operation: &Operation) -> Result<Answer> {
        let idempotency = uuid_like();
        self.ask_with(key, operation, &idempotency).await
    }

    /// Asks for `operation` on tenant `key` under `idempotency`.
    pub async fn ask_with(&self, key: &str, operation: &Operation, idempotency: &str) -> Result<Answer> {
        let (method, path, body) = operation.request(key);
        self.call(method, &path, body, Some(idempotency)).await
    }

    /// Asks for `operation` (202 expected) and waits for its saga's end.
    pub async fn operate(&self, key: &str, operation: &Operation) -> Result<OperationEnd> {
        let answer = self.ask(key, operation).await?;
        anyhow::ensure!(answer.status == 202, "{key}: {operation:?} answered {answer}");
        let saga = answer.saga_id().with_context(|| format!("{key}: no saga id in {answer}"))?;
        self.wait_saga(&saga, Duration::from_secs(60)).await
    }

    /// Suspends tenant `key` ("non-payment") and waits for the saga's end.
    pub async fn suspend(&self, key: &str) -> Result<OperationEnd> {
        self.operate(key, &Operation::suspend()).await
    }

    /// Resumes tenant `key` and waits for the saga's end.
    pub async fn resume(&self, key: &str) -> Result<OperationEnd> {
        self.operate(key, &Operation::Resume).await
    }

    /// Waits until saga `saga_id` has ended (succeeded, failed, cancelled).
    pub async fn wait_saga(&self, saga_id: &str, timeout: Duration) -> Result<OperationEnd> {
        let ended = eventually(&format!("saga {saga_id} to end"), timeout, || async {
            let mut db = self.control().await.ok()?;
            let row: Option<(String, Option<String>, String)> = sqlx::query_as(
                "SELECT s.state, s.failure_reason, t.key FROM sagas s JOIN tenants t ON t.id = s.tenant_id
                 WHERE s.id = $1::uuid AND s.state IN ('succeeded', 'failed', 'cancelled')",
            )
            .bind(saga_id)
            .fetch_optional(&mut db)
            .await
            .ok()?;
            row
        })
        .await;
        let (state, failure_reason, key) = ended.with_context(|| self.logs())?;
        let tenant = self.tenant_row(&key).await?;
        Ok(OperationEnd { saga_id: saga_id.to_owned(), state, failure_reason, tenant })
    }

    /// Waits until tenant `key` is in `status`.
    pub async fn wait_status(&self, key: &str, status: &str, timeout: Duration) -> Result<TenantRow> {
        let seen = eventually(&format!("{key} to be {status}"), timeout, || async {
            self.tenant_row(key).await.ok().filter(|row| row.status == status)
        })
        .await;
        match seen {
            Ok(row) => Ok(row),
            Err(error) => {
                let now = self.tenant_row(key).await.map(|r| format!("{r:?}")).unwrap_or_default();
                Err(error.context(format!("{key} is {now}")))
            }
        }
    }

    /// Tenant `key`'s row: the live tenant, else its latest tombstone.
    pub async fn tenant_row(&self, key: &str) -> Result<TenantRow> {
        type Row = (
            String,
            String,
            String,
            String,
            Vec<String>,
            String,
            Option<String>,
            Option<f64>,
            Option<String>,
            bool,
            Option<String>,
            Option<String>,
        );
        let mut db = self.control().await?;
        let row: Row = sqlx::query_as(
            "SELECT id::text, key, status, tier, domains, display_name, failure_reason,
                    extract(epoch FROM purge_at - now())::float8, export_location, export_waived,
                    deleted_by, deletion_reason
             FROM tenants WHERE key = $1 ORDER BY status = 'DELETED', created_at DESC LIMIT 1",
        )
        .bind(key)
        .fetch_one(&mut db)
        .await
        .with_context(|| format!("no tenant {key}"))?;
        let (id, key, status, tier, domains, display_name, failure_reason, purge_in, export_location) =
            (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8);
        Ok(TenantRow {
            id,
            key,
            status,
            tier,
            domains,
            display_name,
            failure_reason,
            purge_in,
            export_location,
            export_waived: row.9,
            deleted_by: row.10,
            deletion_reason: row.11,
        })
    }

    /// Every tenant ever made under `key`, oldest first: `(id, status)`.
    pub async fn tenants_of_key(&self, key: &str) -> Result<Vec<(String, String)>> {
        let mut db = self.control().await?;
        Ok(sqlx::query_as("SELECT id::text, status FROM tenants WHERE key = $1 ORDER BY created_at")
            .bind(key)
            .fetch_all(&mut db)
            .await?)
    }

    /// The sagas of tenant `key` (every tenant of the key), oldest first:
    /// `(id, operation, state)`.
    pub async fn sagas(&self, key: &str) -> Result<Vec<(String, String, String)>> {
        let mut db = self.control().await?;
        Ok(sqlx::query_as(
            "SELECT s.id::text, s.operation, s.state FROM sagas s JOIN tenants t ON t.id = s.tenant_id
             WHERE t.key = $1 ORDER BY s.created_at",
        )
        .bind(key)
        .fetch_all(&mut db)
        .await?)
    }

    /// A file of the archive (`s3://<bucket>/<prefix>` and a path under it),
    /// read where s3s-fs keeps it.
    pub fn archive_file(&self, location: &str, path: &str) -> Result<Vec<u8>> {
        let rest = location.strip_prefix("s3://").with_context(|| format!("not an s3:// location: {location}"))?;
        let file = self.s3.data_dir().join(rest.trim_end_matches('/')).join(path);
        std::fs::read(&file).with_context(|| format!("reading {}", file.display()))
    }

    /// The export's `manifest.json` at `location`.
    pub fn archive_manifest(&self, location: &str) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.archive_file(location, "manifest.json")?)?)
    }

    /// Every file of the export at `location`, relative to it.
    pub fn archive_files(&self, location: &str) -> Result<Vec<String>> {
        let rest = location.strip_prefix("s3://").with_context(|| format!("not an s3:// location: {location}"))?;
        let root = self.s3.data_dir().join(rest.trim_end_matches('/'));
        let mut files = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(relative) = path.strip_prefix(&root) {
                    files.push(relative.display().to_string());
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// How tenant `key`'s own role logs in (bridge, silo), from its welcome
    /// mail.
    pub fn tenant_login(&self, key: &str) -> Result<TenantLogin> {
        let admin = format!("admin@{key}.test");
        let mail = self
            .smtp
            .mails_to(&admin)
            .into_iter()
            .find(|m| m.header("Subject").is_some_and(|s| s.starts_with("Welcome to")))
            .with_context(|| format!("no welcome mail to {admin}"))?;
        let text = mail.decoded();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                .with_context(|| format!("no {name:?} in the welcome mail:\n{text}"))
        };
        Ok(TenantLogin {
            host: field("Host:")?,
            port: field("Port:")?.parse()?,
            database: field("Database:")?,
            schema: field("Schema:")?,
            role: field("Role:")?,
            password: field("Password:")?,
        })
    }

    /// Objects of tenant `key` (any of its ids) still in a backend: the
    /// realm or organization, the role, schema, database or pooled row, the
    /// bucket or prefix. Empty when everything is gone.
    pub async fn backend_objects(&self, key: &str) -> Result<Vec<String>> {
        let names = landlord_contract::TenantKey::parse(key)?.backend_names();
        let mut left = Vec::new();
        if self.keycloak.realm(&names.realm).is_some() {
            left.push(format!("realm {}", names.realm));
        }
        if self.keycloak.organizations(SHARED_REALM).iter().any(|o| o["name"] == key) {
            left.push(format!("organization {key}"));
        }
        let servers = self.tenant_data_servers();
        for (server, url) in &servers {
            for object in self.tenant_data_objects(url, key).await? {
                left.push(if servers.len() > 1 { format!("{object} on {server}") } else { object });
            }
        }
        if self.buckets()?.contains(&names.bucket) {
            left.push(format!("bucket {}", names.bucket));
        }
        // s3s-fs keeps a prefix as folders, which may stay when their last
        // object is gone: a prefix is there while an object is.
        let prefix = self.s3.data_dir().join("landlord-pooled").join("tenants").join(key);
        let objects = files_under(&prefix);
        if !objects.is_empty() {
            left.push(format!("prefix landlord-pooled/tenants/{key}/ ({objects:?})"));
        }
        Ok(left)
    }
}

/// Every file under `dir`, recursively (none if it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A fresh idempotency key.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("e2e-{nanos:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}
