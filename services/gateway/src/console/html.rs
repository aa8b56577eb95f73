//! Pages as strings: escaping, the layout every page shares, and failures
//! rendered as pages.

use std::fmt::Write as _;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use time::OffsetDateTime;

use super::session::Operator;
use crate::problem::Problem;

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encoding of a query parameter's value.
pub fn url(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A time as the console shows it: UTC, to the second.
pub fn when(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

pub fn when_opt(at: Option<OffsetDateTime>) -> String {
    at.map(when).unwrap_or_default()
}

/// A duration in milliseconds, readable.
pub fn millis(ms: Option<i64>) -> String {
    match ms {
        None => String::new(),
        Some(ms) if ms < 1000 => format!("{ms} ms"),
        Some(ms) if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(operator: &Operator) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&operator.csrf))
}

/// A whole page. `name` goes into `data-testid="page-<name>"`; `live`
/// (an events URL and a JSON fragment to poll instead) makes the script
/// follow the events stream.
pub fn page(
    name: &str,
    title: &str,
    operator: Option<&Operator>,
    live: Option<(&str, &str)>,
    body: &str,
) -> Html<String> {
    let mut nav = String::new();
    let mut meta = String::new();
    if let Some(op) = operator {
        meta = format!(r#"<meta name="csrf-token" content="{}">"#, esc(&op.csrf));
        // Dead letters and the system page concern every tenant: not for a
        // tenant-scoped session.
        let (global, tenant) = match &op.session.tenant {
            None => (
                r#"<a href="/console/dlq" data-testid="nav-dlq">Dead letters</a>
<a href="/console/system" data-testid="nav-system">System</a>"#,
                String::new(),
            ),
            Some(claim) => ("", format!(r#" <span data-testid="scope">tenant {}</span>"#, esc(claim))),
        };
        nav = format!(
            r#"<nav data-testid="nav"><a href="/console" data-testid="nav-tenants">Tenants</a>
{global}
<span data-testid="whoami">{} ({}){tenant}</span>
<form method="post" action="/console/logout" class="inline">{}<button data-testid="signout">Sign out</button></form></nav>"#,
            esc(&op.session.sub),
            esc(&op.session.scopes.join(" ")),
            csrf_field(op)
        );
    }
    let live = live
        .map(|(events, poll)| format!(r#" data-live-url="{}" data-poll-url="{}""#, esc(events), esc(poll)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Landlord</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{meta}
<link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script></head>
<body data-testid="page-{name}" data-live="off"{live}>
<header><strong>Landlord console</strong> {nav}</header>
<main>{body}</main>
</body></html>"#,
        title = esc(title),
    ))
}

/// Why a console request was not served: no session (to the sign-in
/// page), or a problem, shown as a page with its status.
#[derive(Debug)]
pub enum Failure {
    SignIn,
    Problem(Problem),
}

impl From<Problem> for Failure {
    fn from(problem: Problem) -> Self {
        Failure::Problem(problem)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Problem(error.into())
    }
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::SignIn => Redirect::to("/console/login").into_response(),
            Failure::Problem(problem) => problem_page(&problem),
        }
    }
}

/// A problem as a page, with its status.
pub fn problem_page(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let rule =
        problem.rule.as_deref().map(|r| format!(r#"<p>Rule: <code data-testid="problem-rule">{}</code></p>"#, esc(r)));
    let body = format!(
        r#"<h1>{} {}</h1><p data-testid="problem-detail">{}</p><p>Type: <code data-testid="problem-type">{}</code></p>{}
<p><a href="javascript:history.back()">Back</a> · <a href="/console">Tenants</a></p>"#,
        problem.status,
        esc(&problem.title),
        esc(&problem.detail),
        esc(&problem.kind),
        rule.unwrap_or_default()
    );
    let mut response = (status, page("problem", &problem.title, None, None, &body)).into_response();
    if let Some(seconds) = problem.retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(url("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(millis(Some(1500)), "1.5 s");
        assert_eq!(millis(Some(125_000)), "2m05s");
    }
}
