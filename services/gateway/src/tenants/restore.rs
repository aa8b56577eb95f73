//! `POST /v1/tenants/{key}/restore`: an offboarded tenant brought back to
//! ACTIVE during its grace period, its data untouched; the purge is called
//! off.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_control_plane::Operation;

use super::bodies::ReasonBody;
use super::operate::{api_request, operate, reason, tenant_key};
use super::requests::idempotency_key;
use crate::auth::{Caller, WRITE};
use crate::problem::Result;
use crate::state::App;

/// `POST /v1/tenants/{key}/restore` `{reason?}`.
pub async fn restore(
    State(app): State<App>,
    caller: Caller,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    caller.require(WRITE)?;
    let idempotency_key = idempotency_key(&headers)?;
    let key = tenant_key(&key)?;
    let body: ReasonBody = crate::body::json_or_default(&headers, &body)?;
    let reason = reason(body.reason.as_deref(), false, "restored through the API")?;
    operate(&app, &key, api_request(&key, Operation::Restore, &idempotency_key, &caller, reason)).await
}
