//! The gateway: how people and other systems reach Landlord without
//! speaking NATS (issue 6).
//!
//! - `/v1/tenants`: ask for a tenant (`Idempotency-Key` required, 202 once
//!   durably accepted), follow it by id or key (status, resources, saga
//!   progress step by step), list with filters and cursor pagination, cancel
//!   a running provisioning, retry a FAILED one ([`tenants`]);
//! - `/v1/webhooks/clerk`: the Clerk bridge, Svix-verified and de-duplicated
//!   on `svix-id` in PostgreSQL; an organization and its `org:admin`
//!   membership, in either order, become one `TenantRequested`
//!   ([`clerk`]); `/v1/clerk/organizations` reports organizations still
//!   waiting for their admin;
//! - `/v1/events`: lifecycle events as Server-Sent Events, filtered by
//!   tenant and type, resumable with `Last-Event-ID` (the stream sequence)
//!   ([`events`]);
//! - `/v1/openapi.json`: the OpenAPI 3.1 document ([`openapi`]), also
//!   committed as `services/gateway/openapi.json`;
//! - bearer JWTs (HS256) with scopes `tenants:read` / `tenants:write`; every
//!   401/403 says why ([`auth`]); `landlord-gateway mint-token` mints an
//!   admin token from the configured secret;
//! - limits: body size, a per-request timeout, a per-client rate limit and
//!   one structured access-log line per request ([`limits`]);
//! - `/livez`, `/readyz`, `/metrics` on `LANDLORD_HTTP_ADDR` like every
//!   service (the runtime's health endpoint), the API on `LANDLORD_API_ADDR`.
//!
//! Everything the gateway publishes — `TenantRequested`, `CancelSaga`, Clerk
//! events — is written to the control-plane `outbox` in the transaction that
//! records the request, and relayed by the orchestrator's outbox code
//! ([`landlord_orchestrator::outbox`]): published right after commit with
//! `Nats-Msg-Id`, swept later if that failed. The control-plane schema has
//! one migrator, the orchestrator's; the gateway runs it at start too, so
//! either may start first. Errors are RFC 9457 problem details
//! ([`problem`]).
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables
//! (`LANDLORD_DATABASE_URL` is required: the orchestrator's database):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_API_ADDR` | `127.0.0.1:18100` | where the API listens |
//! | `LANDLORD_JWT_SECRET` | required | HS256 key for bearer tokens, at least 32 bytes |
//! | `LANDLORD_JWT_AUDIENCE` | `landlord` | required `aud` of tokens |
//! | `LANDLORD_JWT_ISSUER` | `landlord` | required `iss` of tokens |
//! | `LANDLORD_PLANS` | `deploy/plans.toml` | plans file, the orchestrator's: requests are validated against it |
//! | `LANDLORD_CLERK_WEBHOOK_SECRET` | — | Svix signing secret `whsec_…`; unset: no Clerk endpoints |
//! | `LANDLORD_CLERK_PLAN` | `standard` | plan of tenants made from Clerk organizations |
//! | `LANDLORD_CLERK_ADMIN_WAIT` | `1h` | an organization waiting longer for its admin is reported overdue |
//! | `LANDLORD_API_BODY_LIMIT` | `65536` | largest request body, bytes |
//! | `LANDLORD_API_TIMEOUT` | `10s` | longest time to an answer |
//! | `LANDLORD_API_RATE` | `50` | requests per second per client address (token bucket) |
//! | `LANDLORD_API_BURST` | `100` | bucket size |
//! | `LANDLORD_RELAY_POLL` | `500ms` | how often the outbox is swept for rows left behind |
//! | `LANDLORD_RELAY_GRACE` | `2s` | how old a row must be before the sweep publishes it |

// The OpenAPI document is one `json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod auth;
pub mod clerk;
pub mod events;
pub mod limits;
pub mod openapi;
pub mod problem;
pub mod tenants;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use landlord_contract::Namespace;
use landlord_orchestrator::Plans;
use landlord_orchestrator::outbox::{self, Dispatcher};
use landlord_runtime::{ConfigError, Env, Service};
use sqlx::PgPool;

pub use auth::Tokens;

pub const SERVICE: &str = "gateway";

