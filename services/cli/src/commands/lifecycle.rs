//! The lifecycle verbs (docs/lifecycle.md): each a request that answers
//! 202 with the saga's id, then followed to the saga's end.
//!
//! | verb | route |
//! |---|---|
//! | suspend | `POST /v1/tenants/{key}/suspend {reason}` |
//! | resume | `POST /v1/tenants/{key}/resume` |
//! | update | `PATCH /v1/tenants/{key}` |
//! | delete | `DELETE /v1/tenants/{key} {reason, grace, export}` |
//! | restore | `POST /v1/tenants/{key}/restore` |
//! | export | `POST /v1/tenants/{key}/export` |
//! | cancel | `POST /v1/tenants/{key}/cancel` (the running saga) |
//! | retry | `POST /v1/tenants/{key}/retry` (a FAILED tenant's provisioning) |
//!
//! Every request carries an `Idempotency-Key`: `--idempotency-key`, else a
//! new uuid (a repeated command is then a new request, which the gateway
//! refuses while the first one's saga runs).

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Ctx, UsageError, tenants};
use crate::api::{Api, Exit, encode};
use crate::cli::{UpdateArgs, Wait};
use crate::follow::{self, Display, Goal, Outcome};
use crate::output;

/// One lifecycle operation, with what its request carries.
#[derive(Debug, Clone)]
pub enum Operation {
    Suspend { reason: String },
    Resume { reason: Option<String> },
    Update { patch: Value },
    Delete { reason: String, grace: Option<Duration>, export: bool },
    Restore { reason: Option<String> },
    Export { reason: Option<String> },
    Cancel { reason: Option<String> },
    Retry,
}

fn with_reason(reason: &Option<String>) -> Option<Value> {
    Some(reason.as_ref().map_or_else(|| json!({}), |reason| json!({ "reason": reason })))
}

impl Operation {
    pub fn verb(&self) -> &'static str {
        match self {
            Operation::Suspend { .. } => "suspend",
            Operation::Resume { .. } => "resume",
            Operation::Update { .. } => "update",
            Operation::Delete { .. } => "delete",
            Operation::Restore { .. } => "restore",
            Operation::Export { .. } => "export",
            Operation::Cancel { .. } => "cancel",
            Operation::Retry => "retry",
        }
    }

    /// Method, path and body of the request for tenant `key`.
    pub fn request(&self, key: &str) -> (Method, String, Option<Value>) {
        let tenant = format!("/v1/tenants/{}", encode(key));
        match self {
            Operation::Suspend { reason } => {
                (Method::POST, format!("{tenant}/suspend"), Some(json!({ "reason": reason })))
            }
            Operation::Resume { reason } => (Method::POST, format!("{tenant}/resume"), with_reason(reason)),
            Operation::Update { patch } => (Method::PATCH, tenant, Some(patch.clone())),
            Operation::Delete { reason, grace, export } => {
                let mut body = json!({ "reason": reason, "export": export });
                if let Some(grace) = grace {
                    // Whole seconds.
                    body["grace"] = json!(grace.as_secs());
                }
                (Method::DELETE, tenant, Some(body))
            }
            Operation::Restore { reason } => (Method::POST, format!("{tenant}/restore"), with_reason(reason)),
            Operation::Export { reason } => (Method::POST, format!("{tenant}/export"), with_reason(reason)),
            Operation::Cancel { reason } => (Method::POST, format!("{tenant}/cancel"), with_reason(reason)),
            Operation::Retry => (Method::POST, format!("{tenant}/retry"), None),
        }
    }

    /// Where following ends: a retry's provisioning; the saga a cancel
    /// stops; the saga the 202 names.
    fn goal(&self, accepted: &Accepted) -> Goal {
        match (self, &accepted.saga_id) {
            (Operation::Retry, _) => Goal::After(accepted.previous_saga.clone()),
            (Operation::Cancel { .. }, _) | (_, None) => Goal::Latest,
            (_, Some(saga)) => Goal::Saga(saga.clone()),
        }
    }

    /// Whether the end is what was asked for: a cancel wants the saga
    /// cancelled, the others want it to succeed.
    pub fn succeeded(&self, outcome: &Outcome) -> bool {
        match self {
            Operation::Cancel { .. } => {
                outcome.tenant["saga"]["state"] == "cancelled" || outcome.status() == "CANCELLED"
            }
            _ => outcome.ok,
        }
    }
}

/// What one request answered: the saga to follow.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub saga_id: Option<String>,
    /// A retry's: the tenant's latest saga before it was asked for.
    pub previous_saga: Option<String>,
    pub answer: Value,
}

