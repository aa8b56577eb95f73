//! `POST /v1/tenants/{key}/suspend` and `POST /v1/tenants/{key}/resume`:
//! access blocked (non-payment, abuse) with the data untouched, and given
//! back.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_control_plane::Operation;

use super::bodies::SuspendBody;
use super::operate::{api_request, operate, reason, tenant_key, with_optional_reason};
use super::requests::idempotency_key;
use crate::auth::{Caller, WRITE};
use crate::problem::Result;
use crate::state::App;

/// `POST /v1/tenants/{key}/suspend` `{reason}` (required).
pub async fn suspend(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    caller.require(WRITE)?;
    let idempotency_key = idempotency_key(&headers)?;
    let key = tenant_key(&key)?;
    let body: SuspendBody = crate::body::json(&headers, &body)?;
    let reason = reason(Some(&body.reason), true, "")?;
    operate(&app, &caller, &key, api_request(&key, Operation::Suspend, &idempotency_key, &caller, reason)).await
}

/// `POST /v1/tenants/{key}/resume` `{reason?}`.
pub async fn resume(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    with_optional_reason(&app, &caller, &key, &headers, &body, Operation::Resume, "resumed through the API").await
}
