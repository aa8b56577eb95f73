//! `GET /console/system`: each service's readiness (the `/readyz` of the
//! health addresses in `LANDLORD_CONSOLE_SERVICES`, the gateway's own
//! always), each JetStream consumer's pending and redelivered counts, and
//! sagas per minute with p50/p99 provisioning time over the last hour.

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use landlord_contract::StreamKind;

use super::Console;
use super::html::{self, Result, esc, millis};
use super::session::Operator;
use crate::auth::READ;

/// How long a service has to answer its `/readyz`.
const READYZ_TIMEOUT: Duration = Duration::from_secs(2);

/// Sagas started in the last hour, and provisioning times of those that
/// succeeded in it (milliseconds).
#[derive(sqlx::FromRow)]
struct Throughput {
    started: i64,
    provisioned: i64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

async fn readiness(console: &Console) -> Vec<(String, String, bool, String)> {
    let checks = console.settings.services.iter().map(|(name, base)| {
        let http = console.http.clone();
        let url = format!("{base}/readyz");
        async move {
            let answer = tokio::time::timeout(READYZ_TIMEOUT, http.get(&url).send()).await;
            let (ready, said) = match answer {
                Err(_) => (false, "no answer in 2 s".to_owned()),
                Ok(Err(e)) => (false, landlord_runtime::http::describe(&e)),
                Ok(Ok(r)) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    (status.is_success(), format!("{status} {}", text.chars().take(200).collect::<String>()))
                }
            };
            (name.clone(), url, ready, said)
        }
    });
    futures_util::future::join_all(checks).await
}

/// `GET /console/system`.
pub async fn page(State(console): State<Console>, operator: Operator) -> Result<Response> {
    operator.caller.require(READ)?;
    operator.caller.require_global("see the system page")?;
    let app = &console.app;
    let mut body = String::from(
        r#"<h1>System</h1><h2>Services</h2><table data-testid="services"><thead><tr><th>Service</th><th>Ready</th>
<th>/readyz</th><th>Said</th></tr></thead><tbody>"#,
    );
    let database = sqlx::query("SELECT 1").execute(&app.pool).await.is_ok();
    let broker = app.jetstream.get_stream(app.namespace.stream_name(StreamKind::Events)).await.is_ok();
    body.push_str(&format!(
        r#"<tr data-testid="service" data-name="gateway" data-ready="{ready}"><td>gateway</td><td>{ready}</td><td>(this process)</td>
<td>database {database}, broker {broker}</td></tr>"#,
        ready = database && broker,
    ));
    for (name, url, ready, said) in readiness(&console).await {
        body.push_str(&format!(
            r#"<tr data-testid="service" data-name="{name}" data-ready="{ready}"><td>{name}</td><td>{ready}</td><td>{url}</td><td>{said}</td></tr>"#,
            name = esc(&name),
            url = esc(&url),
            said = esc(&said),
        ));
    }
    if console.settings.services.is_empty() {
        body.push_str(r#"<tr><td colspan="4" class="muted">Set LANDLORD_CONSOLE_SERVICES=name=http://host:port,… to see the other services.</td></tr>"#);
    }
    body.push_str("</tbody></table>");

    body.push_str(
        r#"<h2>Consumers</h2><table data-testid="consumers"><thead><tr><th>Stream</th><th>Consumer</th><th>Pending</th>
<th>Ack pending</th><th>Redelivered</th></tr></thead><tbody>"#,
    );
    for kind in StreamKind::ALL {
        let name = app.namespace.stream_name(kind);
        let Ok(stream) = app.jetstream.get_stream(&name).await else {
            body.push_str(&format!(
                r#"<tr><td>{}</td><td colspan="4" class="error">unavailable</td></tr>"#,
                esc(&name)
            ));
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let Ok(info) = info else { break };
            // The console's and the API's feeds are ordered consumers of one connection each.
            if info.config.durable_name.is_none() {
                continue;
            }
            body.push_str(&format!(
                r#"<tr data-testid="consumer" data-stream="{stream}" data-name="{consumer}"><td>{stream}</td><td>{consumer}</td>
<td data-testid="consumer-pending">{pending}</td><td>{ack}</td><td data-testid="consumer-redelivered">{redelivered}</td></tr>"#,
                stream = esc(&name),
                consumer = esc(&info.name),
                pending = info.num_pending,
                ack = info.num_ack_pending,
                redelivered = info.num_redelivered,
            ));
        }
    }
    body.push_str("</tbody></table>");

    let t: Throughput = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sagas WHERE created_at > now() - interval '1 hour') AS started,
                count(*) AS provisioned,
                percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at) * 1000) AS p50_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at) * 1000) AS p99_ms
         FROM sagas
         WHERE operation = 'provision' AND state = 'succeeded' AND finished_at > now() - interval '1 hour'",
    )
    .fetch_one(&app.pool)
    .await?;
    body.push_str(&format!(
        r#"<h2>Last hour</h2><dl class="facts"><dt>Sagas started per minute</dt><dd data-testid="sagas-per-minute">{per_minute:.2}</dd>
<dt>Provisionings succeeded</dt><dd data-testid="provisioned">{provisioned}</dd>
<dt>Provisioning time p50</dt><dd data-testid="provisioning-p50">{p50}</dd>
<dt>Provisioning time p99</dt><dd data-testid="provisioning-p99">{p99}</dd></dl>"#,
        per_minute = t.started as f64 / 60.0,
        provisioned = t.provisioned,
        p50 = millis(t.p50_ms.map(|m| m as i64)),
        p99 = millis(t.p99_ms.map(|m| m as i64)),
    ));
    Ok(html::page("system", "System", Some(&operator), None, &body).into_response())
}
