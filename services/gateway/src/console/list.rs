//! `GET /console`: tenants, newest first, filtered (status, tier, plan,
//! label, stuck) and searched (key prefix, id, Clerk organization), a page
//! at a time on `(created_at, id)` — no count of the whole table.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::Console;
use super::filter::{self, Fields, Filter, TIERS};
use super::html::{self, Result, esc, url};
use super::session::Operator;
use crate::auth::{READ, WRITE};
use crate::problem::Problem;
use crate::tenants::STATUSES;

pub const PAGE: i64 = 50;

fn options(all: &[&str], chosen: Option<&str>) -> String {
    let mut out = String::from(r#"<option value="">any</option>"#);
    for value in all {
        let selected = if chosen == Some(*value) { " selected" } else { "" };
        out.push_str(&format!(r#"<option value="{value}"{selected}>{value}</option>"#));
    }
    out
}

/// `GET /console?status=&tier=&plan=&label=&stuck=1&q=&limit=&after=`.
pub async fn page(State(console): State<Console>, operator: Operator, RawQuery(query): RawQuery) -> Result<Response> {
    operator.caller.require(READ)?;
    let fields = Fields::query(query.as_deref());
    let filter = Filter::from_fields(&fields)?;
    let limit: i64 = match fields.get("limit") {
        None => PAGE,
        Some(raw) => match raw.parse() {
            Ok(n) if (1..=200).contains(&n) => n,
            _ => {
                return Err(
                    Problem::bad_request("limit", format!("limit {raw:?} must be a number from 1 to 200")).into()
                );
            }
        },
    };
    let after = fields.get("after").map(filter::decode_cursor).transpose()?;
    let mut rows =
        filter::select(&console.app.pool, &filter, operator.caller.visible_tenant(), after, limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));

    let mut body = format!(
        r#"<h1>Tenants</h1>
<form method="get" action="/console" data-testid="filter-form" class="filters">
<label>Status <select name="status" data-testid="filter-status">{status}</select></label>
<label>Tier <select name="tier" data-testid="filter-tier">{tier}</select></label>
<label>Plan <input name="plan" value="{plan}" data-testid="filter-plan" size="10"></label>
<label>Label <input name="label" value="{label}" placeholder="key=value" data-testid="filter-label" size="12"></label>
<label><input type="checkbox" name="stuck" value="1"{stuck} data-testid="filter-stuck"> stuck</label>
<label>Search <input name="q" value="{q}" placeholder="key, id or Clerk org" data-testid="filter-q"></label>
<button type="submit" data-testid="filter-submit">Filter</button> <a href="/console">clear</a>
</form>"#,
        status = options(STATUSES, filter.status.as_deref()),
        tier = options(TIERS, filter.tier.as_deref()),
        plan = esc(filter.plan.as_deref().unwrap_or("")),
        label = esc(filter.label.as_deref().unwrap_or("")),
        stuck = if filter.stuck { " checked" } else { "" },
        q = esc(filter.q.as_deref().unwrap_or("")),
    );
    if rows.is_empty() {
        body.push_str(r#"<p data-testid="no-tenants">No tenant matches.</p>"#);
    } else {
        body.push_str(
            r#"<table data-testid="tenant-table"><thead><tr><th>Key</th><th>Name</th><th>Status</th><th>Plan</th>
<th>Tier</th><th>Created</th><th></th></tr></thead><tbody>"#,
        );
        for row in &rows {
            body.push_str(&format!(
                r#"<tr data-testid="tenant-row" data-key="{key}" data-id="{id}">
<td data-testid="tenant-key"><a href="/console/tenants/{key}">{key}</a></td><td>{name}</td>
<td data-testid="tenant-status" data-status="{status}" data-tenant="{key}">{status}</td>
<td data-testid="tenant-plan">{plan}</td><td data-testid="tenant-tier">{tier}</td><td>{created}</td>
<td data-testid="tenant-stuck">{stuck}</td></tr>"#,
                key = esc(&row.key),
                id = row.id,
                name = esc(&row.display_name),
                status = esc(&row.status),
                plan = esc(&row.plan),
                tier = esc(&row.tier),
                created = html::when(row.created_at),
                stuck = if row.stuck { "stuck" } else { "" },
            ));
        }
        body.push_str("</tbody></table>");
    }
    if more && let Some(last) = rows.last() {
        let query = filter.query();
        let sep = if query.is_empty() { "" } else { "&" };
        let limit = if limit == PAGE { String::new() } else { format!("&limit={limit}") };
        body.push_str(&format!(
            r#"<p><a data-testid="next-page" href="/console?{}{sep}after={}{limit}">Next page →</a></p>"#,
            esc(&query),
            url(&filter::cursor(last))
        ));
    }
    if operator.can(WRITE) && operator.caller.tenant_scope().is_none() {
        body.push_str(&format!(
            r#"<h2>Bulk action on this filter</h2>
<form method="post" action="/console/bulk" data-testid="bulk-form">{csrf}{hidden}
<select name="action" data-testid="bulk-action">
<option value="retry">retry (FAILED)</option><option value="cancel">cancel (provisioning)</option>
<option value="suspend">suspend</option><option value="resume">resume</option>
<option value="restore">restore</option><option value="delete">delete (with grace)</option></select>
<input name="reason" placeholder="reason" data-testid="bulk-reason" size="30">
<button type="submit" data-testid="bulk-submit">Preview…</button></form>"#,
            csrf = html::csrf_field(&operator),
            hidden = filter.hidden(),
        ));
    }
    let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let poll = format!("/console/live.json?keys={}", url(&keys.join(",")));
    Ok(html::page("tenants", "Tenants", Some(&operator), Some(("/console/events", &poll)), &body).into_response())
}
