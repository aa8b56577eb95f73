//! The gateway against a real nats-server and PostgreSQL, with the real
//! orchestrator (in-process, as its own tests run it) and a scripted worker
//! (a test double for the real workers) serving the plans' steps. Each test
//! has its own namespace and database.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use futures_util::TryStreamExt as _;
use landlord_contract::{Namespace, StreamKind, pb};
use landlord_gateway::auth::{Audience, Claims, READ, WRITE};
use landlord_gateway::clerk::BackendSettings;
use landlord_gateway::clerk::SigningSecret;
use landlord_gateway::jwks::JwksSettings;
use landlord_gateway::{GatewayConfig, Tokens, limits::Limits};
use landlord_orchestrator::{Plans, Timing};
use landlord_runtime::http::ExtraRoots;
use landlord_runtime::{Config, DeliveryInfo, Env, Service, StepFailure, StepService, StepWorker};
use landlord_testkit::tls::{self, TlsFront};
use landlord_testkit::{NatsServer, Postgres, eventually, unique_namespace};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

// The crate root is tests/gateway.rs, so its modules are found beside it
// unless told; they live in tests/gateway/ (one test binary).
#[path = "gateway/hardening.rs"]
mod hardening;
#[path = "gateway/properties.rs"]
mod properties;

const WAIT: Duration = Duration::from_secs(30);
const JWT_SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_WEBHOOK_SECRET: &str = "whsec_b2xkIGtleSBvbGQga2V5IG9sZCBrZXk=";
const CLERK_SECRET_KEY: &str = "sk_test_contract_double_secret";

/// Two plans of two steps each, both served by the scripted worker.
const PLANS: &str = r#"
[defaults]
timeout = "2s"
max_attempts = 2
backoff = ["100ms"]

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
struct Scripted {
    failed: Mutex<HashSet<String>>,
    release: tokio::sync::watch::Receiver<bool>,
}

impl StepService for Scripted {
    async fn run(
        &self,
        action: &str,
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
        Ok(pb::StepOk {
            resources: if command.compensate {
                Vec::new()
            } else {
                vec![pb::Resource {
                    kind: format!("test.{}", command.step),
                    external_id: format!("{}-{}", tenant.key, command.step),
                    metadata: HashMap::new(),
                }]
            },
            ..Default::default()
        })
    }
}

struct Harness {
    api: String,
    health: SocketAddr,
    http: reqwest::Client,
    tokens: Tokens,
    clerk: SigningSecret,
    namespace: Namespace,
    jetstream: async_nats::jetstream::Context,
    pool: PgPool,
    release: tokio::sync::watch::Sender<bool>,
    stops: Vec<CancellationToken>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for stop in &self.stops {
            stop.cancel();
        }
    }
}

fn env(url: &str, namespace: &Namespace, database: &str) -> Env {
    Env::from_pairs([
        ("LANDLORD_NATS_URL", url.to_owned()),
        ("LANDLORD_NAMESPACE", namespace.root().to_owned()),
        ("LANDLORD_DATABASE_URL", database.to_owned()),
        ("LANDLORD_BACKOFF", "50ms".to_owned()),
    ])
}

fn limits() -> Limits {
    Limits { body_bytes: 16 * 1024, timeout: Duration::from_secs(10), rate_per_second: 10_000.0, burst: 10_000.0 }
}

/// What a test's gateway is configured with, besides the defaults.
struct Setup {
    limits: Limits,
    /// The HS256 secret is configured (the tests' tokens are minted with it
    /// either way).
    hs256: bool,
    jwks: Option<JwksSettings>,
    /// Base URL of the Clerk Backend API (a contract double).
    clerk_api: Option<String>,
    /// Trusted besides the system's roots for the Clerk Backend API.
    roots: ExtraRoots,
}

impl Default for Setup {
    fn default() -> Self {
        Self { limits: limits(), hs256: true, jwks: None, clerk_api: None, roots: ExtraRoots::default() }
    }
}

impl Harness {
    async fn new() -> Result<Self> {
        Self::build(Setup::default()).await
    }

    async fn with_limits(limits: Limits) -> Result<Self> {
        Self::build(Setup { limits, ..Setup::default() }).await
    }

    async fn build(setup: Setup) -> Result<Self> {
        let Setup { limits, hs256, jwks, clerk_api, roots } = setup;
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
            plans: plans.clone(),
            clerk: Some(landlord_gateway::clerk::Settings {
                secret: SigningSecret::parse(WEBHOOK_SECRET).map_err(anyhow::Error::msg)?,
                plan: "standard".into(),
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
        landlord_orchestrator::attach(&mut orchestrator, plans, timing).await?;
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
            namespace,
            jetstream,
            pool,
            release,
            stops,
        })
    }

    fn token(&self, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.tokens.mint("tester", &scopes, Duration::from_secs(600))
    }

    fn admin(&self) -> String {
        self.token(&[READ, WRITE])
    }

    async fn answer(&self, path: &str, token: &str) -> Result<Answer> {
        Answer::of(self.http.get(format!("{}{path}", self.api)).bearer_auth(token).send().await?).await
    }

    async fn get(&self, path: &str, token: &str) -> Result<(StatusCode, Value)> {
        let response = self.http.get(format!("{}{path}", self.api)).bearer_auth(token).send().await?;
        Ok((response.status(), response.json().await.unwrap_or(Value::Null)))
    }

