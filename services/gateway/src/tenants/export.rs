//! `POST /v1/tenants/{key}/export`: the tenant's database and objects
//! copied to the archive with a verified manifest; the tenant stays as it
//! is. Where it went is on the tenant (`export_location`, `exported_at`).

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

/// `POST /v1/tenants/{key}/export` `{reason?}`.
pub async fn export(
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
    let reason = reason(body.reason.as_deref(), false, "exported through the API")?;
    operate(&app, &key, api_request(&key, Operation::Export, &idempotency_key, &caller, reason)).await
}
