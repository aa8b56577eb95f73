//! What every test of the binary shares: the plans, the scripted worker,
//! the harness (NATS, PostgreSQL, orchestrator, gateway), answers, bodies.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use futures_util::TryStreamExt as _;
use landlord_contract::{Namespace, StreamKind, pb};
use landlord_control_plane::Plans;
use landlord_gateway::auth::{READ, WRITE};
use landlord_gateway::clerk::BackendSettings;
use landlord_gateway::clerk::SigningSecret;
use landlord_gateway::jwks::JwksSettings;
use landlord_gateway::{GatewayConfig, Tokens, limits::Limits};
use landlord_orchestrator::Timing;
use landlord_runtime::http::ExtraRoots;
use landlord_runtime::{Config, DeliveryInfo, Env, Service, StepFailure, StepService, StepWorker};
use landlord_testkit::{NatsServer, Postgres, eventually, unique_namespace};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const JWT_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
pub(crate) const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub(crate) const OLD_WEBHOOK_SECRET: &str = "whsec_b2xkIGtleSBvbGQga2V5IG9sZCBrZXk=";
pub(crate) const CLERK_SECRET_KEY: &str = "sk_test_contract_double_secret";

/// Two plans of two steps each, and a pipeline for every later
/// operation, all served by the scripted worker (whose steps a test may
/// hold for up to their 60 s timeout).
pub(crate) const PLANS: &str = r#"
[defaults]
timeout = "2s"
max_attempts = 2
backoff = ["100ms"]

[operations]
restore = "resume"

[[pipelines.suspend]]
name = "block"
command = "work.suspend"
timeout = "60s"
compensation = "work.resume"

[[pipelines.resume]]
name = "unblock"
command = "work.resume"
timeout = "60s"
compensation = "work.suspend"

[[pipelines.update]]
name = "change"
command = "work.update"
timeout = "60s"
compensation = "work.update"

[[pipelines.offboard]]
name = "block"
command = "work.suspend"
timeout = "60s"
compensation = "work.resume"
[[pipelines.offboard]]
name = "archive"
command = "work.export"
timeout = "60s"

[[pipelines.export]]
name = "archive"
command = "work.export"
timeout = "60s"

[[pipelines.purge]]
name = "remove"
command = "work.purge"
max_attempts = 0

[plans.standard]
tier = "bridge"
pipeline = "two"

[plans.stuck]
tier = "silo"
pipeline = "stuck"

[[pipelines.two]]
name = "s1"
command = "work.create_s1"
compensation = "work.delete_s1"
[[pipelines.two]]
name = "s2"
command = "work.create_s2"
compensation = "work.delete_s2"

[[pipelines.stuck]]
name = "s1"
command = "work.create_s1"
compensation = "work.delete_s1"
[[pipelines.stuck]]
name = "s2"
command = "work.create_s2"
compensation = "work.delete_s2"
timeout = "60s"
"#;

/// Succeeds, reporting one resource per step, unless the tenant's label
/// `script.<step>` says otherwise: `fail-once` fails that step permanently
/// in the tenant's first saga only; `hold` answers only once the test
/// releases held steps.
pub(crate) struct Scripted {
    pub(crate) failed: Mutex<HashSet<String>>,
    pub(crate) release: tokio::sync::watch::Receiver<bool>,
}

impl StepService for Scripted {
    type Action = String;

    async fn execute(
        &self,
        action: String,
        _: &pb::TenantSpec,
        command: &pb::StepCommand,
        _delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let tenant = command.tenant.clone().unwrap_or_default();
        let script = tenant.labels.get(&format!("script.{}", command.step)).cloned().unwrap_or_default();
        if !command.compensate && script == "hold" {
            let mut release = self.release.clone();
            let _ = release.wait_for(|released| *released).await;
        }
        if !command.compensate && script == "fail-once" {
            let first = self.failed.lock().map(|mut f| f.insert(tenant.key.clone())).unwrap_or(false);
            if first {
                return Err(StepFailure::permanent("scripted", format!("{action} fails once")));
            }
        }
        // An export says where it went, verified (as storage.export does).
        let outputs = if action == "export" && !command.compensate {
            [
                ("export.location".to_owned(), format!("s3://archive/{}/", tenant.key)),
                ("export.verified".to_owned(), "true".to_owned()),
            ]
            .into()
        } else {
            HashMap::new()
        };
        Ok(pb::StepOk {
            outputs,
            resources: if command.compensate {
                Vec::new()
            } else {
                vec![pb::Resource {
                    kind: format!("test.{}", command.step),
                    external_id: format!("{}-{}", tenant.key, command.step),
                    metadata: HashMap::new(),
                }]
            },
        })
    }
}

