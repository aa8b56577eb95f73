//! `landlord tenants list|get|watch|cancel|retry|audit` and `sagas show`;
//! `request` and the lifecycle verbs have modules of their own.

use anyhow::Result;
use serde_json::Value;

use super::{Ctx, bulk, lifecycle, request};
use crate::api::{Api, Exit, encode};
use crate::cli::{Filter, Tenants, Wait};
use crate::follow::{self, Display, Goal};
use crate::output::{self, Column, cell};

pub const TENANT_COLUMNS: &[Column] = &[
    ("KEY", |t| cell(t.get("key"))),
    ("STATUS", |t| cell(t.get("status"))),
    ("PLAN", |t| cell(t.get("plan"))),
    ("TIER", |t| cell(t.get("tier"))),
    ("CREATED", |t| cell(t.get("created_at"))),
];

pub async fn run(ctx: &Ctx, verb: Tenants) -> Result<Exit> {
    match verb {
        Tenants::List { filter, limit } => {
            let items = matching(&ctx.api()?, &filter, limit).await?;
            output::items(ctx.format, &items, TENANT_COLUMNS);
            Ok(Exit::Done)
        }
        Tenants::Get { key } => {
            let tenant = ctx.api()?.tenant(&key).await?;
            show_tenant(ctx, &tenant);
            Ok(Exit::Done)
        }
        Tenants::Request(args) => request::run(ctx, &args).await,
        Tenants::Watch { key, wait } => watch(ctx, &key, &wait).await,
        Tenants::Cancel { target, reason } => bulk::run(ctx, lifecycle::Operation::Cancel { reason }, &target).await,
        Tenants::Retry { target } => bulk::run(ctx, lifecycle::Operation::Retry, &target).await,
        Tenants::Suspend { target, reason } => bulk::run(ctx, lifecycle::Operation::Suspend { reason }, &target).await,
        Tenants::Resume { target, reason } => bulk::run(ctx, lifecycle::Operation::Resume { reason }, &target).await,
        Tenants::Update(args) => lifecycle::update(ctx, &args).await,
        Tenants::Delete { target, reason, grace, no_export } => {
            bulk::run(ctx, lifecycle::Operation::Delete { reason, grace, export: !no_export }, &target).await
        }
        Tenants::Restore { target, reason } => bulk::run(ctx, lifecycle::Operation::Restore { reason }, &target).await,
        Tenants::Export { target, reason } => bulk::run(ctx, lifecycle::Operation::Export { reason }, &target).await,
        Tenants::Audit { key, limit } => {
            let api = ctx.api()?;
            let entries = api.pages(&format!("/v1/tenants/{}/audit", encode(&key)), &[], limit).await?;
            output::items(
                ctx.format,
                &entries,
                &[
                    ("AT", |e| cell(e.get("at"))),
                    ("ACTOR", |e| cell(e.get("actor"))),
                    ("ACTION", |e| cell(e.get("action"))),
                    ("SAGA", |e| cell(e.get("saga_id"))),
                    ("DETAIL", |e| cell(e.get("detail"))),
                ],
            );
            Ok(Exit::Done)
        }
    }
}

/// Tenants the filter matches: status and plan asked of the API, labels
/// checked on each tenant (the list does not carry them).
pub async fn matching(api: &Api, filter: &Filter, limit: usize) -> Result<Vec<Value>> {
    let listed = api.tenants(filter.status.as_deref(), filter.plan.as_deref(), limit).await?;
    if filter.labels.is_empty() {
        return Ok(listed);
    }
    let mut items = Vec::new();
    for summary in listed {
        let key = summary["key"].as_str().unwrap_or_default();
        let tenant = api.tenant(key).await?;
        if filter.labels.iter().all(|(k, v)| tenant["labels"][k].as_str() == Some(v)) {
            items.push(summary);
        }
    }
    Ok(items)
}

fn show_tenant(ctx: &Ctx, tenant: &Value) {
    output::item(
        ctx.format,
        tenant,
        &[
            ("key", |t| cell(t.get("key"))),
            ("id", |t| cell(t.get("id"))),
            ("status", |t| cell(t.get("status"))),
            ("display name", |t| cell(t.get("display_name"))),
            ("plan", |t| cell(t.get("plan"))),
            ("tier", |t| cell(t.get("tier"))),
            ("admin", |t| cell(t.pointer("/admin/email"))),
            ("domains", |t| {
                t["domains"]
                    .as_array()
                    .map(|d| d.iter().map(|v| cell(Some(v))).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            }),
            ("labels", |t| {
                t["labels"]
                    .as_object()
                    .map(|l| l.iter().map(|(k, v)| format!("{k}={}", cell(Some(v)))).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            }),
            ("failure", |t| cell(t.get("failure_reason"))),
            ("saga", |t| {
                let s = &t["saga"];
                if s.is_null() {
                    String::new()
                } else {
                    format!(
                        "{} {} {}% ({})",
                        cell(s.get("operation")),
                        cell(s.get("state")),
                        cell(s.get("percent")),
                        cell(s.get("id"))
                    )
                }
            }),
            ("resources", |t| {
                t["resources"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .map(|r| {
                                let gone = if r["deleted_at"].is_null() { "" } else { " (deleted)" };
                                format!("{} {}{gone}", cell(r.get("kind")), cell(r.get("external_id")))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            }),
        ],
    );
}

/// `sagas show KEY`: the tenant's latest saga, a row per step.
pub async fn saga(ctx: &Ctx, key: &str) -> Result<Exit> {
    let tenant = ctx.api()?.tenant(key).await?;
    let saga = &tenant["saga"];
    if saga.is_null() {
        anyhow::bail!(crate::api::ApiError::Problem {
            status: 404,
            detail: format!("tenant {key} has no saga yet"),
            rule: None,
        });
    }
    match ctx.format {
        crate::cli::Format::Table => {
            output::text(
                ctx.format,
                &format!(
                    "saga {} ({} of {}): {} {}%{}\n",
                    cell(saga.get("id")),
                    cell(saga.get("operation")),
                    cell(tenant.get("key")),
                    cell(saga.get("state")),
                    cell(saga.get("percent")),
                    saga["failure_reason"].as_str().map(|r| format!(", failed: {r}")).unwrap_or_default(),
                ),
            );
            let steps = saga["steps"].as_array().cloned().unwrap_or_default();
            output::items(
                ctx.format,
                &steps,
                &[
                    ("STEP", |s| cell(s.get("name"))),
                    ("STATE", |s| cell(s.get("state"))),
                    ("ATTEMPTS", |s| format!("{}/{}", cell(s.get("attempts")), cell(s.get("max_attempts")))),
                    ("STARTED", |s| cell(s.get("started_at"))),
                    ("MS", |s| cell(s.get("duration_ms"))),
                    ("LAST ERROR", |s| cell(s.get("last_error"))),
                ],
            );
        }
        format => output::item(format, saga, &[]),
    }
    Ok(Exit::Done)
}

async fn watch(ctx: &Ctx, key: &str, wait: &Wait) -> Result<Exit> {
    let outcome = follow::follow(&ctx.api()?, key, &Goal::Latest, wait, Display::for_format(ctx.format)).await?;
    end(ctx, key, &outcome, outcome.ok)
}

/// The last word of a followed operation: a line on a terminal (the JSON
/// lines already said it), and the exit status.
pub fn end(ctx: &Ctx, key: &str, outcome: &follow::Outcome, ok: bool) -> Result<Exit> {
    if Display::for_format(ctx.format) == Display::Bars {
        println!("{key} {}", outcome.summary());
    }
    Ok(if ok { Exit::Done } else { Exit::Failed })
}
