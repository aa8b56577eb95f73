//! `POST /v1/tenants/{key}/export`: the tenant's database and objects
//! copied to the archive with a verified manifest; the tenant stays as it
//! is. Where it went is on the tenant (`export_location`, `exported_at`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use landlord_control_plane::Operation;

use super::operate::with_optional_reason;
use crate::auth::Caller;
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
    with_optional_reason(&app, &caller, &key, &headers, &body, Operation::Export, "exported through the API").await
}