    async fn post(&self, path: &str, token: Option<&str>, idempotency: Option<&str>, body: &Value) -> Result<Answer> {
        let mut request = self.http.post(format!("{}{path}", self.api)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency {
            request = request.header("Idempotency-Key", key);
        }
        Answer::of(request.send().await?).await
    }

    async fn create(&self, key: &str, plan: &str, labels: Value) -> Result<Value> {
        let answer = self
            .post("/v1/tenants", Some(&self.admin()), Some(&format!("idem-{key}")), &tenant(key, plan, labels))
            .await?;
        anyhow::ensure!(answer.status == StatusCode::ACCEPTED, "create {key}: {answer:?}");
        Ok(answer.body)
    }

    /// Waits until the tenant reads back in `status`.
    async fn until_status(&self, key: &str, status: &str) -> Result<Value> {
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
    async fn count(&self, subject: &str) -> Result<u64> {
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
    async fn until_count(&self, subject: &str, expected: u64) -> Result<()> {
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

    fn requested_subject(&self, key: &str) -> String {
        format!("{}.v1.events.{key}.requested", self.namespace.root())
    }

    async fn deliver(&self, svix_id: &str, timestamp: i64, signature: &str, body: &str) -> Result<Answer> {
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
    async fn webhook(&self, svix_id: &str, event: &Value) -> Result<Answer> {
        let body = event.to_string();
        let now = unix_now();
        self.deliver(svix_id, now, &self.clerk.sign(svix_id, now, body.as_bytes()), &body).await
    }
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Result<Self> {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await?;
        Ok(Self { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// Asserts a problem+json answer of `status` and `kind`.
    fn problem(&self, status: StatusCode, kind: &str) {
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

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn tenant(key: &str, plan: &str, labels: Value) -> Value {
    json!({
        "key": key,
        "display_name": format!("Tenant {key}"),
        "plan": plan,
        "admin": {"email": format!("admin@{key}.test"), "first_name": "Ada", "last_name": "L"},
        "domains": [format!("{key}.test")],
        "labels": labels,
    })
}

#[tokio::test]
async fn auth_failures_say_why() -> Result<()> {
    let h = Harness::new().await?;
    let body = tenant("acme", "standard", json!({}));
    h.post("/v1/tenants", None, Some("k1"), &body).await?.problem(StatusCode::UNAUTHORIZED, "token-missing");
    let answer = h.post("/v1/tenants", Some("not-a-jwt"), Some("k1"), &body).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-malformed");
    assert!(answer.headers.get("www-authenticate").is_some());
    let now = unix_now() as u64;
    let mut claims = Claims {
        sub: "x".into(),
        iss: "landlord".into(),
        aud: Audience::One("landlord".into()),
        exp: now - 600,
        iat: now - 1200,
        nbf: None,
        scope: format!("{READ} {WRITE}"),
    };
    let answer = h.post("/v1/tenants", Some(&h.tokens.sign(&claims)), Some("k1"), &body).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-expired");
    claims.exp = now + 600;
    claims.aud = Audience::One("someone-else".into());
    h.post("/v1/tenants", Some(&h.tokens.sign(&claims)), Some("k1"), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-audience");
    let foreign = Tokens::new(b"another-secret-another-secret-!!", "landlord", "landlord");
    h.post("/v1/tenants", Some(&foreign.mint("x", &[WRITE.into()], Duration::from_secs(60))), Some("k1"), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-signature");
    let answer = h.post("/v1/tenants", Some(&h.token(&[READ])), Some("k1"), &body).await?;
    answer.problem(StatusCode::FORBIDDEN, "missing-scope");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("tenants:write"), "{answer:?}");
    let (status, _) = h.get("/v1/tenants", &h.token(&[WRITE])).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in ["/v1/tenants/acme/cancel", "/v1/tenants/acme/retry"] {
        h.post(path, Some(&h.token(&[READ])), None, &json!({})).await?.problem(StatusCode::FORBIDDEN, "missing-scope");
        h.post(path, None, None, &json!({})).await?.problem(StatusCode::UNAUTHORIZED, "token-missing");
    }
    h.post("/v1/nothing", Some(&h.admin()), None, &json!({})).await?.problem(StatusCode::NOT_FOUND, "not-found");
    // Nothing was accepted.
    let accepted: i64 = sqlx::query_scalar("SELECT count(*) FROM api_requests").fetch_one(&h.pool).await?;
    assert_eq!(accepted, 0);
    Ok(())
}

#[tokio::test]
async fn a_tenant_is_accepted_once_and_followed_to_active() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    let body = tenant("acme", "standard", json!({}));
    h.post("/v1/tenants", Some(&admin), None, &body).await?.problem(StatusCode::BAD_REQUEST, "idempotency-key");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &tenant("1acme", "standard", json!({}))).await?;
    bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(bad.body["rule"], "tenant_key.first_character");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &tenant("acme", "platinum", json!({}))).await?;
    assert_eq!(bad.body["rule"], "plan.unknown", "{bad:?}");
    let mut no_email = body.clone();
    no_email["admin"]["email"] = json!("nobody");
    let bad = h.post("/v1/tenants", Some(&admin), Some("k0"), &no_email).await?;
    assert_eq!(bad.body["rule"], "admin.email.invalid", "{bad:?}");
    h.post("/v1/tenants", Some(&admin), Some("k0"), &json!({"key": "acme"}))
        .await?
        .problem(StatusCode::BAD_REQUEST, "malformed-body");

    let first = h.post("/v1/tenants", Some(&admin), Some("k1"), &body).await?;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let id = first.body["tenant_id"].as_str().context("tenant_id")?.to_owned();
    assert_eq!(first.body["status_url"], format!("/v1/tenants/{id}"));
    assert_eq!(first.headers.get("location").and_then(|v| v.to_str().ok()), Some(format!("/v1/tenants/{id}").as_str()));
    let again = h.post("/v1/tenants", Some(&admin), Some("k1"), &body).await?;
    assert_eq!((again.status, &again.body), (StatusCode::ACCEPTED, &first.body));
    let mut changed = body.clone();
    changed["display_name"] = json!("Something else");
    let reused = h.post("/v1/tenants", Some(&admin), Some("k1"), &changed).await?;
    reused.problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert_eq!(reused.body["rule"], "idempotency_key.reused");
    let taken = h.post("/v1/tenants", Some(&admin), Some("k2"), &body).await?;
    taken.problem(StatusCode::CONFLICT, "tenant-key-taken");

    let active = h.until_status("acme", "ACTIVE").await?;
    assert_eq!(active["id"], id.as_str());
    assert_eq!(active["tier"], "bridge");
    assert_eq!(active["plan"], "standard");
    assert_eq!(active["domains"], json!(["acme.test"]));
    assert_eq!(active["admin"]["email"], "admin@acme.test");
    let saga = &active["saga"];
    assert_eq!(saga["state"], "succeeded");
    assert_eq!(saga["percent"], 100);
    let steps = saga["steps"].as_array().context("steps")?;
    assert_eq!(steps.len(), 2);
    for step in steps {
        assert_eq!(step["state"], "succeeded", "{step}");
        assert_eq!(step["attempts"], 1);
        assert!(step["started_at"].is_string() && step["finished_at"].is_string() && step["duration_ms"].is_number());
    }
    let kinds: Vec<&str> =
        active["resources"].as_array().context("resources")?.iter().filter_map(|r| r["kind"].as_str()).collect();
    assert_eq!(kinds, ["test.s1", "test.s2"]);
    // Times are RFC 3339 in UTC throughout, however they were read.
    for at in [
        &active["created_at"],
        &active["resources"][0]["created_at"],
        &saga["started_at"],
        &saga["finished_at"],
        &steps[0]["started_at"],
        &steps[1]["finished_at"],
    ] {
        let at = at.as_str().context("a time")?;
        assert!(at.ends_with('Z') && time::OffsetDateTime::parse(at, &Rfc3339).is_ok(), "{at}");
    }
    let (status, by_id) = h.get(&format!("/v1/tenants/{id}"), &h.token(&[READ])).await?;
    assert_eq!((status, by_id["key"].as_str()), (StatusCode::OK, Some("acme")));
    let (status, missing) = h.get("/v1/tenants/nobody", &admin).await?;
    assert_eq!((status, missing["type"].as_str()), (StatusCode::NOT_FOUND, Some("urn:landlord:problem:not-found")));
    // One request reached the broker, however often it was sent.
    assert_eq!(h.count(&h.requested_subject("acme")).await?, 1);
    // Racing requests for one key under different Idempotency-Keys: one wins.
    let body = tenant("bravo", "standard", json!({}));
    let keys: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    let answers =
        futures_util::future::join_all(keys.iter().map(|k| h.post("/v1/tenants", Some(&admin), Some(k), &body))).await;
    let mut statuses: Vec<u16> = Vec::new();
    for answer in answers {
        let answer = answer?;
        if answer.status != StatusCode::ACCEPTED {
            answer.problem(StatusCode::CONFLICT, "tenant-key-taken");
        }
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    h.until_status("bravo", "ACTIVE").await?;
    Ok(())
}

#[tokio::test]
async fn tenants_are_listed_by_status_and_plan_page_by_page() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    for key in ["alpha", "bravo", "charlie"] {
        h.create(key, "standard", json!({})).await?;
    }
    h.create("delta", "stuck", json!({"script.s2": "hold"})).await?;
    for key in ["alpha", "bravo", "charlie"] {
        h.until_status(key, "ACTIVE").await?;
    }
    h.until_status("delta", "PROVISIONING").await?;
    let (status, page) = h.get("/v1/tenants?status=ACTIVE&limit=2", &admin).await?;
    assert_eq!(status, StatusCode::OK);
    let keys = |page: &Value| -> Vec<String> {
        page["items"].as_array().into_iter().flatten().filter_map(|t| t["key"].as_str().map(str::to_owned)).collect()
    };
    let mut seen = keys(&page);
    assert_eq!(seen.len(), 2);
    let cursor = page["next_cursor"].as_str().context("next_cursor")?;
    let (_, rest) = h.get(&format!("/v1/tenants?status=ACTIVE&limit=2&cursor={cursor}"), &admin).await?;
    seen.extend(keys(&rest));
    assert!(rest["next_cursor"].is_null(), "{rest}");
    seen.sort();
    assert_eq!(seen, ["alpha", "bravo", "charlie"]);
    let (_, stuck) = h.get("/v1/tenants?plan=stuck", &admin).await?;
    assert_eq!(keys(&stuck), ["delta"]);
    let (_, all) = h.get("/v1/tenants", &admin).await?;
    assert_eq!(keys(&all).len(), 4);
    for (query, kind) in
        [("status=SLEEPING", "status"), ("limit=0", "limit"), ("cursor=bogus", "cursor"), ("colour=red", "query")]
    {
        let (status, problem) = h.get(&format!("/v1/tenants?{query}"), &admin).await?;
        assert_eq!(
            (status, problem["type"].as_str()),
            (StatusCode::BAD_REQUEST, Some(format!("urn:landlord:problem:{kind}").as_str())),
            "{query}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_running_provisioning_is_cancelled_and_a_failed_one_retried() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    h.post("/v1/tenants/ghost/cancel", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::NOT_FOUND, "not-found");
    h.create("stuck", "stuck", json!({"script.s2": "hold"})).await?;
    eventually("s2 to be running", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        (t["saga"]["current_step"] == "s2" && t["saga"]["steps"][1]["state"] == "running").then_some(())
    })
    .await?;
    h.post("/v1/tenants/stuck/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-retryable");
    let cancel = h.post("/v1/tenants/stuck/cancel", Some(&admin), None, &json!({"reason": "changed my mind"})).await?;
    assert_eq!(cancel.status, StatusCode::ACCEPTED, "{cancel:?}");
    // The cancel is recorded at once and takes effect when the step in
    // flight answers.
    eventually("the cancel to be recorded", WAIT, || async {
        let (_, t) = h.get("/v1/tenants/stuck", &admin).await.ok()?;
        (t["saga"]["cancel_reason"] == "changed my mind").then_some(())
    })
    .await?;
    h.release.send_replace(true);
    let cancelled = h.until_status("stuck", "CANCELLED").await?;
    assert_eq!(cancelled["saga"]["state"], "cancelled");
    assert_eq!(cancelled["saga"]["steps"][0]["state"], "compensated");
    assert_eq!(cancelled["saga"]["steps"][1]["state"], "compensated");
    let resources = cancelled["resources"].as_array().context("resources")?;
    assert_eq!(resources.len(), 2);
    assert!(resources.iter().all(|r| r["deleted_at"].is_string()), "{cancelled}");
    h.post("/v1/tenants/stuck/cancel", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-cancellable");

    h.create("flaky", "standard", json!({"script.s2": "fail-once"})).await?;
    let failed = h.until_status("flaky", "FAILED").await?;
    assert_eq!(failed["failed_step"], "s2");
    assert!(failed["saga"]["steps"][1]["last_error"].as_str().is_some_and(|e| e.contains("fails once")), "{failed}");
    let retry = h.post("/v1/tenants/flaky/retry", Some(&admin), None, &json!({})).await?;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{retry:?}");
    assert_eq!(retry.body["tenant_id"], failed["id"]);
    let active = h.until_status("flaky", "ACTIVE").await?;
    assert_eq!(active["id"], failed["id"]);
    assert_ne!(active["saga"]["id"], failed["saga"]["id"]);
    assert_eq!(active["saga"]["state"], "succeeded");
    let sagas: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas s JOIN tenants t ON t.id = s.tenant_id WHERE t.key = 'flaky'")
            .fetch_one(&h.pool)
            .await?;
    assert_eq!(sagas, 2);
    h.post("/v1/tenants/flaky/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::CONFLICT, "not-retryable");
    h.post("/v1/tenants/Bad/retry", Some(&admin), None, &json!({}))
        .await?
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    Ok(())
}

fn organization(id: &str, slug: &str) -> Value {
    organization_by(id, slug, "user_1")
}

fn organization_by(id: &str, slug: &str, created_by: &str) -> Value {
    json!({"type": "organization.created", "object": "event", "timestamp": 1_654_012_591_835_i64,
           "data": {"id": id, "slug": slug, "name": format!("Org {slug}"), "created_by": created_by,
                    "object": "organization"}})
}

fn membership(org: &str, email: &str) -> Value {
    json!({"type": "organizationMembership.created", "object": "event",
           "data": {"object": "organization_membership", "role": "org:admin",
                    "organization": {"id": org},
                    "public_user_data": {"user_id": "user_1", "identifier": email, "first_name": "Grace", "last_name": "H"}}})
}

#[tokio::test]
async fn webhook_signatures_timestamps_and_replays_follow_the_design() -> Result<()> {
    let h = Harness::new().await?;
    let event = json!({"type": "user.created", "object": "event", "data": {"id": "user_9"}});
    let body = event.to_string();
    let now = unix_now();
    let good = h.clerk.sign("msg_1", now, body.as_bytes());
    let accepted = h.deliver("msg_1", now, &good, &body).await?;
    assert_eq!((accepted.status, &accepted.body["delivery"]), (StatusCode::OK, &json!("accepted")));
    let replay = h.deliver("msg_1", now, &good, &body).await?;
    assert_eq!((replay.status, &replay.body["delivery"]), (StatusCode::OK, &json!("duplicate")));
    let subject = format!("{}.v1.events._clerk.user_created", h.namespace.root());
    // Published right after the answer (which does not wait for it).
    h.until_count(&subject, 1).await?;
    // Republished as protobuf, the delivery's JSON carried verbatim.
    let stream = h.jetstream.get_stream(h.namespace.stream_name(StreamKind::Events)).await?;
    let published = stream.get_last_raw_message_by_subject(&subject).await?;
    let ce_type = published.headers.get("ce-type").map(|v| v.as_str().to_owned());
    assert_eq!(ce_type.as_deref(), Some("landlord.v1.ClerkEvent"));
    let event = <pb::ClerkEvent as prost::Message>::decode(published.payload)?;
    assert_eq!((event.r#type.as_str(), event.svix_id.as_str()), ("user.created", "msg_1"));
    assert_eq!((event.object_id.as_str(), event.delivered_at), ("user_9", now));
    assert_eq!(event.data, body.as_bytes());

    let tampered = h.deliver("msg_2", now, &good, &body.replace("user_9", "user_8")).await?;
    tampered.problem(StatusCode::UNAUTHORIZED, "webhook-signature");
    let stale = now - 360;
    h.deliver("msg_3", stale, &h.clerk.sign("msg_3", stale, body.as_bytes()), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "webhook-timestamp");
    let ahead = now + 360;
    h.deliver("msg_4", ahead, &h.clerk.sign("msg_4", ahead, body.as_bytes()), &body)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "webhook-timestamp");
    let old = SigningSecret::parse(OLD_WEBHOOK_SECRET).map_err(anyhow::Error::msg)?;
    let only_old = old.sign("msg_5", now, body.as_bytes());
    h.deliver("msg_5", now, &only_old, &body).await?.problem(StatusCode::UNAUTHORIZED, "webhook-signature");
    let rotated = format!("{only_old} v1,bm90IGEgc2lnbmF0dXJl {}", h.clerk.sign("msg_5", now, body.as_bytes()));
    let answer = h.deliver("msg_5", now, &rotated, &body).await?;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let missing = h.http.post(format!("{}/v1/webhooks/clerk", h.api)).body(body.clone()).send().await?;
    Answer::of(missing).await?.problem(StatusCode::BAD_REQUEST, "webhook-headers");
    // Refused deliveries left no trace.
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT svix_id FROM webhook_deliveries ORDER BY svix_id").fetch_all(&h.pool).await?;
    assert_eq!(recorded, ["msg_1", "msg_5"]);
    Ok(())
}

#[tokio::test]
async fn an_organization_waits_for_its_admin_in_either_order() -> Result<()> {
    let h = Harness::new().await?;
    let admin = h.admin();
    // Organization first: it waits, and is reported as waiting.
    let answer = h.webhook("m1", &organization("org_a", "Alpha_Org")).await?;
    assert_eq!(answer.body["organization"]["state"], "waiting_for_admin", "{answer:?}");
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &h.token(&[READ])).await?;
    assert_eq!(waiting["items"][0]["org_id"], "org_a", "{waiting}");
    assert_eq!(waiting["items"][0]["overdue"], false);
    let answer = h.webhook("m2", &membership("org_a", "grace@alpha.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    let tenant = h.until_status("alpha-org", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "grace@alpha.test");
    assert_eq!(tenant["display_name"], "Org Alpha_Org");
    assert_eq!(tenant["labels"]["clerk.organization_id"], "org_a");
    // Admin first.
    h.webhook("m3", &membership("org_b", "ada@bravo.test")).await?;
    let answer = h.webhook("m4", &organization("org_b", "bravo")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    h.until_status("bravo", "ACTIVE").await?;
    // A slug that cannot be a key is rejected with the rule it broke.
    h.webhook("m5", &organization("org_c", "admin")).await?;
    let answer = h.webhook("m6", &membership("org_c", "x@c.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "rejected", "{answer:?}");
    assert_eq!(answer.body["organization"]["rejected_rule"], "tenant_key.reserved");
    // A member who is not an admin does not make a tenant.
    h.webhook("m7", &organization("org_d", "delta")).await?;
    let mut member = membership("org_d", "m@d.test");
    member["data"]["role"] = json!("org:member");
    let answer = h.webhook("m8", &member).await?;
    assert!(answer.body.get("organization").is_none(), "{answer:?}");
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &admin).await?;
    let ids: Vec<&str> =
        waiting["items"].as_array().into_iter().flatten().filter_map(|o| o["org_id"].as_str()).collect();
    assert_eq!(ids, ["org_d"]);
    let (status, _) = h.get("/v1/clerk/organizations?state=asleep", &admin).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Every delivery is published for later consumers.
    h.until_count(&format!("{}.v1.events._clerk.>", h.namespace.root()), 8).await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_and_repeated_deliveries_make_one_tenant() -> Result<()> {
    let h = Arc::new(Harness::new().await?);
    let org = organization("org_x", "xray");
    let body = org.to_string();
    let now = unix_now();
    let signature = h.clerk.sign("same", now, body.as_bytes());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (h, body, signature) = (h.clone(), body.clone(), signature.clone());
        tasks.push(tokio::spawn(async move { h.deliver("same", now, &signature, &body).await }));
    }
    for i in 0..10 {
        let h = h.clone();
        let event = if i % 2 == 0 { organization("org_x", "xray") } else { membership("org_x", "admin@xray.test") };
        tasks.push(tokio::spawn(async move { h.webhook(&format!("distinct-{i}"), &event).await }));
    }
    let mut duplicates = 0;
    for task in tasks {
        let answer = task.await??;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        if answer.body["delivery"] == "duplicate" {
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, 99);
    h.until_status("xray", "ACTIVE").await?;
    assert_eq!(h.count(&h.requested_subject("xray")).await?, 1);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants").fetch_one(&h.pool).await?;
    assert_eq!(tenants, 1);
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas").fetch_one(&h.pool).await?;
    assert_eq!(sagas, 1);
    Ok(())
}

#[tokio::test]
async fn limits_health_and_the_mint_token_command() -> Result<()> {
    let h = Harness::with_limits(Limits { rate_per_second: 0.05, burst: 3.0, ..limits() }).await?;
    let admin = h.admin();
    let big = json!({"key": "x".repeat(20_000)});
    let answer = h.post("/v1/tenants", Some(&admin), Some("k"), &big).await?;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{answer:?}");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(h.get("/v1/tenants", &admin).await?.0);
    }
    let limited = Answer::of(h.http.get(format!("{}/v1/tenants", h.api)).bearer_auth(&admin).send().await?).await?;
    limited.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert_eq!(limited.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("20"));
    // The refused body took the first token: two pass, then the bucket is empty.
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS]);
    // Signed Clerk deliveries are not under the per-client limit: Svix
    // sends every organization's events from a few addresses.
    for i in 0..3 {
        let event = json!({"type": "user.created", "object": "event", "data": {"id": format!("user_{i}")}});
        let delivered = h.webhook(&format!("msg_limit_{i}"), &event).await?;
        assert!(delivered.status.is_success(), "{delivered:?}");
    }
    let ready = reqwest::get(format!("http://{}/readyz", h.health)).await?;
    assert_eq!(ready.status(), StatusCode::OK);
    let metrics = reqwest::get(format!("http://{}/metrics", h.health)).await?;
    assert_eq!(metrics.status(), StatusCode::OK);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_landlord-gateway"))
        .args(["mint-token", "--scope", "tenants:read", "--ttl", "5m", "--subject", "ops"])
        .env("LANDLORD_JWT_SECRET", JWT_SECRET)
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout)?.trim().to_owned();
    let claims = h.tokens.verify(&token).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    assert_eq!((claims.sub.as_str(), claims.scope.as_str()), ("ops", "tenants:read"));
    assert!(claims.exp - claims.iat == 300);
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_landlord-gateway"))
        .args(["mint-token", "--scope", "tenants:everything"])
        .env("LANDLORD_JWT_SECRET", JWT_SECRET)
        .output()?;
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown scope"));
    Ok(())
}

/// An SSE connection to the feed, read frame by frame.
struct Feed {
    response: reqwest::Response,
    buffer: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FeedEvent {
    id: u64,
    event: String,
    data: Value,
}

impl Feed {
    async fn open(h: &Harness, query: &str, last_event_id: Option<u64>) -> Result<Self> {
        let mut request = h.http.get(format!("{}/v1/events{query}", h.api)).bearer_auth(h.token(&[READ]));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await?;
        anyhow::ensure!(response.status() == StatusCode::OK, "feed: {}", response.status());
        anyhow::ensure!(
            response.headers().get("content-type").and_then(|v| v.to_str().ok()) == Some("text/event-stream"),
            "feed content type"
        );
        Ok(Self { response, buffer: String::new() })
    }

    /// The next event (keep-alive comments skipped).
    async fn next(&mut self) -> Result<FeedEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().parse()?);
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if let Some(id) = id {
                    return Ok(FeedEvent { id, event, data: serde_json::from_str(&data)? });
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .context("no event within the wait")??
                .context("the feed ended")?;
            self.buffer.push_str(std::str::from_utf8(&chunk)?);
        }
    }

    async fn until(&mut self, event: &str) -> Result<Vec<FeedEvent>> {
        let mut seen = Vec::new();
        loop {
            let next = self.next().await?;
            let done = next.event == event;
            seen.push(next);
            if done {
                return Ok(seen);
            }
        }
    }
}

#[tokio::test]
async fn the_event_feed_resumes_after_a_reconnect_without_gaps_or_repeats() -> Result<()> {
    let h = Harness::new().await?;
    let mut live = Feed::open(&h, "?tenant=echo", None).await?;
    let mut failures = Feed::open(&h, "?type=provisioning_started", None).await?;
    h.create("echo", "standard", json!({})).await?;
    h.create("foxtrot", "standard", json!({})).await?;
    // The first few events, then the client goes away.
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(live.next().await?);
    }
    drop(live);
    let last = first.last().map(|e| e.id).context("events")?;
    let mut resumed = Feed::open(&h, "?tenant=echo", Some(last)).await?;
    let rest = resumed.until("activated").await?;
    let mut joined = first.clone();
    joined.extend(rest);
    // Everything about echo from the start of the stream, in one go.
    let mut full = Feed::open(&h, "?tenant=echo", Some(0)).await?;
    let all = full.until("activated").await?;
    assert_eq!(joined, all, "reconnecting lost or repeated events");
    let ids: Vec<u64> = all.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(all.iter().all(|e| e.data["tenant"] == "echo" && e.data["sequence"] == e.id));
    let names: Vec<&str> = all.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"requested"));
    assert!(names.contains(&"step_succeeded"), "{names:?}");
    // The type filter sees both tenants, and only that type.
    let a = failures.next().await?;
    let b = failures.next().await?;
    let mut tenants = [a.data["tenant"].as_str().unwrap_or(""), b.data["tenant"].as_str().unwrap_or("")];
    tenants.sort();
    assert_eq!(tenants, ["echo", "foxtrot"]);
    assert!([&a, &b].iter().all(|e| e.event == "provisioning_started"));
    for (query, status) in
        [("?type=bogus", StatusCode::BAD_REQUEST), ("?tenant=Nope", StatusCode::UNPROCESSABLE_ENTITY)]
    {
        let (code, _) = h.get(&format!("/v1/events{query}"), &h.admin()).await?;
        assert_eq!(code, status, "{query}");
    }
    let bad_id =
        h.http.get(format!("{}/v1/events", h.api)).bearer_auth(h.admin()).header("Last-Event-ID", "x").send().await?;
    assert_eq!(bad_id.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn the_served_openapi_document_is_the_committed_one_and_names_every_route() -> Result<()> {
    let h = Harness::new().await?;
    let served: Value = h.http.get(format!("{}/v1/openapi.json", h.api)).send().await?.json().await?;
    let committed: Value = serde_json::from_str(include_str!("../openapi.json"))?;
    assert_eq!(
        served, committed,
        "services/gateway/openapi.json is stale: run `cargo run -p landlord-gateway -- openapi > services/gateway/openapi.json`"
    );
    assert_eq!(include_str!("../openapi.json"), landlord_gateway::openapi::pretty());
    assert_eq!(served["openapi"], "3.1.0");
    let paths: Vec<&String> = served["paths"].as_object().context("paths")?.keys().collect();
    // Every documented path answers something other than "no such endpoint".
    for path in paths {
        let concrete = path.replace("{id_or_key}", "acme").replace("{key}", "acme");
        for method in served["paths"][path].as_object().context("methods")?.keys() {
            let request = match method.as_str() {
                "get" => h.http.get(format!("{}{concrete}", h.api)),
                _ => h.http.post(format!("{}{concrete}", h.api)),
            };
            let answer = Answer::of(request.send().await?).await?;
            assert_ne!(answer.body["detail"], "no such endpoint", "{method} {path}");
        }
    }
    Ok(())
}

fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Strings a generated request uses: valid and invalid keys, plans, tiers,
/// emails, and worse.
const STRINGS: &[&str] =
    &["", "acme", "Acme", "a--b", "1abc", "ab", "x@y.test", "ACTIVE", "standard", "silo", "ü\u{0}\"'", "admin"];

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }

    /// A value of any kind.
    fn value(&mut self, depth: u32) -> Value {
        match self.next() % if depth > 2 { 5 } else { 7 } {
            0 => Value::Null,
            1 => json!(self.next().is_multiple_of(3)),
            2 => json!((self.next() % 1000) as i64 - 500),
            3 | 4 => json!(self.pick(STRINGS).repeat((self.next() % 3 + 1) as usize)),
            5 => Value::Array((0..self.next() % 3).map(|_| self.value(depth + 1)).collect()),
            _ => {
                const KEYS: &[&str] =
                    &["key", "display_name", "plan", "tier", "admin", "email", "domains", "labels", "reason", "type"];
                let mut map = serde_json::Map::new();
                for _ in 0..self.next() % 6 {
                    map.insert(self.pick(KEYS).to_owned(), self.value(depth + 1));
                }
                Value::Object(map)
            }
        }
    }
}

impl Rng {
    fn index(&mut self, len: usize) -> usize {
        (self.next() % len.max(1) as u64) as usize
    }

    /// A value `schema` describes, as the document's generated schemas say
    /// it (`$ref`s into `#/components/schemas/`, `anyOf`/`oneOf`, `enum`,
    /// `type` lists such as `["string", "null"]`, required and optional
    /// properties), but now and then, at any depth, a value of any kind.
    fn instance(&mut self, document: &Value, schema: &Value, depth: u32) -> Value {
        if depth > 8 || self.next().is_multiple_of(16) {
            return self.value(2);
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let target = reference.strip_prefix('#').and_then(|pointer| document.pointer(pointer));
            return self.instance(document, target.unwrap_or(&Value::Bool(true)), depth + 1);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(alternatives) = schema[keyword].as_array().filter(|a| !a.is_empty()) {
                let alternative = &alternatives[self.index(alternatives.len())];
                return self.instance(document, alternative, depth + 1);
            }
        }
        if let Some(values) = schema["enum"].as_array().filter(|v| !v.is_empty()) {
            return values[self.index(values.len())].clone();
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(several) => several.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        match types.get(self.index(types.len())).copied() {
            Some("object") => {
                let required: Vec<&str> =
                    schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let mut map = serde_json::Map::new();
                for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                    if required.contains(&name.as_str()) || self.next().is_multiple_of(2) {
                        map.insert(name.clone(), self.instance(document, property, depth + 1));
                    }
                }
                if schema["additionalProperties"].is_object() {
                    for _ in 0..self.next() % 3 {
                        let name = self.pick(STRINGS).to_owned();
                        map.insert(name, self.instance(document, &schema["additionalProperties"], depth + 1));
                    }
                }
                Value::Object(map)
            }
            Some("array") => {
                (0..self.next() % 3).map(|_| self.instance(document, &schema["items"], depth + 1)).collect()
            }
            Some("string") => json!(self.pick(STRINGS)),
            Some("integer" | "number") => json!((self.next() % 1000) as i64 - 500),
            Some("boolean") => json!(self.next().is_multiple_of(2)),
            Some("null") => Value::Null,
            // No type: anything goes (`true`, or a body taken verbatim).
            _ => self.value(1),
        }
    }
}

#[tokio::test]
async fn requests_generated_from_the_openapi_document_never_get_a_5xx() -> Result<()> {
    let h = Harness::new().await?;
    h.create("acme", "standard", json!({})).await?;
    let document = landlord_gateway::openapi::document();
    let paths = document["paths"].as_object().context("paths")?;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    const SEGMENTS: &[&str] = &["acme", "ACME", "a%20b", "%F0%9F%92%A9", "00000000-0000-0000-0000-000000000000", "x"];
    let mut sent = 0;
    // Bodies built from the CreateTenant schema that the handler read and
    // judged (rather than refusing them as malformed).
    let mut read = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().context("methods")? {
            for _ in 0..25 {
                let concrete = path.replace("{id_or_key}", rng.pick(SEGMENTS)).replace("{key}", rng.pick(SEGMENTS));
                let mut query = Vec::new();
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["in"] == "query" && rng.next().is_multiple_of(2) {
                        let value = if rng.next().is_multiple_of(2) {
                            rng.instance(&document, &parameter["schema"], 0)
                        } else {
                            rng.value(0)
                        };
                        let value = match value {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        query.push((parameter["name"].as_str().unwrap_or("").to_owned(), value));
                    }
                }
                let encoded: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
                let url = format!("{}{concrete}?{}", h.api, encoded.join("&"));
                let schema = operation.pointer("/requestBody/content/application~1json/schema");
                let body = match schema {
                    Some(schema) if !rng.next().is_multiple_of(3) => rng.instance(&document, schema, 0),
                    _ => rng.value(0),
                };
                let mut request = match method.as_str() {
                    "get" => h.http.get(&url),
                    _ => h.http.post(&url).header("Idempotency-Key", format!("fuzz-{}", rng.next() % 4)).json(&body),
                };
                if !rng.next().is_multiple_of(4) {
                    request = request.bearer_auth(h.admin());
                }
                let response = request.send().await?;
                let status = response.status();
                assert!(!status.is_server_error(), "{method} {url} {query:?} → {status}: {:?}", response.text().await);
                if path == "/v1/tenants" && method == "post" && [202, 409, 422].contains(&status.as_u16()) {
                    read += 1;
                }
                sent += 1;
            }
        }
    }
    assert!(sent >= 200, "{sent}");
    assert!(read > 0, "no generated body got past the parsing of POST /v1/tenants");
    Ok(())
}

// ---------------------------------------------------------------------------
// RS256 tokens from a JWKS.

/// Test-only RSA keys (services/gateway/tests/fixtures/README.md).
const KEY_A: &[u8] = include_bytes!("fixtures/test-only-jwks-key-a.pk8.der");
const KEY_B: &[u8] = include_bytes!("fixtures/test-only-jwks-key-b.pk8.der");

/// An issuer's signing key: signs RS256 tokens, and is published in a JWKS.
struct SigningKey {
    kid: String,
    pair: ring::signature::RsaKeyPair,
}

impl SigningKey {
    fn load(kid: &str, pkcs8: &[u8]) -> Result<Self> {
        let pair = ring::signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self { kid: kid.to_owned(), pair })
    }

    fn jwk(&self) -> Value {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        json!({"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": b64(&public.n), "e": b64(&public.e)})
    }

    /// An RS256 token over `claims`, naming `kid` in its header.
    fn sign_as(&self, kid: &str, claims: &Claims) -> Result<String> {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(json!({"alg": "RS256", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let input = format!("{header}.{}", b64(&serde_json::to_vec(claims)?));
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(format!("{input}.{}", b64(&signature)))
    }

    fn sign(&self, claims: &Claims) -> Result<String> {
        self.sign_as(&self.kid, claims)
    }
}

fn claims(scope: &str) -> Claims {
    let now = unix_now() as u64;
    Claims {
        sub: "rsa-user".into(),
        iss: "landlord".into(),
        aud: Audience::One("landlord".into()),
        exp: now + 600,
        iat: now,
        nbf: None,
        scope: scope.into(),
    }
}

/// An issuer's JWKS endpoint: a real HTTP server whose key set the test
/// changes, counting fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Result<Self> {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (served, counter) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, counter) = (served.clone(), counter.clone());
                async move {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let keys = served.lock().map(|k| k.clone()).unwrap_or_default();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { until.cancelled().await }).await;
        });
        Ok(Self { url, keys, fetches, stop })
    }

    fn publish(&self, keys: Vec<Value>) {
        if let Ok(mut served) = self.keys.lock() {
            *served = keys;
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn jwks_settings(url: &str) -> JwksSettings {
    JwksSettings {
        url: url.to_owned(),
        refresh: Duration::from_secs(3600),
        // Long: a test sees exactly which requests may refetch.
        min_refetch: Duration::from_secs(3600),
        timeout: Duration::from_secs(5),
        roots: ExtraRoots::default(),
    }
}

#[tokio::test]
async fn rs256_tokens_are_checked_against_the_jwks_and_forced_refetches_are_rate_limited() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let b = SigningKey::load("key-b", KEY_B)?;
    // Besides key a, keys the gateway must ignore: not RSA, not for signing.
    let ignored = vec![
        json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"}),
        json!({"kty": "oct", "kid": "hmac", "k": base64_of(JWT_SECRET)}),
        {
            let mut enc = b.jwk();
            enc["kid"] = json!("key-b-enc");
            enc["use"] = json!("enc");
            enc
        },
    ];
    let issuer = JwksServer::start([vec![a.jwk()], ignored.clone()].concat()).await?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(jwks_settings(&issuer.url)), ..Setup::default() }).await?;
    assert_eq!(issuer.fetches(), 1, "fetched once at start");

    let (status, page) = h.get("/v1/tenants", &a.sign(&claims(READ))?).await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let answer =
        h.post("/v1/tenants", Some(&a.sign(&claims(READ))?), Some("k"), &tenant("x", "standard", json!({}))).await?;
    answer.problem(StatusCode::FORBIDDEN, "missing-scope");
    let mut expired = claims(READ);
    expired.exp = unix_now() as u64 - 600;
    h.answer("/v1/tenants", &a.sign(&expired)?).await?.problem(StatusCode::UNAUTHORIZED, "token-expired");
    let mut elsewhere = claims(READ);
    elsewhere.aud = Audience::One("another-api".into());
    let answer = h.answer("/v1/tenants", &a.sign(&elsewhere)?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-audience");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("another-api"), "{answer:?}");
    // Signed by another key under key a's name.
    h.answer("/v1/tenants", &b.sign_as("key-a", &claims(READ))?)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-signature");
    // Algorithm confusion: HS256 (even with the JWKS's own "oct" key's
    // bytes) and alg none are refused when only a JWKS is configured.
    let answer = h.answer("/v1/tenants", &h.tokens.sign(&claims(READ))).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-algorithm");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("HS256"), "{answer:?}");
    let unsigned = {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        format!("{}.{}.", b64(br#"{"alg":"none","kid":"key-a"}"#), b64(&serde_json::to_vec(&claims(READ))?))
    };
    h.answer("/v1/tenants", &unsigned).await?.problem(StatusCode::UNAUTHORIZED, "token-algorithm");
    // An ignored key cannot verify anything.
    h.answer("/v1/tenants", &b.sign_as("key-b-enc", &claims(READ))?)
        .await?
        .problem(StatusCode::UNAUTHORIZED, "token-kid");
    assert_eq!(issuer.fetches(), 2, "the first unknown kid forced one refetch");

    // The issuer rotates key b in. Its first token makes the gateway
    // refetch — but the forced refetch above was moments ago, and forced
    // refetches are at most one per LANDLORD_JWKS_REFETCH_MIN: refused.
    issuer.publish([vec![a.jwk(), b.jwk()], ignored].concat());
    let answer = h.answer("/v1/tenants", &b.sign(&claims(READ))?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-kid");
    assert!(answer.body["detail"].as_str().unwrap_or("").contains("\"key-b\""), "{answer:?}");
    assert_eq!(issuer.fetches(), 2);
    Ok(())
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_jwks_once_and_a_wrong_one_is_named() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let b = SigningKey::load("key-b", KEY_B)?;
    let issuer = JwksServer::start(vec![a.jwk()]).await?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(jwks_settings(&issuer.url)), ..Setup::default() }).await?;
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    // Key b rotated in: the first token signed with it refetches the set
    // and is accepted; concurrent ones share that one refetch.
    issuer.publish(vec![a.jwk(), b.jwk()]);
    let token = b.sign(&claims(READ))?;
    let answers = futures_util::future::join_all((0..8).map(|_| h.get("/v1/tenants", &token))).await;
    for answer in answers {
        assert_eq!(answer?.0, StatusCode::OK);
    }
    assert_eq!(issuer.fetches(), 2, "one refetch for the rotated key");
    // A kid nobody publishes: 401 naming it (no second refetch this soon).
    let answer = h.answer("/v1/tenants", &b.sign_as("key-zz", &claims(READ))?).await?;
    answer.problem(StatusCode::UNAUTHORIZED, "token-kid");
    let detail = answer.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("\"key-zz\"") && detail.contains("key-a") && detail.contains("key-b"), "{answer:?}");
    assert_eq!(issuer.fetches(), 2);
    // Until the next refresh (LANDLORD_JWKS_REFRESH) the known keys are
    // used as cached: the JWKS is not asked per request.
    issuer.publish(vec![b.jwk()]);
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    assert_eq!(issuer.fetches(), 2);
    Ok(())
}

#[tokio::test]
async fn a_jwks_that_cannot_be_fetched_is_a_503_that_says_so() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    // A port nobody listens on.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/jwks.json", listener.local_addr()?)
    };
    // Both configured: HS256 tokens keep working while the JWKS is down.
    let h = Harness::build(Setup { hs256: true, jwks: Some(jwks_settings(&dead)), ..Setup::default() }).await?;
    for _ in 0..2 {
        let answer = h.answer("/v1/tenants", &a.sign(&claims(READ))?).await?;
        answer.problem(StatusCode::SERVICE_UNAVAILABLE, "jwks-unavailable");
        let detail = answer.body["detail"].as_str().unwrap_or("");
        assert!(detail.contains("\"key-a\"") && detail.contains(&dead), "{answer:?}");
        let retry_after: u64 =
            answer.headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!(retry_after >= 1, "{answer:?}");
    }
    assert_eq!(h.get("/v1/tenants", &h.admin()).await?.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn a_jwks_over_https_is_trusted_through_the_configured_ca_and_refused_without_it() -> Result<()> {
    let a = SigningKey::load("key-a", KEY_A)?;
    let issuer = JwksServer::start(vec![a.jwk()]).await?;
    let https = TlsFront::start(&issuer.url).await?;
    let mut trusting = jwks_settings(&https.url);
    trusting.roots = ExtraRoots::from_pem_file(&tls::ca_file()).map_err(anyhow::Error::msg)?;
    let h = Harness::build(Setup { hs256: false, jwks: Some(trusting), ..Setup::default() }).await?;
    assert_eq!(h.get("/v1/tenants", &a.sign(&claims(READ))?).await?.0, StatusCode::OK);
    assert_eq!(issuer.fetches(), 1);

    // Without the CA the system's roots do not vouch for the certificate:
    // no key is ever fetched, and the 503 says why.
    let h = Harness::build(Setup { hs256: true, jwks: Some(jwks_settings(&https.url)), ..Setup::default() }).await?;
    let answer = h.answer("/v1/tenants", &a.sign(&claims(READ))?).await?;
    answer.problem(StatusCode::SERVICE_UNAVAILABLE, "jwks-unavailable");
    let detail = answer.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains("certificate") && detail.contains("UnknownIssuer"), "{answer:?}");
    assert_eq!(issuer.fetches(), 1, "nothing got past the handshake");
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

// ---------------------------------------------------------------------------
// Clerk's Backend API.

/// A contract double of Clerk's Backend API, as far as the gateway uses it:
/// `GET /v1/users/{user_id}` with `Authorization: Bearer <secret key>`
/// answers Clerk's documented user object (`id`, `first_name`,
/// `last_name`, `primary_email_address_id`, `email_addresses[]` of
/// `{id, object, email_address, verification, linked_to}`, …), 404 with
/// Clerk's error shape (`errors[]` of `{message, long_message, code}`) for
/// an unknown user, 401 for a wrong secret key; a user can be scripted to
/// answer some statuses first (500, 429, …). It records every call.
struct ClerkBackendDouble {
    url: String,
    state: Arc<Mutex<ClerkState>>,
    stop: CancellationToken,
}

#[derive(Default)]
struct ClerkState {
    users: HashMap<String, Value>,
    scripts: HashMap<String, std::collections::VecDeque<u16>>,
    calls: Vec<String>,
    unauthorized: usize,
}

impl Drop for ClerkBackendDouble {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn clerk_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let body = json!({"errors": [{"message": message, "long_message": message, "code": code}],
                      "clerk_trace_id": "trace_double"});
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

impl ClerkBackendDouble {
    async fn start() -> Result<Self> {
        use axum::response::IntoResponse as _;
        let state = Arc::new(Mutex::new(ClerkState::default()));
        let shared = state.clone();
        let app = axum::Router::new().route(
            "/v1/users/{user_id}",
            axum::routing::get(
                move |axum::extract::Path(user_id): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                    let shared = shared.clone();
                    async move {
                        let Ok(mut state) = shared.lock() else { return clerk_error(500, "internal", "poisoned") };
                        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
                        if bearer != Some(&format!("Bearer {CLERK_SECRET_KEY}")) {
                            state.unauthorized += 1;
                            return clerk_error(401, "authentication_invalid", "The secret key is not valid");
                        }
                        state.calls.push(user_id.clone());
                        if let Some(status) = state.scripts.get_mut(&user_id).and_then(|s| s.pop_front()) {
                            return clerk_error(status, "scripted", "A scripted failure of the contract double");
                        }
                        match state.users.get(&user_id) {
                            Some(user) => axum::Json(user.clone()).into_response(),
                            None => clerk_error(404, "resource_not_found", "User not found"),
                        }
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { until.cancelled().await }).await;
        });
        Ok(Self { url, state, stop })
    }

    /// A user as Clerk describes one: a second, non-primary address first.
    fn add_user(&self, id: &str, email: &str, first: &str, last: &str) {
        let address = |n: u32, email: &str| {
            json!({"id": format!("idn_{id}_{n}"), "object": "email_address", "email_address": email,
                   "reserved": false, "linked_to": [],
                   "verification": {"status": "verified", "strategy": "email_code", "attempts": 1, "expire_at": null}})
        };
        let user = json!({
            "id": id, "object": "user", "username": null, "first_name": first, "last_name": last,
            "image_url": "https://img.clerk.com/x", "has_image": false,
            "primary_email_address_id": format!("idn_{id}_2"), "primary_phone_number_id": null,
            "primary_web3_wallet_id": null, "password_enabled": true, "two_factor_enabled": false,
            "email_addresses": [address(1, &format!("old.{email}")), address(2, email)],
            "phone_numbers": [], "web3_wallets": [], "external_accounts": [],
            "public_metadata": {}, "private_metadata": {}, "unsafe_metadata": {},
            "external_id": null, "last_sign_in_at": null, "banned": false, "locked": false,
            "created_at": 1_716_883_200_000_i64, "updated_at": 1_716_883_200_000_i64,
        });
        if let Ok(mut state) = self.state.lock() {
            state.users.insert(id.to_owned(), user);
        }
    }

    fn script(&self, id: &str, statuses: &[u16]) {
        if let Ok(mut state) = self.state.lock() {
            state.scripts.insert(id.to_owned(), statuses.iter().copied().collect());
        }
    }

    fn calls(&self, id: &str) -> usize {
        self.state.lock().map(|s| s.calls.iter().filter(|c| *c == id).count()).unwrap_or(0)
    }

    fn unauthorized(&self) -> usize {
        self.state.lock().map(|s| s.unauthorized).unwrap_or(0)
    }
}

#[tokio::test]
async fn the_clerk_backend_api_contract_double_supplies_a_missing_admin_and_one_tenant_results() -> Result<()> {
    let clerk = ClerkBackendDouble::start().await?;
    clerk.add_user("user_lima", "lin@lima.test", "Lin", "Ma");
    clerk.add_user("user_flaky", "flo@flaky.test", "Flo", "Ky");
    clerk.script("user_flaky", &[500, 503]);
    // Over HTTPS, as Clerk is reached: a certificate under the test CA.
    let https = TlsFront::start(&clerk.url).await?;
    let roots = ExtraRoots::from_pem_file(&tls::ca_file()).map_err(anyhow::Error::msg)?;
    let h = Harness::build(Setup { clerk_api: Some(https.url.clone()), roots, ..Setup::default() }).await?;

    // No membership event comes: the lookup names the admin. The webhook
    // was answered before it (the organization was still waiting then).
    let answer = h.webhook("l1", &organization_by("org_lima", "lima", "user_lima")).await?;
    assert_eq!(answer.body["organization"]["state"], "waiting_for_admin", "{answer:?}");
    let tenant = h.until_status("lima", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "lin@lima.test", "the primary address, not the first one");
    assert_eq!(
        (tenant["admin"]["first_name"].as_str(), tenant["admin"]["last_name"].as_str()),
        (Some("Lin"), Some("Ma"))
    );
    // The membership arriving too changes nothing: one tenant.
    let answer = h.webhook("l2", &membership("org_lima", "someone-else@lima.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    assert_eq!(answer.body["organization"]["admin_email"], "lin@lima.test");
    assert_eq!(h.count(&h.requested_subject("lima")).await?, 1);
    assert_eq!(clerk.calls("user_lima"), 1);

    // 500, then 503, then the user: retried with backoff.
    h.webhook("f1", &organization_by("org_flaky", "flaky", "user_flaky")).await?;
    let tenant = h.until_status("flaky", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "flo@flaky.test");
    assert_eq!(clerk.calls("user_flaky"), 3);
    assert_eq!(h.count(&h.requested_subject("flaky")).await?, 1);
    let requests: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_id FROM tenants ORDER BY key").fetch_all(&h.pool).await?;
    assert_eq!(requests, ["clerk:org_flaky", "clerk:org_lima"]);
    assert_eq!(clerk.unauthorized(), 0, "every call carried the secret key");
    Ok(())
}

#[tokio::test]
async fn with_the_clerk_backend_api_contract_double_a_404_waits_for_the_membership() -> Result<()> {
    let clerk = ClerkBackendDouble::start().await?;
    let h = Harness::build(Setup { clerk_api: Some(clerk.url.clone()), ..Setup::default() }).await?;
    h.webhook("g1", &organization_by("org_gone", "mike", "user_gone")).await?;
    eventually("the lookup to reach the contract double", WAIT, || async {
        (clerk.calls("user_gone") > 0).then_some(())
    })
    .await?;
    // 404 is final: still waiting, and listed as such.
    let (_, waiting) = h.get("/v1/clerk/organizations?state=waiting_for_admin", &h.admin()).await?;
    assert_eq!(waiting["items"][0]["org_id"], "org_gone", "{waiting}");
    // The membership supplies the admin; one tenant.
    let answer = h.webhook("g2", &membership("org_gone", "mike@mike.test")).await?;
    assert_eq!(answer.body["organization"]["state"], "requested", "{answer:?}");
    let tenant = h.until_status("mike", "ACTIVE").await?;
    assert_eq!(tenant["admin"]["email"], "mike@mike.test");
    assert_eq!(h.count(&h.requested_subject("mike")).await?, 1);
    assert_eq!(clerk.calls("user_gone"), 1, "a 404 is not retried");
    Ok(())
}