pub(crate) struct Harness {
    pub(crate) api: String,
    pub(crate) health: SocketAddr,
    pub(crate) http: reqwest::Client,
    pub(crate) tokens: Tokens,
    pub(crate) clerk: SigningSecret,
    pub(crate) namespace: Namespace,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// A plain client of the same server, to watch subjects.
    pub(crate) nats: async_nats::Client,
    pub(crate) pool: PgPool,
    pub(crate) release: tokio::sync::watch::Sender<bool>,
    pub(crate) stops: Vec<CancellationToken>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.cancel();
        }
    }
}

pub(crate) fn env(url: &str, namespace: &Namespace, database: &str) -> Env {
    Env::from_pairs([
        ("LANDLORD_NATS_URL", url.to_owned()),
        ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
        ("LANDLORD_DATABASE_URL", database.to_owned()),
        ("LANDLORD_BACKOFF", "50ms".to_owned()),
    ])
}

pub(crate) fn limits() -> Limits {
    Limits { body_bytes: 16 * 1024, timeout: Duration::from_secs(10), rate_per_second: 10_000.0, burst: 10_000.0 }
}

/// What a test's gateway is configured with, besides the defaults.
pub(crate) struct Setup {
    pub(crate) limits: Limits,
    /// The HS256 secret is configured (the tests' tokens are minted with it
    /// either way).
    pub(crate) hs256: bool,
    pub(crate) jwks: Option<JwksSettings>,
    /// Base URL of the Clerk Backend API (a contract double).
    pub(crate) clerk_api: Option<String>,
    /// Trusted besides the system's roots for the Clerk Backend API.
    pub(crate) roots: ExtraRoots,
    /// The claim of RS256 tokens naming their tenant.
    pub(crate) tenant_claim: String,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            limits: limits(),
            hs256: true,
            jwks: None,
            clerk_api: None,
            roots: ExtraRoots::default(),
            tenant_claim: landlord_gateway::scope::TENANT_CLAIM.into(),
        }
    }
}

impl Harness {
    pub(crate) async fn new() -> Result<Self> {
        Self::build(Setup::default()).await
    }

    pub(crate) async fn with_limits(limits: Limits) -> Result<Self> {
        Self::build(Setup { limits, ..Setup::default() }).await
    }

