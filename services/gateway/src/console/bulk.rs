//! Bulk actions on the list's current filter: `POST /console/bulk` shows
//! how many tenants are eligible and which are not (and why);
//! `POST /console/bulk/run` acts on each eligible one through the same
//! path as a single action ([`super::actions::perform`]), never stopping
//! at a failure, and reports per tenant. The confirmed keys are those the
//! operator saw; each is checked again by the handler when its turn comes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::Console;
use super::actions::{self, Action, Ask};
use super::filter::{self, Fields, Filter};
use super::html::{self, Result, esc};
use super::session::Operator;
use crate::auth::WRITE;
use crate::problem::Problem;

/// The most tenants one bulk action takes.
pub const MAX_ITEMS: i64 = 1000;

/// `POST /console/bulk` (the filter's fields, `action`, `reason`, `csrf`).
pub async fn preview(
    State(console): State<Console>,
    operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    operator.caller.require(WRITE)?;
    operator.caller.require_global("run bulk actions")?;
    let action = Action::parse(fields.get("action").unwrap_or_default())?;
    let filter = Filter::from_fields(&fields)?;
    let reason = fields.get("reason").unwrap_or_default();
    if action.destructive() && reason.trim().is_empty() {
        return Err(Problem::invalid("reason.required", "a bulk cancel, suspend or delete needs a reason").into());
    }
    let rows =
        filter::select(&console.app.pool, &filter, operator.caller.visible_tenant(), None, MAX_ITEMS + 1).await?;
    let capped = rows.len() > usize::try_from(MAX_ITEMS).unwrap_or(usize::MAX);
    let (mut eligible, mut ineligible) = (Vec::new(), Vec::new());
    for row in rows.iter().take(usize::try_from(MAX_ITEMS).unwrap_or(usize::MAX)) {
        match action.eligible(&row.status, row.busy) {
            Ok(()) => eligible.push(row),
            Err(why) => ineligible.push((row, why)),
        }
    }
    let mut body = format!(
        r#"<h1>Bulk {action}</h1><p>Filter: <code>{query}</code>{capped}</p>
<p><strong data-testid="bulk-eligible-count">{count}</strong> eligible, <span data-testid="bulk-ineligible-count">{not}</span> not.</p>"#,
        action = action.name(),
        query = esc(&filter.query()),
        capped = if capped { format!(" (the first {MAX_ITEMS} only)") } else { String::new() },
        count = eligible.len(),
        not = ineligible.len(),
    );
    body.push_str(r#"<table><thead><tr><th>Tenant</th><th>Status</th><th></th></tr></thead><tbody>"#);
    for row in &eligible {
        body.push_str(&format!(
            r#"<tr data-testid="bulk-eligible" data-key="{key}"><td>{key}</td><td>{status}</td><td>eligible</td></tr>"#,
            key = esc(&row.key),
            status = esc(&row.status)
        ));
    }
    for (row, why) in &ineligible {
        body.push_str(&format!(
            r#"<tr data-testid="bulk-ineligible" data-key="{key}"><td>{key}</td><td>{status}</td>
<td data-testid="bulk-ineligible-reason">{why}</td></tr>"#,
            key = esc(&row.key),
            status = esc(&row.status),
            why = esc(why)
        ));
    }
    body.push_str("</tbody></table>");
    if !eligible.is_empty() {
        let keys: String =
            eligible.iter().map(|r| format!(r#"<input type="hidden" name="key" value="{}">"#, esc(&r.key))).collect();
        let confirm = if action.destructive() {
            format!(
                r#"<label>Type the number of eligible tenants ({}) to confirm
<input name="confirm" required data-testid="bulk-confirm-count" size="6"></label>"#,
                eligible.len()
            )
        } else {
            String::new()
        };
        let grace = fields
            .get("grace")
            .map(|g| format!(r#"<input type="hidden" name="grace" value="{}">"#, esc(g)))
            .unwrap_or_default();
        body.push_str(&format!(
            r#"<form method="post" action="/console/bulk/run" data-testid="bulk-confirm-form">{csrf}
<input type="hidden" name="action" value="{action}"><input type="hidden" name="reason" value="{reason}">
<input type="hidden" name="nonce" value="{nonce}">{grace}{keys}{confirm}
<button data-testid="bulk-confirm">{action} {count} tenant(s)</button></form>"#,
            csrf = html::csrf_field(&operator),
            action = action.name(),
            reason = esc(reason),
            nonce = uuid::Uuid::new_v4(),
            count = eligible.len(),
        ));
    }
    Ok(html::page("bulk-confirm", "Bulk action", Some(&operator), None, &body).into_response())
}

/// `POST /console/bulk/run` (`action`, `reason`, `key`…, `confirm`, `nonce`, `csrf`).
pub async fn run(
    State(console): State<Console>,
    operator: Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    operator.caller.require(WRITE)?;
    operator.caller.require_global("run bulk actions")?;
    let action = Action::parse(fields.get("action").unwrap_or_default())?;
    let keys = fields.all("key");
    if keys.len() > usize::try_from(MAX_ITEMS).unwrap_or(usize::MAX) {
        return Err(Problem::invalid("bulk.too_many", format!("at most {MAX_ITEMS} tenants at once")).into());
    }
    if action.destructive() && fields.get("confirm").map(str::trim) != Some(keys.len().to_string().as_str()) {
        return Err(Problem::invalid(
            "confirm.mismatch",
            format!("type the number of tenants ({}) to confirm the bulk {}", keys.len(), action.name()),
        )
        .into());
    }
    let grace = actions::grace(&fields)?;
    let nonce = fields.get("nonce").map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let mut rows = String::new();
    let mut failed = 0;
    for key in keys.iter().copied() {
        let ask = Ask {
            action,
            key,
            reason: fields.get("reason"),
            grace,
            idempotency: format!("console:{nonce}:{}:{key}", action.name()),
        };
        let (ok, detail) = match actions::perform(&console, &operator.caller, ask).await {
            Ok(()) => (true, "accepted".to_owned()),
            Err(problem) => {
                failed += 1;
                (false, format!("{} {}", problem.status, problem.detail))
            }
        };
        rows.push_str(&format!(
            r#"<tr data-testid="bulk-result" data-key="{key}" data-ok="{ok}"><td><a href="/console/tenants/{key}">{key}</a></td>
<td>{result}</td><td data-testid="bulk-result-detail">{detail}</td></tr>"#,
            key = esc(key),
            result = if ok { "done" } else { "failed" },
            detail = esc(&detail),
        ));
    }
    tracing::info!(action = action.name(), items = keys.len(), failed, by = %operator.session.sub, "console bulk action");
    let body = format!(
        r#"<h1>Bulk {action}: results</h1>
<p data-testid="bulk-summary">{done} done, {failed} failed</p>
<table><thead><tr><th>Tenant</th><th>Result</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>
<p><a href="/console">Back to tenants</a></p>"#,
        action = action.name(),
        done = keys.len() - failed,
    );
    Ok(html::page("bulk-result", "Bulk results", Some(&operator), None, &body).into_response())
}
