//! The operator console (issue 26 item 1): server-rendered HTML pages
//! under `/console`, served by the gateway itself, with one small script
//! and one stylesheet built into the binary (nothing is fetched from
//! outside).
//!
//! - sign-in exchanges an API token for a signed session cookie
//!   ([`session`]), or, with `LANDLORD_OIDC_ISSUER`, runs the OIDC code
//!   flow with PKCE to the same cookie ([`oidc`]); every POST carries the
//!   session's CSRF token;
//! - `/console`: tenants with filters, search and keyset pagination
//!   ([`list`]); bulk actions on the current filter ([`bulk`]);
//! - `/console/tenants/{key-or-id}`: a tenant, every saga's steps, its
//!   audit log and live events ([`tenant`]); actions ([`actions`]) go
//!   through the very handlers of `/v1/tenants`, so their checks, scopes
//!   and audit rows are the API's;
//! - `/console/events`: the events stream as JSON Server-Sent Events, and
//!   JSON fragments to poll when `EventSource` fails ([`live`]);
//! - `/console/dlq` and `/console/system` ([`dlq`], [`system`]).
//!
//! Pages are plain `format!` over escaped values ([`html`]): no template
//! engine. docs/console.md says what is decided and what is not done.

pub mod actions;
pub mod bulk;
pub mod dlq;
pub mod filter;
pub mod html;
pub mod list;
pub mod live;
pub mod login;
pub mod oidc;
pub mod session;
pub mod system;
pub mod tenant;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use landlord_runtime::Env;

use crate::state::App;

pub use session::{Keys, Operator};

/// What the console is configured with (besides the gateway's own).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `LANDLORD_CONSOLE_SERVICES=name=http://host:port,...`: each
    /// service's health address, whose `/readyz` the system page asks.
    pub services: Vec<(String, String)>,
    /// `LANDLORD_PUBLIC_URL` is `https://…`: cookies are always `Secure`.
    pub public_https: bool,
    /// `LANDLORD_OIDC_*`: sign-in through an OIDC issuer ([`oidc`]).
    pub oidc: Option<oidc::Settings>,
}

impl Settings {
    pub fn from_env(env: &Env) -> anyhow::Result<Self> {
        let mut services = Vec::new();
        if let Some(raw) = env.raw("LANDLORD_CONSOLE_SERVICES") {
            for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let Some((name, url)) = item.split_once('=') else {
                    anyhow::bail!("LANDLORD_CONSOLE_SERVICES: {item:?} is not name=url");
                };
                let url = url.trim().trim_end_matches('/');
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "LANDLORD_CONSOLE_SERVICES: {name}'s address {url:?} is not an http(s):// URL"
                );
                services.push((name.trim().to_owned(), url.to_owned()));
            }
        }
        let public_https = env.raw("LANDLORD_PUBLIC_URL").is_some_and(|u| u.starts_with("https://"));
        Ok(Self { services, public_https, oidc: oidc::Settings::from_env(env)? })
    }
}

/// The console's state: the API's, the session keys and its settings.
#[derive(Debug, Clone)]
pub struct Console {
    pub app: App,
    pub keys: Arc<Keys>,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    /// The OIDC client, when `LANDLORD_OIDC_ISSUER` is set.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

impl Console {
    pub fn new(app: App, keys: Keys, settings: Settings) -> anyhow::Result<Self> {
        let http = landlord_runtime::http::client()?;
        let oidc = settings.oidc.clone().map(oidc::Oidc::new).transpose()?.map(Arc::new);
        Ok(Self { app, keys: Arc::new(keys), settings: Arc::new(settings), http, oidc })
    }
}

const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// The console's routes, with their state.
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/console", get(list::page))
        .route("/console/", get(list::page))
        .route("/console/login", get(login::form).post(login::sign_in))
        .route("/console/logout", post(login::sign_out))
        .route("/console/oidc/start", get(oidc::start))
        .route(oidc::CALLBACK, get(oidc::callback))
        .route("/console/tenants/{id_or_key}", get(tenant::page))
        .route("/console/tenants/{id_or_key}/live.json", get(live::tenant_fragment))
        .route("/console/tenants/{id_or_key}/{action}", post(actions::act))
        .route("/console/live.json", get(live::list_fragment))
        .route("/console/events", get(live::feed))
        .route("/console/bulk", post(bulk::preview))
        .route("/console/bulk/run", post(bulk::run))
        .route("/console/dlq", get(dlq::page))
        .route("/console/dlq/redrive", post(dlq::redrive_all))
        .route("/console/dlq/{sequence}/redrive", post(dlq::redrive_one))
        .route("/console/dlq/{sequence}/discard", post(dlq::discard))
        .route("/console/system", get(system::page))
        .route("/console/assets/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console/assets/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .with_state(console)
}

fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}