/// Sends `operation` for `key` with `idempotency_key` (a new uuid when none).
pub async fn ask(api: &Api, operation: &Operation, key: &str, idempotency_key: Option<&str>) -> Result<Accepted> {
    let previous_saga = match operation {
        Operation::Retry => api.tenant(key).await?["saga"]["id"].as_str().map(str::to_owned),
        _ => None,
    };
    let (method, path, body) = operation.request(key);
    let generated = uuid::Uuid::new_v4().to_string();
    let idempotency_key = idempotency_key.unwrap_or(&generated);
    let (_, answer) = api.send(method, &path, body.as_ref(), Some(idempotency_key)).await?;
    let saga_id = answer["saga_id"].as_str().map(str::to_owned);
    Ok(Accepted { saga_id, previous_saga, answer })
}

/// Asks and, unless `--no-wait`, follows the saga to its end.
pub async fn ask_and_follow(
    api: &Api,
    operation: &Operation,
    key: &str,
    idempotency_key: Option<&str>,
    wait: &Wait,
    display: Display,
) -> Result<(Accepted, Option<Outcome>)> {
    let accepted = ask(api, operation, key, idempotency_key).await?;
    if display != Display::Quiet {
        let saga = accepted.saga_id.as_deref().unwrap_or("?");
        output::log(format!("{} of {key} accepted (saga {saga})", operation.verb()));
    }
    if wait.no_wait {
        return Ok((accepted, None));
    }
    let goal = operation.goal(&accepted);
    let outcome = follow::follow(api, key, &goal, wait, display).await?;
    Ok((accepted, Some(outcome)))
}

/// One tenant: ask, follow, report.
pub async fn single(
    ctx: &Ctx,
    operation: &Operation,
    key: &str,
    idempotency_key: Option<&str>,
    wait: &Wait,
) -> Result<Exit> {
    let display = Display::for_format(ctx.format);
    let (accepted, outcome) = ask_and_follow(&ctx.api()?, operation, key, idempotency_key, wait, display).await?;
    match outcome {
        Some(outcome) => tenants::end(ctx, key, &outcome, operation.succeeded(&outcome)),
        None => {
            output::item(ctx.format, &accepted.answer, &[("saga", |a| output::cell(a.get("saga_id")))]);
            Ok(Exit::Done)
        }
    }
}

/// `tenants update KEY …`: a patch of what was given.
pub async fn update(ctx: &Ctx, args: &UpdateArgs) -> Result<Exit> {
    let mut patch = Map::new();
    if let Some(name) = &args.name {
        patch.insert("display_name".into(), json!(name));
    }
    if !args.domains.is_empty() {
        patch.insert("domains".into(), json!(args.domains));
    }
    if let Some(email) = &args.admin_email {
        patch.insert(
            "admin".into(),
            json!({
                "email": email,
                "first_name": args.first_name.clone().unwrap_or_default(),
                "last_name": args.last_name.clone().unwrap_or_default(),
            }),
        );
    }
    if !args.labels.is_empty() {
        let labels: Map<String, Value> = args.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        patch.insert("labels".into(), Value::Object(labels));
    }
    if let Some(plan) = &args.plan {
        patch.insert("plan".into(), json!(plan));
    }
    if patch.is_empty() {
        anyhow::bail!(UsageError("nothing to update: give --name, --domain, --admin-email, --label or --plan".into()));
    }
    if let Some(reason) = &args.reason {
        patch.insert("reason".into(), json!(reason));
    }
    let operation = Operation::Update { patch: Value::Object(patch) };
    single(ctx, &operation, &args.key, args.idempotency_key.as_deref(), &args.wait).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_operation_has_its_route() {
        let delete =
            Operation::Delete { reason: "churned".into(), grace: Some(Duration::from_secs(7 * 86_400)), export: false };
        let (method, path, body) = delete.request("acme");
        assert_eq!((method, path.as_str()), (Method::DELETE, "/v1/tenants/acme"));
        assert_eq!(body, Some(json!({"reason": "churned", "grace": 604_800, "export": false})));
        let (method, path, body) = Operation::Suspend { reason: "unpaid".into() }.request("acme");
        assert_eq!(
            (method, path.as_str(), body),
            (Method::POST, "/v1/tenants/acme/suspend", Some(json!({"reason": "unpaid"})))
        );
        let (_, path, body) = Operation::Resume { reason: None }.request("acme");
        assert_eq!((path.as_str(), body), ("/v1/tenants/acme/resume", Some(json!({}))));
        assert_eq!(Operation::Export { reason: None }.request("acme").1, "/v1/tenants/acme/export");
        assert_eq!(Operation::Restore { reason: None }.request("acme").1, "/v1/tenants/acme/restore");
    }
}