    pub(crate) async fn build(setup: Setup) -> Result<Self> {
        let Setup { limits, hs256, jwks, clerk_api, roots, tenant_claim } = setup;
        let url = NatsServer::shared().await.url();
        let namespace = unique_namespace();
        let database = tokio::task::spawn_blocking(Postgres::shared).await??.fresh_database().await?;
        let plans = Plans::parse(PLANS).map_err(anyhow::Error::msg)?;
        let mut stops = Vec::new();

        let config = GatewayConfig {
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            jwt_secret: hs256.then(|| JWT_SECRET.as_bytes().to_vec()),
            jwks,
            jwt_audience: "landlord".into(),
            jwt_issuer: "landlord".into(),
            jwt_tenant_claim: tenant_claim,
            plans: plans.clone(),
            clerk: Some(landlord_gateway::clerk::Settings {
                secret: SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?,
                plan: "standard".into(),
                plan_key: "plan".into(),
                delivery_retention: landlord_gateway::clerk::DELIVERY_RETENTION,
                members: landlord_gateway::clerk::MemberSettings {
                    sweep: Duration::from_millis(100),
                    ..Default::default()
                },
                admin_wait: Duration::from_secs(3600),
                backend: clerk_api.map(|url| BackendSettings {
                    url,
                    secret_key: CLERK_SECRET_KEY.into(),
                    attempts: 4,
                    backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(200),
                    timeout: Duration::from_secs(5),
                    roots,
                }),
            }),
            limits,
            relay_poll: Duration::from_millis(100),
            relay_grace: Duration::from_millis(500),
            deletion_grace: landlord_gateway::tenants::Grace::default(),
            // Webhooks retried fast: a test sees its retry in well under a second.
            outbound: landlord_gateway::outbound::Settings {
                backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                timeout: Duration::from_secs(2),
                poll: Duration::from_millis(100),
                ..landlord_gateway::outbound::Settings::default()
            },
        };
        let tokens = Tokens::new(JWT_SECRET.as_bytes(), "landlord", "landlord");
        let mut gateway = Service::build(Config::from("gateway", &env(&url, &namespace, &database.url))?).await?;
        let api = landlord_gateway::attach(&mut gateway, config).await?;
        let health = gateway.http_addr();
        let pool = gateway.database.clone().context("pool")?;
        let jetstream = gateway.broker.jetstream.clone();
        stops.push(gateway.shutdown_token());
        tokio::spawn(gateway.run());

        let mut orchestrator =
            Service::build(Config::from("orchestrator", &env(&url, &namespace, &database.url))?).await?;
        let timing = Timing {
            timer_interval: Duration::from_millis(50),
            relay_poll: Duration::from_millis(100),
            relay_grace: Duration::from_millis(500),
            inbox_retention: Duration::from_secs(3600),
        };
        // The purge timer looks often: a test's grace period is seconds.
        let lifecycle = landlord_orchestrator::Lifecycle { purge_interval: Duration::from_millis(200) };
        landlord_orchestrator::attach_with(&mut orchestrator, plans, timing, lifecycle).await?;
        stops.push(orchestrator.shutdown_token());
        tokio::spawn(orchestrator.run());

        let worker_env = Env::from_pairs([
            ("LANDLORD_NATS_URL", url.clone()),
            ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
            ("LANDLORD_MAX_DELIVER", "1".to_owned()),
        ]);
        let mut worker = Service::build(Config::from("work", &worker_env)?).await?;
        let (release, released) = tokio::sync::watch::channel(false);
        let scripted = Scripted { failed: Mutex::default(), release: released };
        let handler = StepWorker::new(scripted, worker.publisher.clone());
        worker.consume(StreamKind::Commands, "work", vec![namespace.service_commands("work")], handler).await?;
        stops.push(worker.shutdown_token());
        tokio::spawn(worker.run());

        Ok(Self {
            api: format!("http://{}", api.api_addr),
            health,
            http: landlord_runtime::http::client()?,
            tokens,
            clerk: SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?,
            nats: async_nats::connect(&url).await?,
            namespace,
            jetstream,
            pool,
            release,
            stops,
        })
    }

    pub(crate) fn token(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.tokens.mint("tester", &scopes, Duration::from_secs(600))
    }

    pub(crate) fn admin(&self) -> String {
        self.token(&[READ, WRITE])
    }

