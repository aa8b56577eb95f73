//! `POST /console/tenants/{key}/{action}`: retry, cancel, suspend, resume,
//! restore, delete. Each calls the `/v1/tenants` handler of the same name
//! with the session's caller, so the scope checks, the control plane's
//! refusals, the idempotency and the audit rows are exactly the API's.
//! The console adds only what a browser needs: the CSRF check, and for
//! destructive actions (cancel, suspend, delete) a reason and the tenant's
//! key typed again.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

use super::Console;
use super::filter::Fields;
use super::html::{Result, url};
use super::session::Operator;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::tenants;

/// What the console can do to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Retry,
    Cancel,
    Suspend,
    Resume,
    Restore,
    Delete,
}

impl Action {
    pub const ALL: [Action; 6] =
        [Action::Retry, Action::Cancel, Action::Suspend, Action::Resume, Action::Restore, Action::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Action::Retry => "retry",
            Action::Cancel => "cancel",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Restore => "restore",
            Action::Delete => "delete",
        }
    }

    pub fn parse(name: &str) -> Result<Self, Problem> {
        Self::ALL.into_iter().find(|a| a.name() == name).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|a| a.name()).collect();
            Problem::not_found(format!("no console action {name:?}; there are: {}", known.join(", ")))
        })
    }

    /// Needs a reason and a confirmation.
    pub fn destructive(self) -> bool {
        matches!(self, Action::Cancel | Action::Suspend | Action::Delete)
    }

    /// Whether a tenant in `status` (`busy`: an operation at work) may be
    /// asked for this; `Err` says why not. The handler checks again.
    pub fn eligible(self, status: &str, busy: bool) -> Result<(), String> {
        use landlord_control_plane::Operation;
        let operation = match self {
            Action::Retry => {
                return if status == "FAILED" { Ok(()) } else { Err(format!("{status}: only FAILED can be retried")) };
            }
            Action::Cancel => {
                return if status == "PROVISIONING" && busy {
                    Ok(())
                } else {
                    Err(format!("{status}: no provisioning in progress to cancel"))
                };
            }
            Action::Suspend => Operation::Suspend,
            Action::Resume => Operation::Resume,
            Action::Restore => Operation::Restore,
            Action::Delete => Operation::Offboard,
        };
        let allowed = operation.allowed_from();
        if !allowed.iter().any(|s| s.as_str() == status) {
            let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
            return Err(format!("{status}: {} is allowed from {}", self.name(), names.join(" or ")));
        }
        if busy {
            return Err(format!("{status}: another operation is at work on it"));
        }
        Ok(())
    }
}

/// The inputs of one action on one tenant.
#[derive(Debug)]
pub struct Ask<'a> {
    pub action: Action,
    pub key: &'a str,
    pub reason: Option<&'a str>,
    /// Delete: the grace period in seconds (None: the default).
    pub grace: Option<u64>,
    /// The Idempotency-Key the handler gets: a repeated form is one request.
    pub idempotency: String,
}

/// Runs `ask` through the API's handler as `caller`: `Ok` once accepted.
pub async fn perform(console: &Console, caller: &Caller, ask: Ask<'_>) -> Result<(), Problem> {
    let app = console.app.clone();
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        tenants::IDEMPOTENCY_KEY,
        HeaderValue::from_str(&ask.idempotency)
            .map_err(|_| Problem::bad_request("idempotency-key", "the form's nonce is not a header value"))?,
    );
    let key = axum::extract::Path(ask.key.to_owned());
    let state = axum::extract::State(app);
    let caller = caller.clone();
    let reason = ask.reason.map(str::trim).filter(|r| !r.is_empty());
    let body = |value: serde_json::Value| Bytes::from(value.to_string());
    let answered: Response = match ask.action {
        Action::Retry => tenants::retry(state, caller, key).await?,
        Action::Cancel => tenants::cancel(state, caller, key, headers, body(json!({ "reason": reason }))).await?,
        Action::Suspend => {
            tenants::suspend(state, caller, key, headers, body(json!({ "reason": reason.unwrap_or("") }))).await?
        }
        Action::Resume => tenants::resume(state, caller, key, headers, body(json!({ "reason": reason }))).await?,
        Action::Restore => tenants::restore(state, caller, key, headers, body(json!({ "reason": reason }))).await?,
        Action::Delete => {
            let mut value = json!({ "reason": reason.unwrap_or("") });
            if let Some(grace) = ask.grace {
                value["grace"] = json!(grace);
            }
            tenants::delete(state, caller, key, headers, body(value)).await?
        }
    };
    if answered.status().is_success() {
        Ok(())
    } else {
        Err(Problem::new(
            answered.status(),
            "refused",
            format!("{} was answered {}", ask.action.name(), answered.status()),
        ))
    }
}

/// The grace field of a form: seconds, or none for the default.
pub fn grace(fields: &Fields) -> Result<Option<u64>, Problem> {
    fields
        .get("grace")
        .map(|raw| {
            raw.trim()
                .parse::<u64>()
                .map_err(|_| Problem::invalid("grace.invalid", format!("grace {raw:?} is not a number of seconds")))
        })
        .transpose()
}

/// `POST /console/tenants/{key}/{action}` with `csrf`, `nonce`, and for
/// destructive actions `reason` and `confirm_key`; delete takes `grace`.
pub async fn act(
    State(console): State<Console>,
    operator: Operator,
    Path((key, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let fields = Fields::parse(&body);
    operator.check_csrf(&console.keys, fields.csrf(&headers))?;
    let action = Action::parse(&action)?;
    // The scope first, as the API: a read-only session learns nothing more.
    operator.caller.require(crate::auth::WRITE)?;
    if action.destructive() {
        if fields.get("reason").is_none_or(|r| r.trim().is_empty()) {
            return Err(Problem::invalid("reason.required", "a reason is required: say why, for the audit log").into());
        }
        if fields.get("confirm_key").map(str::trim) != Some(key.as_str()) {
            return Err(Problem::invalid(
                "confirm_key.mismatch",
                format!("type the tenant's key {key:?} to confirm {}", action.name()),
            )
            .into());
        }
    }
    let nonce = fields.get("nonce").map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let ask = Ask {
        action,
        key: &key,
        reason: fields.get("reason"),
        grace: grace(&fields)?,
        idempotency: format!("console:{nonce}:{}", action.name()),
    };
    perform(&console, &operator.caller, ask).await?;
    Ok(Redirect::to(&format!("/console/tenants/{}?done={}", url(&key), action.name())).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_follows_the_lifecycle() {
        assert!(Action::Retry.eligible("FAILED", false).is_ok());
        assert!(Action::Retry.eligible("ACTIVE", false).is_err());
        assert!(Action::Cancel.eligible("PROVISIONING", true).is_ok());
        assert!(Action::Suspend.eligible("ACTIVE", false).is_ok());
        assert!(Action::Suspend.eligible("ACTIVE", true).unwrap_err().contains("another operation"));
        assert!(Action::Resume.eligible("ACTIVE", false).is_err());
        assert!(Action::Delete.eligible("SUSPENDED", false).is_ok());
        assert!(Action::Restore.eligible("DELETION_SCHEDULED", false).is_ok());
    }
}
