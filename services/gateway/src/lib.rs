//! The gateway: how people and other systems reach Landlord without
//! speaking NATS (issue 6).
//!
//! - `/v1/tenants`: ask for a tenant (`Idempotency-Key` required, 202 once
//!   durably accepted), follow it by id or key (status, resources, saga
//!   progress step by step), list with filters and cursor pagination, cancel
//!   a running provisioning, retry a FAILED one; after ACTIVE suspend,
//!   resume, update (`PATCH`), offboard (`DELETE`, with a grace period),
//!   restore and export, each a saga asked of the control plane, one at a
//!   time per tenant; read the audit log ([`tenants`]; docs/lifecycle.md);
//! - `/v1/webhooks/clerk`: the Clerk bridge, Svix-verified and de-duplicated
//!   on `svix-id` in PostgreSQL; an organization and its `org:admin`
//!   membership, in either order, become one `TenantRequested`
//!   ([`clerk`]), or the admin is looked up in Clerk's Backend API
//!   ([`clerk::backend`]); `/v1/clerk/organizations` reports organizations
//!   still waiting for their admin; every Clerk event is republished as a
//!   protobuf `ClerkEvent`;
//! - `/v1/events`: lifecycle events as Server-Sent Events, filtered by
//!   tenant and type, resumable with `Last-Event-ID` (the stream sequence)
//!   ([`events`]);
//! - `/v1/webhook-endpoints`: outbound webhooks — lifecycle events POSTed
//!   to endpoints an operator registers, signed as Svix signs, retried with
//!   backoff for a day, each attempt visible ([`outbound`],
//!   docs/webhooks.md; `LANDLORD_WEBHOOK_*` in its docs);
//! - `/v1/openapi.json`: the OpenAPI 3.1 document ([`openapi`]), also
//!   committed as `services/gateway/openapi.json`;
//! - bearer JWTs with scopes `tenants:read` / `tenants:write`, HS256 with a
//!   shared secret and/or RS256 with keys from a JWKS ([`jwks`]); every
//!   401/403/503 says why ([`auth`]); `landlord-gateway mint-token` mints an
//!   admin token from the configured secret;
//! - limits: body size, a per-request timeout, a per-client rate limit (on
//!   the Clerk webhook only for deliveries whose signature does not check:
//!   Svix sends every signed one from few addresses) and one structured
//!   access-log line per request ([`limits`]);
//! - request bodies are JSON declared as `application/json` ([`body`]);
//! - `/livez`, `/readyz`, `/metrics` on `LANDLORD_HTTP_ADDR` like every
//!   service (the runtime's health endpoint), the API on `LANDLORD_API_ADDR`.
//!
//! Everything the gateway publishes — `TenantRequested`, `CancelSaga`, Clerk
//! events — is written to the control-plane `outbox` in the transaction that
//! records the request, and relayed by the orchestrator's outbox code
//! ([`landlord_control_plane::outbox`]): published right after commit with
//! `Nats-Msg-Id`, swept later if that failed — by the gateway's own sweep,
//! which takes only rows written for [`outbox::Relay::Gateway`] (the
//! orchestrator may not publish TenantRequested; an operation asked for is
//! the orchestrator's to relay). The control-plane schema has
//! one migrator, the orchestrator's; the gateway runs it at start too, so
//! either may start first. Errors are RFC 9457 problem details
//! ([`problem`]).
//!
//! Every handler gets the one [`App`] ([`state`]), built by [`attach`].
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables
//! (`LANDLORD_DATABASE_URL` is required: the orchestrator's database):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_API_ADDR` | `127.0.0.1:18100` | where the API listens |
//! | `LANDLORD_JWT_SECRET` | — | HS256 key for bearer tokens, at least 32 bytes; this or `LANDLORD_JWKS_URL` is required, both may be set |
//! | `LANDLORD_JWKS_URL` | — | JWKS of the issuer of RS256 tokens, `https://` (or `http://`) |
//! | `LANDLORD_JWKS_REFRESH` | `5m` | how often the JWKS is refetched in the background |
//! | `LANDLORD_JWKS_REFETCH_MIN` | `10s` | least time between refetches forced by tokens with an unknown `kid` |
//! | `LANDLORD_JWT_AUDIENCE` | `landlord` | required `aud` of tokens |
//! | `LANDLORD_JWT_ISSUER` | `landlord` | required `iss` of tokens |
//! | `LANDLORD_JWT_TENANT_CLAIM` | `landlord_tenant` | claim of RS256 tokens naming the one tenant the token is scoped to: a tenant id, key or Clerk organization id; a dotted name is also a path (`o.id`) ([`scope`], docs/auth.md) |
//! | `LANDLORD_PLANS` | `deploy/plans.toml` | plans file, the orchestrator's: requests are validated against it |
//! | `LANDLORD_CLERK_WEBHOOK_SECRET` | — | Svix signing secret `whsec_…`; unset: no Clerk endpoints |
//! | `LANDLORD_CLERK_PLAN` | `standard` | plan of tenants made from Clerk organizations |
//! | `LANDLORD_CLERK_PLAN_KEY` | `plan` | member of an organization's `public_metadata` naming its own plan |
//! | `LANDLORD_CLERK_DELIVERY_RETENTION` | `7d` | how long Clerk deliveries are kept for de-duplication (Svix retries ~28 h) |
//! | `LANDLORD_CLERK_MEMBER_ROLE` | `member` | realm role of Clerk members whose role is not `org:admin` (those get `realm-admin`) |
//! | `LANDLORD_CLERK_MEMBER_SWEEP` | `5s` | how often memberships waiting for their tenant to be ACTIVE are looked at |
//! | `LANDLORD_CLERK_ADMIN_WAIT` | `1h` | an organization waiting longer for its admin is reported overdue |
//! | `LANDLORD_CLERK_SECRET_KEY` | — | Clerk Backend API key (`sk_…`); set: admins are also looked up in the Backend API |
//! | `LANDLORD_CLERK_API_URL` | `https://api.clerk.com` | the Backend API |
//! | `LANDLORD_TLS_CA_FILE` | — | PEM file of CA certificates trusted for outbound HTTPS besides the system's (a private CA) |
//! | `LANDLORD_API_BODY_LIMIT` | `65536` | largest request body, bytes |
//! | `LANDLORD_API_TIMEOUT` | `10s` | longest time to an answer |
//! | `LANDLORD_API_RATE` | `50` | requests per second per client address (token bucket); raise it for trusted callers behind one address |
//! | `LANDLORD_API_BURST` | `100` | bucket size |
//! | `LANDLORD_RELAY_POLL` | `500ms` | how often the outbox is swept for rows left behind |
//! | `LANDLORD_RELAY_GRACE` | `2s` | how old a row must be before the sweep publishes it |
//! | `LANDLORD_DELETION_GRACE` | `30d` | an offboarding's grace period when the request names none |
//! | `LANDLORD_DELETION_GRACE_MAX` | `90d` | the longest grace period a request may ask for |
//! | `LANDLORD_SIGNUP_TTL` | `24h` | how long a sign-up's verification link lives ([`signup`], docs/signup.md) |
//! | `LANDLORD_PUBLIC_URL` | the request's `Host` | the gateway's address as browsers reach it, for the links mailed (and, when `https://`, console cookies are `Secure`) |
//! | `LANDLORD_CONSOLE_SERVICES` | — | `name=http://host:port,…`: health addresses whose `/readyz` the console's system page shows ([`console`], docs/console.md) |
//! | `LANDLORD_OIDC_ISSUER` | — | OIDC issuer the console signs in with (code flow with PKCE, [`console::oidc`], docs/console.md); unset: API-token sign-in only |
//! | `LANDLORD_OIDC_CLIENT_ID` | — | the console's client at that issuer (required with it) |
//! | `LANDLORD_OIDC_CLIENT_SECRET` | — | its secret: a confidential client; unset: a public client (PKCE only) |
//! | `LANDLORD_OIDC_SCOPES` | `openid` | scopes asked for (`openid` always among them) |
//! | `LANDLORD_OIDC_REDIRECT_URL` | `LANDLORD_PUBLIC_URL` + `/console/oidc/callback` | the callback registered at the issuer; one of the two is required with the issuer |

