//! `/console/dlq`: dead letters — the runtime parks a message it could not
//! handle on the dead-letter stream with `landlord-dlq-*` headers (where it
//! came from, why, after how many deliveries). Listed, the message decoded
//! to JSON, redriven (published again on its original subject with its
//! original headers and a message id of its own, then removed) one at a
//! time or all matching a subject, or discarded with a reason (logged).
//! The operations are the runtime's `dead_letters`, which the CLI's
//! `landlord dlq` verbs use too.

use async_nats::jetstream::stream::Stream;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap as HttpHeaders;
use axum::response::{IntoResponse, Response};
use landlord_contract::StreamKind;
use landlord_runtime::dead_letters::{self, DeadLetter};

use super::Console;
use super::filter::Fields;
use super::html::{self, Result, esc};
use super::session::Operator;
use crate::auth::{READ, WRITE};
use crate::problem::Problem;

/// The most dead letters a page lists (and "redrive all" takes).
const MAX_LETTERS: usize = 500;

fn unavailable(e: dead_letters::Error) -> Problem {
    Problem::unavailable("the dead-letter stream", &e)
}

async fn stream(console: &Console) -> Result<(Stream, String)> {
    let name = console.app.namespace.stream_name(StreamKind::DeadLetter);
    let stream = console
        .app
        .jetstream
        .get_stream(&name)
        .await
        .map_err(|e| Problem::unavailable("the dead-letter stream", &e))?;
    Ok((stream, name))
}

/// Dead letters whose original subject contains `subject`, oldest first.
async fn letters(stream: &mut Stream, subject: Option<&str>) -> Result<Vec<DeadLetter>> {
    Ok(dead_letters::list(stream, subject, MAX_LETTERS).await.map_err(unavailable)?)
}

/// `GET /console/dlq[?subject=…]`.
pub async fn page(State(console): State<Console>, operator: Operator, RawQuery(query): RawQuery) -> Result<Response> {
    operator.caller.require(READ)?;
    operator.caller.require_global("read dead letters")?;
    let fields = Fields::query(query.as_deref());
    let subject = fields.get("subject");
    let (mut stream, _) = stream(&console).await?;
    let found = letters(&mut stream, subject).await?;
    let csrf = html::csrf_field(&operator);
    let mut body = format!(
        r#"<h1>Dead letters</h1>
<form method="get" action="/console/dlq"><label>Subject contains <input name="subject" value="{subject}" data-testid="dlq-filter"></label>
<button>Filter</button></form><p data-testid="dlq-count">{count} dead letter(s){capped}</p>"#,
        subject = esc(subject.unwrap_or("")),
        count = found.len(),
        capped = if found.len() >= MAX_LETTERS { format!(" (the first {MAX_LETTERS})") } else { String::new() },
    );
    let write = operator.can(WRITE);
    if write && !found.is_empty() {
        body.push_str(&format!(
            r#"<form method="post" action="/console/dlq/redrive">{csrf}<input type="hidden" name="subject" value="{}">
<button data-testid="dlq-redrive-all">Redrive all {} matching</button></form>"#,
            esc(subject.unwrap_or("")),
            found.len()
        ));
    }
    body.push_str(
        r#"<table data-testid="dlq"><thead><tr><th>Seq</th><th>When</th><th>Subject</th><th>Tenant</th><th>Deliveries</th>
<th>Reason</th><th>Message</th><th></th></tr></thead><tbody>"#,
    );
    for l in &found {
        let actions = if write {
            format!(
                r#"<form method="post" action="/console/dlq/{seq}/redrive">{csrf}<button data-testid="dlq-redrive">Redrive</button></form>
<form method="post" action="/console/dlq/{seq}/discard">{csrf}<input name="reason" required placeholder="reason" data-testid="dlq-discard-reason" size="14">
<button data-testid="dlq-discard">Discard</button></form>"#,
                seq = l.sequence
            )
        } else {
            String::new()
        };
        body.push_str(&format!(
            r#"<tr data-testid="dlq-row" data-sequence="{seq}"><td>{seq}</td><td data-testid="dlq-time">{time}</td>
<td data-testid="dlq-subject">{subject}</td><td>{tenant}</td><td data-testid="dlq-deliveries">{deliveries}</td>
<td data-testid="dlq-reason" class="error">{reason}</td>
<td><small>{ce_type} · {consumer}</small><pre data-testid="dlq-message">{message}</pre></td><td>{actions}</td></tr>"#,
            seq = l.sequence,
            time = esc(&l.time),
            subject = esc(&l.subject),
            tenant = esc(&l.tenant),
            deliveries = l.deliveries.map(|d| d.to_string()).unwrap_or_default(),
            reason = esc(&l.reason),
            ce_type = esc(&l.ce_type),
            consumer = esc(&l.consumer),
            message = esc(&serde_json::to_string_pretty(&l.decoded()).unwrap_or_default()),
        ));
    }
    body.push_str("</tbody></table>");
    Ok(html::page("dlq", "Dead letters", Some(&operator), None, &body).into_response())
}

