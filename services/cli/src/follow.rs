//! Following a tenant's saga to its end by reading the tenant
//! (`GET /v1/tenants/{key}`, which carries its latest saga step by step)
//! every `--poll`: a repeated request whose saga ended long ago ends at
//! once, and nothing is missed between the request and the first read —
//! which a feed that starts with the next new event could not promise.
//!
//! On a terminal each step gets a progress bar (stderr); otherwise each
//! change of a step is a JSON line on stdout, and so is the end.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use crate::api::{Api, ApiError};
use crate::cli::{Format, Wait};
use crate::output;

/// What ends the following.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// A requested tenant: ACTIVE, or FAILED / CANCELLED.
    Provision,
    /// The saga with this id: succeeded, or failed / cancelled.
    Saga(String),
    /// Whatever saga the tenant has last, to its end.
    Latest,
    /// A saga other than this one (the tenant's latest before a retry was
    /// asked for), to its end.
    After(Option<String>),
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bars,
    Lines,
    /// Nothing per step (bulk verbs report per item).
    Quiet,
}

impl Display {
    pub fn for_format(format: Format) -> Self {
        if format == Format::Table && output::interactive() { Display::Bars } else { Display::Lines }
    }
}

/// How it ended: well or not, and the tenant as last read.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub tenant: Value,
}

impl Outcome {
    pub fn status(&self) -> &str {
        self.tenant["status"].as_str().unwrap_or("")
    }

    /// `ACTIVE`, or `suspend failed: <reason>`.
    pub fn summary(&self) -> String {
        let saga = &self.tenant["saga"];
        let reason = saga["failure_reason"].as_str().or(saga["cancel_reason"].as_str()).unwrap_or("");
        match (self.ok, saga["operation"].as_str(), saga["state"].as_str()) {
            (true, _, _) => self.status().to_owned(),
            (false, Some(op), Some(state)) => {
                let at = saga["failed_step"].as_str().map(|s| format!(" at {s}")).unwrap_or_default();
                format!("{} ({op} {state}{at}: {reason})", self.status())
            }
            _ => self.status().to_owned(),
        }
    }
}

fn saga_end(saga: &Value) -> Option<bool> {
    match saga["state"].as_str()? {
        "succeeded" => Some(true),
        "failed" | "cancelled" => Some(false),
        _ => None,
    }
}

/// Whether `tenant` is at the end `goal` names, and how it went.
pub fn ended(goal: &Goal, tenant: &Value) -> Option<bool> {
    let status = tenant["status"].as_str().unwrap_or("");
    let saga = &tenant["saga"];
    match goal {
        Goal::Provision => match status {
            "ACTIVE" => Some(true),
            "FAILED" | "CANCELLED" => Some(false),
            // A request for a key that already went further (a repeat).
            "SUSPENDED" | "DELETION_SCHEDULED" | "DEPROVISIONING" | "DELETED" => Some(true),
            _ => None,
        },
        Goal::Saga(id) => (saga["id"].as_str() == Some(id.as_str())).then(|| saga_end(saga)).flatten(),
        Goal::After(before) => match saga["id"].as_str() {
            Some(id) if Some(id) != before.as_deref() => saga_end(saga),
            _ => None,
        },
        Goal::Latest => match saga.is_null() {
            false => saga_end(saga),
            true => match status {
                "REQUESTED" | "PENDING" | "PROVISIONING" | "COMPENSATING" | "DEPROVISIONING" => None,
                "FAILED" | "CANCELLED" => Some(false),
                _ => Some(true),
            },
        },
    }
}

/// Per-step display: bars or lines, only on change.
struct Progress {
    display: Display,
    key: String,
    seen: BTreeMap<(String, String), String>,
    multi: MultiProgress,
    bars: BTreeMap<(String, String), ProgressBar>,
}

impl Progress {
    fn new(display: Display, key: &str) -> Self {
        let multi = MultiProgress::with_draw_target(match display {
            Display::Bars => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        });
        Self { display, key: key.to_owned(), seen: BTreeMap::new(), multi, bars: BTreeMap::new() }
    }

