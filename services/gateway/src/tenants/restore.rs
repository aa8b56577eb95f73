//! `POST /v1/tenants/{key}/restore`: an offboarded tenant brought back to
//! ACTIVE during its grace period, its data untouched; the purge is called
//! off.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_control_plane::Operation;

use super::operate::with_optional_reason;
use crate::auth::Caller;
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
    with_optional_reason(&app, &caller, &key, &headers, &body, Operation::Restore, "restored through the API").await
}