/// Publishes dead letter `sequence` on its original subject, then removes it.
async fn redrive(console: &Console, stream: &Stream, stream_name: &str, sequence: u64) -> Result<String, String> {
    dead_letters::redrive(&console.app.jetstream, stream, stream_name, sequence).await.map_err(|e| e.to_string())
}

fn results_page(operator: &Operator, verb: &str, results: &[(u64, Result<String, String>)]) -> Response {
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let rows: String = results
        .iter()
        .map(|(seq, r)| {
            let (ok, detail) = match r {
                Ok(d) => (true, d.clone()),
                Err(e) => (false, e.clone()),
            };
            format!(
                r#"<tr data-testid="bulk-result" data-key="{seq}" data-ok="{ok}"><td>{seq}</td><td>{}</td><td data-testid="bulk-result-detail">{}</td></tr>"#,
                if ok { "done" } else { "failed" },
                esc(&detail)
            )
        })
        .collect();
    let body = format!(
        r#"<h1>Dead letters: {verb}</h1><p data-testid="bulk-summary">{} done, {failed} failed</p>
<table><tbody>{rows}</tbody></table><p><a href="/console/dlq">Back to dead letters</a></p>"#,
        results.len() - failed
    );
    html::page("bulk-result", verb, Some(operator), None, &body).into_response()
}

/// `POST /console/dlq/{sequence}/redrive`.
pub async fn redrive_one(
    State(console): State<Console>,
    operator: Operator,
    Path(sequence): Path<u64>,
    headers: HttpHeaders,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    operator.caller.require(WRITE)?;
    operator.caller.require_global("act on dead letters")?;
    let (stream, name) = stream(&console).await?;
    let result = redrive(&console, &stream, &name, sequence).await;
    tracing::info!(sequence, ok = result.is_ok(), by = %operator.session.sub, "console dead letter redrive");
    Ok(results_page(&operator, "redrive", &[(sequence, result)]))
}

/// `POST /console/dlq/redrive` (`subject`): every dead letter matching.
pub async fn redrive_all(
    State(console): State<Console>,
    operator: Operator,
    headers: HttpHeaders,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    operator.caller.require(WRITE)?;
    operator.caller.require_global("act on dead letters")?;
    let (mut stream, name) = stream(&console).await?;
    let found = letters(&mut stream, fields.get("subject")).await?;
    let mut results = Vec::new();
    for l in &found {
        results.push((l.sequence, redrive(&console, &stream, &name, l.sequence).await));
    }
    tracing::info!(count = results.len(), by = %operator.session.sub, "console dead letters redriven");
    Ok(results_page(&operator, "redrive", &results))
}

/// `POST /console/dlq/{sequence}/discard` (`reason`, required; logged).
pub async fn discard(
    State(console): State<Console>,
    operator: Operator,
    Path(sequence): Path<u64>,
    headers: HttpHeaders,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    operator.caller.require(WRITE)?;
    operator.caller.require_global("act on dead letters")?;
    let Some(reason) = fields.get("reason").map(str::trim).filter(|r| !r.is_empty()) else {
        return Err(Problem::invalid("reason.required", "say why the dead letter is discarded").into());
    };
    let (stream, _) = stream(&console).await?;
    let result = dead_letters::discard(&stream, sequence)
        .await
        .map(|()| format!("discarded: {reason}"))
        .map_err(|e| e.to_string());
    tracing::warn!(sequence, reason, ok = result.is_ok(), by = %operator.session.sub, "console dead letter discarded");
    Ok(results_page(&operator, "discard", &[(sequence, result)]))
}
