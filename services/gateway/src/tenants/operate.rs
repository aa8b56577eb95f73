//! What every lifecycle route — and the Clerk bridge — shares: an
//! operation asked of the control plane
//! ([`landlord_control_plane::operations::request`]: in one transaction the
//! tenant locked, checked, the request recorded with an audit row and its
//! `OperationRequested` put on the outbox), the refusals as problems, and
//! the 202 answer.
//!
//! The idempotency id of an API request is `api:<Idempotency-Key>`; the
//! saga id is derived from it and the operation, so a repeat (the same key,
//! the same operation) names the same saga and starts nothing new, whatever
//! body it came with: the first request's is the one that runs.

use axum::response::Response;
use landlord_contract::TenantKey;
use landlord_control_plane::Operation;
pub use landlord_control_plane::operations::{OperationRequest, Refused, RequestError, Requested, TenantPatch};

use super::bodies::OperationAccepted;
use super::requests::accepted_at;
use crate::auth::Caller;
use crate::problem::{Problem, Result};
use crate::state::App;

/// The longest idempotency id the control plane keeps.
const MAX_IDEMPOTENCY_ID: usize = 200;

/// The longest reason kept, in characters.
pub const MAX_REASON: usize = 1000;

/// The tenant key of a path, or 422 with the rule it breaks.
pub(crate) fn tenant_key(raw: &str) -> Result<TenantKey> {
    TenantKey::parse(raw).map_err(|e| Problem::invalid(e.rule(), e.to_string()))
}

/// A reason as given, trimmed: `default` when absent or blank, unless it
/// is required (422 `reason.required`); 422 when too long or holding
/// control characters.
pub(crate) fn reason(given: Option<&str>, required: bool, default: &str) -> Result<String> {
    let given = given.map(str::trim).unwrap_or_default();
    if given.is_empty() {
        if required {
            return Err(Problem::invalid("reason.required", "a reason is required: say why, for the audit log"));
        }
        return Ok(default.to_owned());
    }
    if given.chars().count() > MAX_REASON {
        return Err(Problem::invalid("reason.too_long", format!("the reason is longer than {MAX_REASON} characters")));
    }
    if given.chars().any(char::is_control) {
        return Err(Problem::invalid("reason.control_character", "the reason contains a control character"));
    }
    Ok(given.to_owned())
}

/// The statuses `operation` is allowed from, for messages.
fn allowed_from(operation: Operation) -> String {
    let names: Vec<&str> = operation.allowed_from().iter().map(|status| status.as_str()).collect();
    if names.is_empty() { "no status".to_owned() } else { names.join(" or ") }
}

/// A refusal of the control plane's, as the problem the API answers.
pub(crate) fn refusal(key: &str, refused: Refused) -> Problem {
    match refused {
        Refused::UnknownTenant => Problem::not_found(format!("no live tenant has the key {key:?}")),
        Refused::Conflict { operation, saga_id } => {
            let mut problem = Problem::conflict(
                "operation-in-progress",
                format!(
                    "tenant {key:?} is busy: {operation} (saga {saga_id}) is at work on it; one operation at a \
                     time — try again when it is done"
                ),
            )
            .with_rule("operation.one_at_a_time");
            problem.operation = Some(operation.to_string());
            problem.saga_id = Some(saga_id);
            problem
        }
        Refused::NotAllowed { operation, status } => Problem::conflict(
            "operation-not-allowed",
            format!(
                "cannot {operation} tenant {key:?}: it is {status}, and {operation} is allowed from {}",
                allowed_from(operation)
            ),
        )
        .with_rule("operation.not_allowed"),
        Refused::Invalid(rejection) => Problem::invalid(&rejection.rule, rejection.reason),
        Refused::ExportMissing => Problem::conflict(
            "export-missing",
            format!(
                "tenant {key:?} has no verified export and its offboarding did not waive one; export it first \
                 (POST /v1/tenants/{key}/export)"
            ),
        )
        .with_rule("export.missing"),
        Refused::NothingChanged => Problem::invalid(
            "update.nothing_changed",
            "the update changes nothing: every field it names already has that value",
        ),
    }
}