// The OpenAPI document is one `json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod auth;
pub mod body;
pub mod clerk;
pub mod console;
pub mod events;
pub mod jwks;
pub mod limits;
pub mod openapi;
pub mod outbound;
pub mod problem;
pub mod scope;
pub mod signup;
pub mod state;
pub mod svix;
pub mod tenants;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use landlord_control_plane::Plans;
use landlord_control_plane::outbox::{self, Dispatcher};
use landlord_runtime::http::ExtraRoots;
use landlord_runtime::{ConfigError, Env, Service};

pub use auth::{Tokens, Verifier};
pub use state::App;

pub const SERVICE: &str = "gateway";

/// The gateway's own settings (see the table above).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub api_addr: SocketAddr,
    /// HS256 secret; `None`: HS256 tokens are refused.
    pub jwt_secret: Option<Vec<u8>>,
    /// Where RS256 keys come from; `None`: RS256 tokens are refused.
    pub jwks: Option<jwks::JwksSettings>,
    pub jwt_audience: String,
    pub jwt_issuer: String,
    /// The claim of RS256 tokens holding their tenant (HS256 tokens use
    /// `landlord_tenant`).
    pub jwt_tenant_claim: String,
    pub plans: Plans,
    pub clerk: Option<clerk::Settings>,
    pub limits: limits::Limits,
    pub relay_poll: Duration,
    pub relay_grace: Duration,
    /// An offboarding's grace period: default and maximum.
    pub deletion_grace: tenants::Grace,
    /// How outbound webhooks are sent.
    pub outbound: outbound::Settings,
}

