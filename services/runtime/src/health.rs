//! `/livez`, `/readyz` and `/metrics`, served by every service.
//!
//! Ready means: not shutting down, connected to the broker, for services
//! with a control-plane database able to run a query, and every
//! [`ReadinessCheck`] the service added passing — each within two seconds.
//! The body says which part is not ready and why:
//!
//! ```json
//! {"status": "not ready", "broker": "ok", "database": "not used",
//!  "checks": {"tenant_data_database": "unreachable: …"}, "shutting_down": false}
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::metrics::Metrics;

/// How long any one readiness probe may take before it counts as failed.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a readiness probe returns: `Err` says why the dependency is not usable.
pub type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dependency a service cannot work without, beyond the broker and the
/// control-plane database (which `/readyz` always reports): its name in
/// the `/readyz` body and how to probe it.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: String,
    probe: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl ReadinessCheck {
    /// A check running `probe` on every `/readyz` (with [`PROBE_TIMEOUT`]).
    pub fn new<F, Fut>(name: impl Into<String>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name: name.into(), probe: Arc::new(move || Box::pin(probe())) }
    }

    /// A PostgreSQL pool that must answer `SELECT 1`.
    pub fn postgres(name: impl Into<String>, pool: PgPool) -> Self {
        Self::new(name, move || {
            let pool = pool.clone();
            async move { ping(&pool).await }
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the probe; `Err` carries the reason shown in `/readyz`.
    pub async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, (self.probe)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        }
    }
}

impl fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessCheck").field("name", &self.name).finish_non_exhaustive()
    }
}

async fn ping(pool: &PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The checks a service added; shared between the [`crate::Service`] that
/// adds them and the endpoint that runs them, so a check can be added after
/// the endpoint is up (the service builds its dependencies after the
/// runtime).
#[derive(Debug, Clone, Default)]
pub struct ReadinessChecks(Arc<RwLock<Vec<ReadinessCheck>>>);

impl ReadinessChecks {
    /// Adds `check`, replacing one of the same name.
    pub fn add(&self, check: ReadinessCheck) {
        let mut checks = self.0.write().unwrap_or_else(PoisonError::into_inner);
        checks.retain(|c| c.name != check.name);
        checks.push(check);
    }

    pub fn list(&self) -> Vec<ReadinessCheck> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Debug, Clone)]
pub struct Health {
    pub broker: Broker,
    pub database: Option<PgPool>,
    pub checks: ReadinessChecks,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    /// Set once [`crate::Service::run`] starts: until then the service's
    /// consumers and routes may not be attached yet.
    pub running: Arc<AtomicBool>,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

fn describe(outcome: Result<(), String>) -> String {
    match outcome {
        Ok(()) => "ok".to_owned(),
        Err(reason) => format!("unreachable: {reason}"),
    }
}

async fn ready(State(health): State<Health>) -> Response {
    let broker = if health.broker.is_connected() { "ok" } else { "disconnected" };
    let checks = health.checks.list();
    // All probes at once: a slow dependency costs /readyz one timeout, not one each.
    let database = async {
        match &health.database {
            None => "not used".to_owned(),
            Some(pool) => describe(ReadinessCheck::postgres("database", pool.clone()).run().await),
        }
    };
    let extra = futures_util::future::join_all(checks.iter().map(|check| async move { describe(check.run().await) }));
    let (database, extra) = tokio::join!(database, extra);
    let draining = health.shutdown.is_cancelled();
    let running = health.running.load(Ordering::Acquire);
    let ok = running
        && broker == "ok"
        && (database == "ok" || database == "not used")
        && extra.iter().all(|status| status == "ok")
        && !draining;
    let checks: serde_json::Map<String, serde_json::Value> =
        checks.iter().zip(extra).map(|(check, status)| (check.name.clone(), status.into())).collect();
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not ready" },
        "broker": broker,
        "database": database,
        "checks": checks,
        "running": running,
        "shutting_down": draining,
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(health): State<Health>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], health.metrics.encode())
        .into_response()
}
