//! A lifecycle verb on one tenant, or on every tenant a filter matches:
//! the count first, a question (unless `--yes`; `--dry-run` stops there),
//! then each tenant in turn — a failure does not stop the others — and a
//! result per tenant on stdout, a summary on stderr.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde_json::{Value, json};

use super::lifecycle::{Operation, ask_and_follow, single};
use super::{Ctx, confirm, tenants};
use crate::api::{ApiError, Exit};
use crate::cli::Target;
use crate::follow::Display;
use crate::output::{self, cell};

/// More than this many tenants is refused: narrow the filter.
const MAX_TENANTS: usize = 10_000;

pub async fn run(ctx: &Ctx, operation: Operation, target: &Target) -> Result<Exit> {
    if let Some(key) = &target.key {
        return single(ctx, &operation, key, target.idempotency_key.as_deref(), &target.wait).await;
    }
    let api = ctx.api()?;
    let matched = tenants::matching(&api, &target.filter, MAX_TENANTS).await?;
    let verb = operation.verb();
    output::log(format!("{} tenant(s) match", matched.len()));
    if target.dry_run {
        let items: Vec<Value> = matched
            .iter()
            .map(|t| json!({"key": t["key"], "status": t["status"], "action": verb, "dry_run": true}))
            .collect();
        output::items(
            ctx.format,
            &items,
            &[
                ("KEY", |r| cell(r.get("key"))),
                ("STATUS", |r| cell(r.get("status"))),
                ("WOULD", |r| cell(r.get("action"))),
            ],
        );
        return Ok(Exit::Done);
    }
    if matched.is_empty() {
        return Ok(Exit::Done);
    }
    if !target.yes && !confirm(&format!("{verb} {} tenant(s)?", matched.len()))? {
        output::log("nothing done");
        return Ok(Exit::Failed);
    }
    let bar = ProgressBar::with_draw_target(
        Some(matched.len() as u64),
        match output::interactive() {
            true => ProgressDrawTarget::stderr(),
            false => ProgressDrawTarget::hidden(),
        },
    );
    let mut results = Vec::with_capacity(matched.len());
    for tenant in &matched {
        let key = tenant["key"].as_str().unwrap_or_default();
        bar.set_message(key.to_owned());
        let result = match ask_and_follow(&api, &operation, key, None, &target.wait, Display::Quiet).await {
            Ok((accepted, outcome)) => json!({
                "key": key,
                "ok": outcome.as_ref().is_none_or(|o| operation.succeeded(o)),
                "saga": accepted.saga_id,
                "status": outcome.as_ref().map(|o| o.status().to_owned()),
                "error": outcome.as_ref().filter(|o| !operation.succeeded(o)).map(|o| o.summary()),
            }),
            Err(error) => {
                let status = error.downcast_ref::<ApiError>().and_then(ApiError::status);
                json!({"key": key, "ok": false, "saga": null, "status": null, "http": status, "error": format!("{error:#}")})
            }
        };
        if output::interactive() {
            bar.println(format!("{key}: {}", if result["ok"] == true { "done" } else { "failed" }));
        }
        results.push(result);
        bar.inc(1);
    }
    bar.finish_and_clear();
    output::items(
        ctx.format,
        &results,
        &[
            ("KEY", |r| cell(r.get("key"))),
            ("RESULT", |r| if r["ok"] == true { "done".into() } else { "failed".into() }),
            ("STATUS", |r| cell(r.get("status"))),
            ("SAGA", |r| cell(r.get("saga"))),
            ("ERROR", |r| cell(r.get("error"))),
        ],
    );
    let failed = results.iter().filter(|r| r["ok"] != true).count();
    output::log(format!("{verb}: {} done, {failed} failed, of {}", results.len() - failed, results.len()));
    Ok(if failed == 0 { Exit::Done } else { Exit::Failed })
}
