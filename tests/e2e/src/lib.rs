//! The whole system as processes: [`Stack`] starts real servers (NATS with
//! JetStream, PostgreSQL, s3s-fs, aiosmtpd), the Keycloak Admin API
//! **contract double** (Keycloak cannot be installed here), and the service
//! binaries built from this workspace, each on its own ports and subject
//! namespace, so that tests can run side by side. Tenants are asked for
//! with the `landlord` CLI, as a person would, or through the gateway
//! ([`GATEWAY`], started on demand) as Clerk's webhooks ask for them.

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

/// The services, in the order they start.
pub const SERVICES: [&str; 5] = ["orchestrator", "idp", "database", "storage", "notification"];

/// The gateway (HTTP API and Clerk bridge). Not among [`SERVICES`]: only
/// the tests that speak HTTP start it ([`Stack::start_service`]), which
/// spares the others a process on two cores.
pub const GATEWAY: &str = "gateway";

/// The shared realm of pooled tenants, as an operator sets it up.
pub const SHARED_REALM: &str = "landlord";

/// The plans the tests run: the shipped pipeline with short timeouts and
/// backoff, so that retries and compensation take seconds, not minutes.
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

[[pipelines.default]]
name = "idp_admin_user"
command = "idp.create_admin_user"
compensation = "idp.delete_admin_user"

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
"#;

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
    dir: PathBuf,
    plans: PathBuf,
    services: BTreeMap<&'static str, Running>,
    /// Settings that replace the tests' defaults (set before the services start).
    pub overrides: Vec<(String, String)>,
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
        let nats = NatsServer::start().await?;
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
            namespace: unique_namespace(),
            tenant_data_url: tenant_data.url.clone(),
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
            services: BTreeMap::new(),
            overrides: Vec::new(),
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

    /// What the services are given, for running their code in process.
    pub fn service_env(&self) -> Vec<(String, String)> {
        self.env(0)
    }

    /// What every service is given; each reads what it needs.
    fn env(&self, port: u16) -> Vec<(String, String)> {
        self.env_with(port, Vec::new())
    }

    /// [`Self::env`] and `extra`; [`Self::overrides`] still win.
    fn env_with(&self, port: u16, extra: Vec<(&str, String)>) -> Vec<(String, String)> {
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
        ];
        let mut env: Vec<(String, String)> = pairs.into_iter().chain(extra).map(|(k, v)| (k.to_owned(), v)).collect();
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
        ]
    }

    /// The gateway's API, e.g. `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Starts (or starts again) one service and waits until it is ready;
    /// the gateway also until its API answers (its health endpoint is up
    /// before the API listens).
    pub async fn start_service(&mut self, name: &'static str) -> Result<()> {
        let port = match self.services.remove(name) {
            Some(mut old) => {
                old.process.kill();
                old.port
            }
            None => free_port(),
        };
        let binary = workspace_binary(&format!("landlord-{name}"))?;
        let (env, api) = if name == GATEWAY {
            (self.env_with(port, self.gateway_env()), Some(self.api_port))
        } else {
            (self.env(port), None)
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
                self.services.insert(name, running);
                Ok(())
            }
            Ok(false) => anyhow::bail!("{name} exited at start:\n{}", running.process.output()),
            Err(error) => Err(error.context(running.process.output())),
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill_service(&mut self, name: &str) {
        if let Some(running) = self.services.get_mut(name) {
            running.process.kill();
        }
    }

    /// SIGSTOP a service (the nemesis run): its connections stay open, its
    /// messages wait — past their deadlines if the pause is long enough.
    pub fn pause_service(&self, name: &str) {
        if let Some(running) = self.services.get(name) {
            running.process.pause();
        }
    }

    /// SIGCONT after [`Self::pause_service`].
    pub fn resume_service(&self, name: &str) {
        if let Some(running) = self.services.get(name) {
            running.process.resume();
        }
    }

    /// A service's log so far.
    pub fn log(&self, name: &str) -> String {
        self.services.get(name).map(|r| r.process.output()).unwrap_or_default()
    }

    /// Every service's log, for a failing assertion's message.
    pub fn logs(&self) -> String {
        self.services.iter().map(|(name, r)| format!("--- {name}\n{}\n", r.process.output())).collect()
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
        let env = self.env(0);
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
        command.arg("audit").envs(self.env(0));
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

    /// The tenant's id and status in the control plane.
    pub async fn tenant(&self, key: &str) -> Result<(String, String)> {
        let mut db = self.control().await?;
        sqlx::query_as("SELECT id::text, status FROM tenants WHERE key = $1")
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
