//! `/livez`, `/readyz` and `/metrics`, served by every service.
//!
//! Ready means: not shutting down, connected to the broker and, for services
//! with a database, able to run a query within two seconds.

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

#[derive(Debug, Clone)]
pub struct Health {
    pub broker: Broker,
    pub database: Option<PgPool>,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
}

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn ready(State(health): State<Health>) -> Response {
    let broker = if health.broker.is_connected() { "ok" } else { "disconnected" };
    let database = match &health.database {
        None => "not used".to_owned(),
        Some(pool) => {
            let query = sqlx::query("SELECT 1").execute(pool);
            match tokio::time::timeout(Duration::from_secs(2), query).await {
                Ok(Ok(_)) => "ok".to_owned(),
                Ok(Err(error)) => format!("unreachable: {error}"),
                Err(_) => "unreachable: no answer within 2s".to_owned(),
            }
        }
    };
    let draining = health.shutdown.is_cancelled();
    let ok = broker == "ok" && (database == "ok" || database == "not used") && !draining;
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not ready" },
        "broker": broker,
        "database": database,
        "shutting_down": draining,
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn metrics(State(health): State<Health>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], health.metrics.encode())
        .into_response()
}