/// The gateway's own settings (see the table above).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub api_addr: SocketAddr,
    pub jwt_secret: Vec<u8>,
    pub jwt_audience: String,
    pub jwt_issuer: String,
    pub plans: Plans,
    pub clerk: Option<clerk::Settings>,
    pub limits: limits::Limits,
    pub relay_poll: Duration,
    pub relay_grace: Duration,
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let jwt_secret = jwt_secret(env)?;
        let plans_path = env.string("LANDLORD_PLANS", "deploy/plans.toml");
        let plans = Plans::load(&plans_path)?;
        let clerk = match env.raw("LANDLORD_CLERK_WEBHOOK_SECRET") {
            None => None,
            Some(secret) => Some(clerk::Settings {
                secret: clerk::SigningSecret::parse(&secret).map_err(|problem| ConfigError::Invalid {
                    var: "LANDLORD_CLERK_WEBHOOK_SECRET".into(),
                    value: "(hidden)".into(),
                    problem,
                })?,
                plan: env.string("LANDLORD_CLERK_PLAN", "standard"),
                admin_wait: env.duration("LANDLORD_CLERK_ADMIN_WAIT", Duration::from_secs(3600))?,
            }),
        };
        if let Some(clerk) = &clerk
            && plans.get(&clerk.plan).is_none()
        {
            anyhow::bail!("LANDLORD_CLERK_PLAN={:?} is not a plan in {plans_path}", clerk.plan);
        }
        let rate = env.bounded("LANDLORD_API_RATE", 50, 1..=1_000_000)?;
        let burst = env.bounded("LANDLORD_API_BURST", 100, 1..=1_000_000)?;
        Ok(Self {
            api_addr: env.parse("LANDLORD_API_ADDR", SocketAddr::from(([127, 0, 0, 1], 18100)))?,
            jwt_secret,
            jwt_audience: env.string("LANDLORD_JWT_AUDIENCE", "landlord"),
            jwt_issuer: env.string("LANDLORD_JWT_ISSUER", "landlord"),
            plans,
            clerk,
            limits: limits::Limits {
                body_bytes: usize::try_from(env.bounded("LANDLORD_API_BODY_LIMIT", 65_536, 1024..=16 << 20)?)
                    .unwrap_or(65_536),
                timeout: env.duration("LANDLORD_API_TIMEOUT", Duration::from_secs(10))?,
                rate_per_second: rate as f64,
                burst: burst as f64,
            },
            relay_poll: env.duration("LANDLORD_RELAY_POLL", Duration::from_millis(500))?,
            relay_grace: env.duration("LANDLORD_RELAY_GRACE", Duration::from_secs(2))?,
        })
    }

    pub fn tokens(&self) -> Tokens {
        Tokens::new(&self.jwt_secret, &self.jwt_audience, &self.jwt_issuer)
    }
}

/// `LANDLORD_JWT_SECRET`, which `mint-token` needs without the rest.
pub fn jwt_secret(env: &Env) -> Result<Vec<u8>, ConfigError> {
    let secret = env.required("LANDLORD_JWT_SECRET", "the HS256 key bearer tokens are signed with")?;
    if secret.len() < 32 {
        return Err(ConfigError::Invalid {
            var: "LANDLORD_JWT_SECRET".into(),
            value: "(hidden)".into(),
            problem: format!("must be at least 32 bytes, got {}", secret.len()),
        });
    }
    Ok(secret.into_bytes())
}

/// What every handler gets.
#[derive(Debug, Clone)]
pub struct App {
    pub pool: PgPool,
    pub namespace: Namespace,
    pub plans: Arc<Plans>,
    pub dispatcher: Dispatcher,
    pub tokens: Arc<Tokens>,
    pub clerk: Option<Arc<clerk::Settings>>,
    pub jetstream: async_nats::jetstream::Context,
}

impl auth::HasTokens for App {
    fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

/// The API's routes and layers.
pub fn router(app: App, limits: &limits::Limits) -> Router {
    let mut routes = Router::new()
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{id_or_key}", get(tenants::get))
        .route("/v1/tenants/{key}/cancel", post(tenants::cancel))
        .route("/v1/tenants/{key}/retry", post(tenants::retry))
        .route("/v1/events", get(events::feed))
        .route("/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }));
    if app.clerk.is_some() {
        routes = routes
            .route("/v1/webhooks/clerk", post(clerk::webhook))
            .route("/v1/clerk/organizations", get(clerk::organizations));
    }
    let limiter = limits::Limiter::new(limits.clone());
    routes
        .fallback(|| async { problem::Problem::not_found("no such endpoint") })
        .with_state(app)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn_with_state(limiter, limits::guard))
}

/// The running API.
#[derive(Debug, Clone, Copy)]
pub struct Gateway {
    pub api_addr: SocketAddr,
}

/// Migrates the control plane and attaches the API and the outbox relay to
/// `service`; both stop with its shutdown token.
pub async fn attach(service: &mut Service, config: GatewayConfig) -> anyhow::Result<Gateway> {
    let pool = service.database.clone().ok_or_else(|| anyhow::anyhow!("the gateway needs LANDLORD_DATABASE_URL"))?;
    landlord_orchestrator::migrator().run(&pool).await?;
    let (dispatcher, published) = Dispatcher::new(service.publisher.clone());
    service.spawn(outbox::cleaner(pool.clone(), published, service.shutdown_token()));
    service.spawn(outbox::sweep(
        pool.clone(),
        service.publisher.clone(),
        config.relay_grace,
        config.relay_poll,
        None,
        service.shutdown_token(),
    ));
    let app = App {
        pool,
        namespace: service.broker.namespace.clone(),
        plans: Arc::new(config.plans.clone()),
        dispatcher,
        tokens: Arc::new(config.tokens()),
        clerk: config.clerk.clone().map(Arc::new),
        jetstream: service.broker.jetstream.clone(),
    };
    if let Some(clerk) = &app.clerk {
        service.spawn(clerk::report_waiting(app.pool.clone(), clerk.admin_wait, service.shutdown_token()));
    }
    let router = router(app, &config.limits);
    let listener = tokio::net::TcpListener::bind(config.api_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on LANDLORD_API_ADDR={}: {e}", config.api_addr))?;
    let api_addr = listener.local_addr()?;
    let shutdown = service.shutdown_token();
    service.spawn(async move {
        let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "the API server failed");
        }
    });
    tracing::info!(%api_addr, "gateway API listening");
    Ok(Gateway { api_addr })
}