impl GatewayConfig {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let jwt_secret = env.raw("LANDLORD_JWT_SECRET").map(|_| jwt_secret(env)).transpose()?;
        let roots = ExtraRoots::from_env(env)?;
        let jwks = match env.raw("LANDLORD_JWKS_URL") {
            None => None,
            Some(url) => Some(jwks::JwksSettings {
                url: http_url("LANDLORD_JWKS_URL", &url)?,
                refresh: env.duration("LANDLORD_JWKS_REFRESH", Duration::from_secs(300))?,
                min_refetch: env.duration("LANDLORD_JWKS_REFETCH_MIN", Duration::from_secs(10))?,
                timeout: Duration::from_secs(5),
                roots: roots.clone(),
            }),
        };
        if jwt_secret.is_none() && jwks.is_none() {
            anyhow::bail!(
                "no way to check bearer tokens: set LANDLORD_JWT_SECRET (HS256, at least 32 bytes), \
                 LANDLORD_JWKS_URL (RS256 keys of your issuer), or both"
            );
        }
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
                plan_key: env.string("LANDLORD_CLERK_PLAN_KEY", "plan"),
                delivery_retention: clerk::settings::delivery_retention(
                    env.duration("LANDLORD_CLERK_DELIVERY_RETENTION", clerk::DELIVERY_RETENTION)?,
                )
                .map_err(|problem| ConfigError::Invalid {
                    var: "LANDLORD_CLERK_DELIVERY_RETENTION".into(),
                    value: env.string("LANDLORD_CLERK_DELIVERY_RETENTION", ""),
                    problem,
                })?,
                admin_wait: env.duration("LANDLORD_CLERK_ADMIN_WAIT", Duration::from_secs(3600))?,
                members: clerk::MemberSettings::from_env(env)?,
                backend: match env.raw("LANDLORD_CLERK_SECRET_KEY") {
                    None => None,
                    Some(secret_key) => Some(clerk::BackendSettings {
                        url: http_url(
                            "LANDLORD_CLERK_API_URL",
                            &env.string("LANDLORD_CLERK_API_URL", "https://api.clerk.com"),
                        )?,
                        secret_key,
                        attempts: 8,
                        backoff: Duration::from_millis(500),
                        max_backoff: Duration::from_secs(30),
                        timeout: Duration::from_secs(10),
                        roots,
                    }),
                },
            }),
        };
        if let Some(clerk) = &clerk
            && plans.get(&clerk.plan).is_none()
        {
            anyhow::bail!("LANDLORD_CLERK_PLAN={:?} is not a plan in {plans_path}", clerk.plan);
        }
        let deletion_grace = deletion_grace(env)?;
        let outbound = outbound::Settings::from_env(env, ExtraRoots::from_env(env)?)?;
        let rate = env.bounded("LANDLORD_API_RATE", 50, 1..=1_000_000)?;
        let burst = env.bounded("LANDLORD_API_BURST", 100, 1..=1_000_000)?;
        Ok(Self {
            api_addr: env.parse("LANDLORD_API_ADDR", SocketAddr::from(([127, 0, 0, 1], 18100)))?,
            jwt_secret,
            jwks,
            jwt_audience: env.string("LANDLORD_JWT_AUDIENCE", "landlord"),
            jwt_issuer: env.string("LANDLORD_JWT_ISSUER", "landlord"),
            jwt_tenant_claim: tenant_claim(env)?,
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
            deletion_grace,
            outbound,
        })
    }

    /// The HS256 key, when a secret is configured (it also mints tokens).
    pub fn tokens(&self) -> Option<Tokens> {
        self.jwt_secret.as_ref().map(|secret| Tokens::new(secret, &self.jwt_audience, &self.jwt_issuer))
    }
}