    pub(crate) async fn answer(&self, path: &str, token: &str) -> Result<Answer> {
        Answer::of(self.http.get(format!("{}{path}", self.api)).bearer_auth(token).send().await?).await
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> Result<(StatusCode, Value)> {
        let response = self.http.get(format!("{}{path}", self.api)).bearer_auth(token).send().await?;
        Ok((response.status(), response.json().await.unwrap_or(Value::Null)))
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        idempotency: Option<&str>,
        body: &Value,
    ) -> Result<Answer> {
        let mut request = self.http.post(format!("{}{path}", self.api)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency {
            request = request.header("Idempotency-Key", key);
        }
        Answer::of(request.send().await?).await
    }

    pub(crate) async fn create(&self, key: &str, plan: &str, labels: Value) -> Result<Value> {
        let answer = self
            .post("/v1/tenants", Some(&self.admin()), Some(&format!("idem-{key}")), &tenant(key, plan, labels))
            .await?;
        anyhow::ensure!(answer.status == StatusCode::ACCEPTED, "create {key}: {answer:?}");
        Ok(answer.body)
    }

    /// Waits until the tenant reads back in `status`.
    pub(crate) async fn until_status(&self, key: &str, status: &str) -> Result<Value> {
        let token = self.admin();
        let last = Arc::new(Mutex::new(Value::Null));
        let found = eventually(&format!("{key} to be {status}"), WAIT, || {
            let token = token.clone();
            let last = last.clone();
            async move {
                let (code, body) = self.get(&format!("/v1/tenants/{key}"), &token).await.ok()?;
                if let Ok(mut last) = last.lock() {
                    *last = body.clone();
                }
                (code == StatusCode::OK && body["status"] == status).then_some(body)
            }
        })
        .await;
        found.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.to_string())))
    }

    /// How many messages the events stream holds on `subject`.
    pub(crate) async fn count(&self, subject: &str) -> Result<u64> {
        let stream = self.jetstream.get_stream(self.namespace.stream_name(StreamKind::Events)).await?;
        let mut info = stream.info_with_subjects(subject).await?;
        let mut total = 0;
        while let Some((_, count)) = info.try_next().await? {
            total += count as u64;
        }
        Ok(total)
    }

    /// Waits until the events stream holds exactly `expected` messages on
    /// `subject` (and says how many it held last).
    pub(crate) async fn until_count(&self, subject: &str, expected: u64) -> Result<()> {
        let last = Arc::new(Mutex::new(0));
        let reached = eventually(&format!("{expected} messages on {subject}"), WAIT, || {
            let last = last.clone();
            async move {
                let count = self.count(subject).await.ok()?;
                if let Ok(mut last) = last.lock() {
                    *last = count;
                }
                (count == expected).then_some(())
            }
        })
        .await;
        reached.with_context(|| format!("last count: {:?}", last.lock().map(|l| *l)))
    }

    pub(crate) fn requested_subject(&self, key: &str) -> String {
        format!("{}.v1.events.{key}.requested", self.namespace.root())
    }

    pub(crate) async fn deliver(&self, svix_id: &str, timestamp: i64, signature: &str, body: &str) -> Result<Answer> {
        let response = self
            .http
            .post(format!("{}/v1/webhooks/clerk", self.api))
            .header("svix-id", svix_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await?;
        Answer::of(response).await
    }

    /// A correctly signed delivery, now.
    pub(crate) async fn webhook(&self, svix_id: &str, event: &Value) -> Result<Answer> {
        let body = event.to_string();
        let now = unix_now();
        self.deliver(svix_id, now, &self.clerk.sign(svix_id, now, body.as_bytes()), &body).await
    }
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) async fn of(response: reqwest::Response) -> Result<Self> {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok(Self { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// Asserts a problem+json answer of `status` and `kind`.
    pub(crate) fn problem(&self, status: StatusCode, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.body["type"], format!("urn:landlord:problem:{kind}"), "{self:?}");
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{self:?}");
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn tenant(key: &str, plan: &str, labels: Value) -> Value {
    json!({
        "key": key,
        "display_name": format!("Tenant {key}"),
        "plan": plan,
        "admin": {"email": format!("admin@{key}.test"), "first_name": "Ada", "last_name": "L"},
        "domains": [format!("{key}.test")],
        "labels": labels,
    })
}

/// Clerk deliveries: an organization made by `user_1` (or `created_by`), and
/// its `org:admin` membership.
pub(crate) fn organization(id: &str, slug: &str) -> Value {
    organization_by(id, slug, "user_1")
}

pub(crate) fn organization_by(id: &str, slug: &str, created_by: &str) -> Value {
    json!({"type": "organization.created", "object": "event", "timestamp": 1_654_012_591_835_i64,
           "data": {"id": id, "slug": slug, "name": format!("Org {slug}"), "created_by": created_by,
                    "object": "organization"}})
}

pub(crate) fn membership(org: &str, email: &str) -> Value {
    json!({"type": "organizationMembership.created", "object": "event",
           "data": {"object": "organization_membership", "role": "org:admin",
                    "organization": {"id": org},
                    "public_user_data": {"user_id": "user_1", "identifier": email, "first_name": "Grace", "last_name": "H"}}})
}

/// Percent-encodes a query parameter's value.
pub(crate) fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
