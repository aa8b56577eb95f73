//! `DELETE /v1/tenants/{key}`: offboarding. The tenant is suspended at
//! once, exported (unless the request waives it), and DELETION_SCHEDULED
//! until its grace period ends ([`super::grace`]); then the purge removes
//! everything and leaves a tombstone. `restore` brings it back meanwhile.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_control_plane::Operation;
use time::OffsetDateTime;

use super::bodies::DeleteBody;
use super::operate::{api_request, operate, reason, tenant_key};
use super::requests::idempotency_key;
use crate::auth::{Caller, WRITE};
use crate::problem::{Problem, Result};
use crate::state::App;

/// `DELETE /v1/tenants/{key}` `{reason, grace?, export?}`.
pub async fn delete(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    caller.require(WRITE)?;
    let idempotency_key = idempotency_key(&headers)?;
    let key = tenant_key(&key)?;
    if body.is_empty() {
        return Err(Problem::invalid(
            "reason.required",
            "an offboarding needs a body {\"reason\": \"…\"} (and may name grace, in seconds, and export)",
        ));
    }
    let body: DeleteBody = crate::body::json(&headers, &body)?;
    let reason = reason(Some(&body.reason), true, "")?;
    let purge_at = app.deletion_grace.purge_at(&caller, body.grace, OffsetDateTime::now_utc())?;
    let mut request = api_request(&key, Operation::Offboard, &idempotency_key, &caller, reason);
    request.purge_at = Some(purge_at);
    request.export = body.export;
    operate(&app, &caller, &key, request).await
}