/// `LANDLORD_DELETION_GRACE` and `LANDLORD_DELETION_GRACE_MAX`: the
/// default may not exceed the maximum, and the maximum is bounded (ten
/// years) so that `now + grace` is always a time PostgreSQL can hold.
fn deletion_grace(env: &Env) -> Result<tenants::Grace, ConfigError> {
    const LIMIT: Duration = Duration::from_secs(10 * 366 * 24 * 3600);
    let defaults = tenants::Grace::default();
    let max = env.duration("LANDLORD_DELETION_GRACE_MAX", defaults.max)?;
    if max > LIMIT {
        return Err(ConfigError::Invalid {
            var: "LANDLORD_DELETION_GRACE_MAX".into(),
            value: format!("{}s", max.as_secs()),
            problem: "must be at most ten years".into(),
        });
    }
    let default = env.duration("LANDLORD_DELETION_GRACE", defaults.default.min(max))?;
    if default > max {
        return Err(ConfigError::Invalid {
            var: "LANDLORD_DELETION_GRACE".into(),
            value: format!("{}s", default.as_secs()),
            problem: format!("must not exceed LANDLORD_DELETION_GRACE_MAX ({}s)", max.as_secs()),
        });
    }
    Ok(tenants::Grace { default, max })
}

/// `LANDLORD_JWT_TENANT_CLAIM`: a claim name, 1 to 100 visible ASCII
/// characters.
fn tenant_claim(env: &Env) -> Result<String, ConfigError> {
    let name = env.string("LANDLORD_JWT_TENANT_CLAIM", scope::TENANT_CLAIM);
    if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ConfigError::Invalid {
            var: "LANDLORD_JWT_TENANT_CLAIM".into(),
            value: name,
            problem: "must be a claim name: 1 to 100 visible ASCII characters".into(),
        });
    }
    Ok(name)
}

/// An `https://` or `http://` URL, without a trailing slash.
fn http_url(var: &str, value: &str) -> Result<String, ConfigError> {
    Ok(http_url_as_given(var, value)?.trim_end_matches('/').to_owned())
}

/// An `https://` or `http://` URL with a host, as given (an OIDC issuer
/// is compared character for character, its trailing slash included).
pub(crate) fn http_url_as_given(var: &str, value: &str) -> Result<String, ConfigError> {
    let value = value.trim();
    let invalid = |problem: &str| ConfigError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    let url = reqwest::Url::parse(value).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(invalid("expected an https:// or http:// URL with a host"));
    }
    Ok(value.to_owned())
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