/// Asks the control plane for `request`; what it publishes goes out at once.
pub(crate) async fn ask(app: &App, request: OperationRequest) -> Result<Requested, RequestError> {
    let (requested, pending) =
        landlord_control_plane::operations::request(&app.pool, &app.namespace, &app.plans, request).await?;
    app.dispatcher.dispatch(pending).await;
    Ok(requested)
}

/// The request of an API caller for `operation` on `key`, with no patch,
/// purge time or export.
pub(super) fn api_request(
    key: &TenantKey,
    operation: Operation,
    idempotency_key: &str,
    caller: &Caller,
    reason: String,
) -> OperationRequest {
    OperationRequest {
        tenant_key: key.to_string(),
        operation,
        idempotency_id: format!("api:{idempotency_key}"),
        requested_by: caller.subject.clone(),
        reason,
        patch: None,
        purge_at: None,
        export: false,
    }
}

/// Asks for `request` on behalf of an API caller: 202 with the saga, or
/// the refusal. A tenant-scoped caller's request for another tenant is
/// refused as one for a missing tenant, before anything is asked.
pub(super) async fn operate(
    app: &App,
    caller: &Caller,
    key: &TenantKey,
    request: OperationRequest,
) -> Result<Response> {
    // The control plane keeps idempotency ids of up to 200 characters, the
    // `api:` prefix included.
    if request.idempotency_id.len() > MAX_IDEMPOTENCY_ID {
        return Err(Problem::bad_request(
            "idempotency-key",
            format!("an operation's Idempotency-Key is at most {} characters", MAX_IDEMPOTENCY_ID - "api:".len()),
        ));
    }
    if caller.tenant_scope().is_some() {
        // The live tenant the control plane would act on (a key names one
        // at most). Checked just before the request: a tenant is purged
        // and its key taken again only through sagas that take far longer.
        let live: Option<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM tenants WHERE key = $1 AND status <> 'DELETED'")
                .bind(key.as_str())
                .fetch_optional(&app.pool)
                .await?;
        if !live.is_some_and(|id| caller.may_see(id)) {
            return Err(refusal(key.as_str(), Refused::UnknownTenant));
        }
    }
    let operation = request.operation;
    let by = request.requested_by.clone();
    let requested = match ask(app, request).await {
        Ok(requested) => requested,
        Err(RequestError::Refused(refused)) => return Err(refusal(key.as_str(), refused)),
        Err(RequestError::Database(error)) => return Err(error.into()),
    };
    tracing::info!(
        key = %key, %operation, saga = %requested.saga_id, by, repeated = requested.repeated,
        "operation requested"
    );
    let tenant = requested.tenant_id;
    let status_url = format!("/v1/tenants/{tenant}");
    Ok(accepted_at(
        &OperationAccepted {
            saga_id: requested.saga_id,
            operation: operation.to_string(),
            tenant_id: tenant,
            key: key.to_string(),
            status_url: status_url.clone(),
        },
        &status_url,
    ))
}

/// The routes whose body is only an optional reason (resume, restore,
/// export): the write scope, an Idempotency-Key, the key, then `operation`
/// with `default_reason` when the body gives none.
pub(super) async fn with_optional_reason(
    app: &App,
    caller: &Caller,
    key: &str,
    headers: &axum::http::HeaderMap,
    body: &axum::body::Bytes,
    operation: Operation,
    default_reason: &str,
) -> Result<Response> {
    caller.require(crate::auth::WRITE)?;
    let idempotency_key = super::requests::idempotency_key(headers)?;
    let key = tenant_key(key)?;
    let body: super::bodies::ReasonBody = crate::body::json_or_default(headers, body)?;
    let reason = reason(body.reason.as_deref(), false, default_reason)?;
    operate(app, caller, &key, api_request(&key, operation, &idempotency_key, caller, reason)).await
}