    fn show(&mut self, tenant: &Value) {
        let saga = &tenant["saga"];
        let (Some(saga_id), Some(steps)) = (saga["id"].as_str(), saga["steps"].as_array()) else { return };
        let operation = saga["operation"].as_str().unwrap_or("");
        for step in steps {
            let name = step["name"].as_str().unwrap_or("").to_owned();
            let state = step["state"].as_str().unwrap_or("");
            let attempts = step["attempts"].as_i64().unwrap_or(0);
            let error = step["last_error"].as_str();
            let fingerprint = format!("{state}/{attempts}/{}", error.unwrap_or(""));
            let id = (saga_id.to_owned(), name.clone());
            if self.seen.get(&id) == Some(&fingerprint) {
                continue;
            }
            self.seen.insert(id.clone(), fingerprint);
            match self.display {
                Display::Quiet => {}
                Display::Lines => output::json_line(&json!({
                    "tenant": self.key, "saga": saga_id, "operation": operation, "step": name,
                    "state": state, "attempts": attempts, "error": error,
                })),
                Display::Bars => {
                    let bar = self.bars.entry(id).or_insert_with(|| {
                        let bar = self.multi.add(ProgressBar::new(1));
                        if let Ok(style) = ProgressStyle::with_template("{prefix:<24} [{bar:12}] {msg}") {
                            bar.set_style(style.progress_chars("=> "));
                        }
                        bar.set_prefix(format!("{operation} {name}"));
                        bar
                    });
                    let max = step["max_attempts"].as_i64().unwrap_or(0);
                    let tries = if attempts > 1 { format!(" (attempt {attempts}/{max})") } else { String::new() };
                    let error = error.map(|e| format!(": {e}")).unwrap_or_default();
                    bar.set_message(format!("{state}{tries}{error}"));
                    if matches!(state, "succeeded" | "skipped" | "compensated") {
                        bar.set_position(1);
                    }
                }
            }
        }
    }

    fn finish(&self) {
        self.bars.values().for_each(ProgressBar::abandon);
    }
}

/// Reads the tenant until `goal` is reached or `wait.timeout` passes.
pub async fn follow(api: &Api, key: &str, goal: &Goal, wait: &Wait, display: Display) -> Result<Outcome> {
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let mut progress = Progress::new(display, key);
    loop {
        let tenant = match api.tenant(key).await {
            Ok(tenant) => tenant,
            // A request may be answered before the tenant can be read.
            Err(ApiError::Problem { status: 404, .. }) if goal == &Goal::Provision => Value::Null,
            Err(error) => {
                progress.finish();
                return Err(error.into());
            }
        };
        progress.show(&tenant);
        if let Some(ok) = ended(goal, &tenant) {
            progress.finish();
            let outcome = Outcome { ok, tenant };
            if display == Display::Lines {
                let saga = &outcome.tenant["saga"];
                output::json_line(&json!({
                    "tenant": key, "status": outcome.status(), "ok": ok, "saga": saga["id"],
                    "operation": saga["operation"], "state": saga["state"],
                    "failed_step": saga["failed_step"], "reason": saga["failure_reason"],
                }));
            }
            return Ok(outcome);
        }
        if tokio::time::Instant::now() >= deadline {
            progress.finish();
            bail!(
                "{key}: no end within {}; `landlord tenants watch {key}` follows it further",
                humantime::format_duration(wait.timeout)
            );
        }
        tokio::time::sleep(wait.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_goal_has_its_end() {
        let tenant = |status: &str, saga: Value| json!({"status": status, "saga": saga});
        let running = json!({"id": "s1", "state": "running"});
        let done = json!({"id": "s1", "state": "succeeded"});
        let failed = json!({"id": "s1", "state": "failed"});
        assert_eq!(ended(&Goal::Provision, &tenant("PROVISIONING", running.clone())), None);
        assert_eq!(ended(&Goal::Provision, &tenant("ACTIVE", done.clone())), Some(true));
        assert_eq!(ended(&Goal::Provision, &tenant("FAILED", failed.clone())), Some(false));
        assert_eq!(ended(&Goal::Provision, &json!({"status": "REQUESTED"})), None);
        let saga = Goal::Saga("s1".into());
        assert_eq!(ended(&saga, &tenant("ACTIVE", running)), None);
        assert_eq!(ended(&saga, &tenant("SUSPENDED", done.clone())), Some(true));
        assert_eq!(ended(&saga, &tenant("ACTIVE", failed.clone())), Some(false));
        // Another saga's end is not this one's.
        assert_eq!(ended(&Goal::Saga("s2".into()), &tenant("ACTIVE", done)), None);
        assert_eq!(ended(&Goal::Latest, &tenant("ACTIVE", failed.clone())), Some(false));
        // A retry: the failed saga before it is not its end.
        let after = Goal::After(Some("s1".into()));
        assert_eq!(ended(&after, &tenant("FAILED", failed)), None);
        assert_eq!(ended(&after, &tenant("ACTIVE", json!({"id": "s2", "state": "succeeded"}))), Some(true));
        assert_eq!(ended(&Goal::Latest, &json!({"status": "PENDING", "saga": null})), None);
    }
}