/// The API's routes and layers, and the console's (its failures are
/// pages, not problem+json).
pub fn router(app: App, limits: &limits::Limits, console: console::Console) -> Router {
    // The routes that answer tenant-scoped tokens themselves (another
    // tenant is a missing one, lists and the feed are filtered); on every
    // other route the Caller extractor refuses such a token (auth.rs).
    let scoped = Router::new()
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        // PATCH and DELETE take a key; the segment's name is shared with GET.
        .route("/v1/tenants/{id_or_key}", get(tenants::get).patch(tenants::update).delete(tenants::delete))
        .route("/v1/tenants/{key}/cancel", post(tenants::cancel))
        .route("/v1/tenants/{key}/retry", post(tenants::retry))
        .route("/v1/tenants/{key}/suspend", post(tenants::suspend))
        .route("/v1/tenants/{key}/resume", post(tenants::resume))
        .route("/v1/tenants/{key}/restore", post(tenants::restore))
        .route("/v1/tenants/{key}/export", post(tenants::export))
        .route("/v1/tenants/{key}/audit", get(tenants::audit))
        .route("/v1/events", get(events::feed));
    let mut routes = Router::new()
        .merge(auth::scope_aware(scoped))
        .route("/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }));
    routes = routes.merge(signup::routes(app.clone())).merge(outbound::routes());
    if app.clerk.is_some() {
        routes = routes
            .route("/v1/webhooks/clerk", post(clerk::webhook))
            .route("/v1/clerk/organizations", get(clerk::organizations));
    }
    let limiter = limits::Limiter::new(limits.clone());
    let console = console::routes(console)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn_with_state(limiter.clone(), limits::guard));
    routes
        .fallback(|| async { problem::Problem::not_found("no such endpoint") })
        .with_state(app)
        .layer(DefaultBodyLimit::max(limits.body_bytes))
        .layer(axum::middleware::from_fn_with_state(limiter, limits::guard))
        // Outermost: whatever answered an error, it is problem+json.
        .layer(axum::middleware::from_fn_with_state(limits.body_bytes, problem::every_error_is_a_problem))
        .merge(console)
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
    landlord_control_plane::migrator().run(&pool).await?;
    let (dispatcher, published) = Dispatcher::new(service.publisher.clone());
    service.spawn(outbox::cleaner(pool.clone(), published, outbox::CLEAN_WINDOW, service.shutdown_token()));
    service.spawn(outbox::sweep(
        pool.clone(),
        service.publisher.clone(),
        outbox::Relay::Gateway,
        config.relay_grace,
        config.relay_poll,
        None,
        service.shutdown_token(),
    ));
    let jwks = match &config.jwks {
        None => None,
        Some(settings) => {
            let jwks = Arc::new(jwks::Jwks::new(settings.clone())?);
            // Not fatal: a token with an unknown key refetches, and a JWKS
            // that is down is answered 503 until it is back.
            if let Ok(count) = jwks.fetch().await {
                tracing::info!(url = %settings.url, count, "JWKS keys loaded");
            }
            service.spawn(jwks.clone().refresh(service.shutdown_token()));
            Some(jwks)
        }
    };
    let verifier = Verifier::new(config.tokens(), jwks, &config.jwt_audience, &config.jwt_issuer)
        .with_tenant_claim(&config.jwt_tenant_claim);
    let backend = config.clerk.as_ref().and_then(|c| c.backend.clone());
    let (lookups, lookup_queue) = clerk::Lookups::new();
    let app = App {
        pool,
        namespace: service.broker.namespace.clone(),
        plans: Arc::new(config.plans.clone()),
        dispatcher,
        verifier: Arc::new(verifier),
        clerk: config.clerk.clone().map(Arc::new),
        lookups: backend.is_some().then_some(lookups),
        jetstream: service.broker.jetstream.clone(),
        deletion_grace: config.deletion_grace,
    };
    if let Some(clerk) = &app.clerk {
        service.spawn(clerk::report_waiting(app.pool.clone(), clerk.admin_wait, service.shutdown_token()));
        service.spawn(clerk::prune(app.pool.clone(), clerk.delivery_retention, service.shutdown_token()));
        service.spawn(clerk::sweep_members(app.clone(), clerk.members.sweep, service.shutdown_token()));
    }
    if let Some(settings) = backend {
        let backend = Arc::new(clerk::Backend::new(settings)?);
        service.spawn(clerk::run(app.clone(), backend, lookup_queue, service.shutdown_token()));
    }
    // Refuse to start with sign-up settings that do not parse (the routes read them again).
    signup::Settings::from_env(&Env::process())?;
    outbound::attach(service, app.pool.clone(), config.outbound.clone()).await?;
    service.spawn(signup::prune(app.pool.clone(), service.shutdown_token()));
    let console = console::Console::new(
        app.clone(),
        console::Keys::new(config.jwt_secret.as_deref())?,
        console::Settings::from_env(&Env::process())?,
    )?;
    let router = router(app, &config.limits, console);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> anyhow::Result<GatewayConfig> {
        let plans = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/plans.toml");
        let mut all = vec![("LANDLORD_PLANS", plans)];
        all.extend_from_slice(pairs);
        GatewayConfig::from_env(&Env::from_pairs(all))
    }

    #[test]
    fn a_secret_or_a_jwks_is_required_and_urls_must_be_http_or_https() {
        const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
        let error = config(&[]).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_JWT_SECRET") && error.contains("LANDLORD_JWKS_URL"), "{error}");
        let only_secret = config(&[("LANDLORD_JWT_SECRET", SECRET)]).unwrap();
        assert!(only_secret.jwks.is_none() && only_secret.tokens().is_some());
        let only_jwks = config(&[("LANDLORD_JWKS_URL", "http://idp.internal/jwks.json/")]).unwrap();
        let jwks = only_jwks.jwks.as_ref().unwrap();
        assert_eq!(jwks.url, "http://idp.internal/jwks.json");
        assert_eq!((jwks.refresh, jwks.min_refetch), (Duration::from_secs(300), Duration::from_secs(10)));
        assert!(only_jwks.tokens().is_none());
        let https = config(&[("LANDLORD_JWKS_URL", "https://idp.example/jwks.json")]).unwrap();
        assert_eq!(https.jwks.unwrap().url, "https://idp.example/jwks.json");
        let error = config(&[("LANDLORD_JWKS_URL", "ftp://idp.example/jwks.json")]).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_JWKS_URL") && error.contains("https:// or http://"), "{error}");
        let missing_ca = [("LANDLORD_JWT_SECRET", SECRET), ("LANDLORD_TLS_CA_FILE", "/nonexistent/ca.pem")];
        let error = config(&missing_ca).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_TLS_CA_FILE") && error.contains("cannot read"), "{error}");
        let clerk = [
            ("LANDLORD_JWT_SECRET", SECRET),
            ("LANDLORD_CLERK_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("LANDLORD_CLERK_SECRET_KEY", "sk_test_x"),
        ];
        let backend = config(&clerk).unwrap().clerk.unwrap().backend.unwrap();
        assert_eq!(backend.url, "https://api.clerk.com");
        let mut proxied = clerk.to_vec();
        proxied.push(("LANDLORD_CLERK_API_URL", "http://clerk-egress:8080"));
        let backend = config(&proxied).unwrap().clerk.unwrap().backend.unwrap();
        assert_eq!((backend.url.as_str(), backend.secret_key.as_str()), ("http://clerk-egress:8080", "sk_test_x"));
    }

    #[test]
    fn the_deletion_grace_defaults_to_30_days_and_may_not_exceed_its_maximum() {
        const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
        const DAY: u64 = 24 * 3600;
        let defaults = config(&[("LANDLORD_JWT_SECRET", SECRET)]).unwrap().deletion_grace;
        assert_eq!((defaults.default, defaults.max), (Duration::from_secs(30 * DAY), Duration::from_secs(90 * DAY)));
        let set = [
            ("LANDLORD_JWT_SECRET", SECRET),
            ("LANDLORD_DELETION_GRACE", "7d"),
            ("LANDLORD_DELETION_GRACE_MAX", "14d"),
        ];
        let grace = config(&set).unwrap().deletion_grace;
        assert_eq!((grace.default, grace.max), (Duration::from_secs(7 * DAY), Duration::from_secs(14 * DAY)));
        // A maximum below the 30-day default lowers the default with it.
        let low = config(&[("LANDLORD_JWT_SECRET", SECRET), ("LANDLORD_DELETION_GRACE_MAX", "1d")]).unwrap();
        assert_eq!(low.deletion_grace.default, Duration::from_secs(DAY));
        let over = [("LANDLORD_JWT_SECRET", SECRET), ("LANDLORD_DELETION_GRACE", "100d")];
        let error = config(&over).unwrap_err().to_string();
        assert!(error.contains("LANDLORD_DELETION_GRACE") && error.contains("MAX"), "{error}");
        let huge = [("LANDLORD_JWT_SECRET", SECRET), ("LANDLORD_DELETION_GRACE_MAX", "20years")];
        assert!(config(&huge).unwrap_err().to_string().contains("ten years"));
    }
}
