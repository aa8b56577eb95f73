//! Which S3 errors are worth a retry, and the few error codes the worker
//! tells apart.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use landlord_runtime::StepFailure;

pub(crate) type Response = aws_sdk_s3::config::http::HttpResponse;

/// Classifies an SDK error: connection trouble, timeouts, throttling and
/// 5xx are retryable; the rest (access denied, invalid requests) is not.
pub(crate) fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    what: &str,
    error: &SdkError<E, Response>,
) -> StepFailure {
    match error {
        SdkError::TimeoutError(_) => StepFailure::retryable("timeout", format!("{what}: timed out")),
        SdkError::DispatchFailure(e) => {
            StepFailure::retryable("unreachable", format!("{what}: S3 unreachable ({:?})", e.as_connector_error()))
        }
        SdkError::ResponseError(_) => StepFailure::retryable("bad_response", format!("{what}: unreadable response")),
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = e.err().code().unwrap_or("unknown").to_owned();
            let message = format!("{what}: {code} (HTTP {status}): {}", e.err().message().unwrap_or(""));
            if status >= 500 || status == 429 || transient(&code) {
                StepFailure::retryable(code, message)
            } else {
                StepFailure::permanent(code, message)
            }
        }
        other => StepFailure::permanent("s3_error", format!("{what}: {other}")),
    }
}

/// Codes worth another attempt whatever the HTTP status: those S3 documents
/// as "try again", and two that only say someone else acted in between —
/// the bucket vanished (a compensation of an older saga deleted it while
/// this step made it) or filled up (a forward step marked it while this
/// compensation emptied it). The next attempt reads the marker again and
/// decides afresh.
fn transient(code: &str) -> bool {
    matches!(
        code,
        "SlowDown"
            | "RequestTimeout"
            | "OperationAborted"
            | "InternalError"
            | "ServiceUnavailable"
            | "Throttling"
            | "NoSuchBucket"
            | "BucketNotEmpty"
    )
}

/// The server does not implement this call (s3s-fs: tagging, versioning).
pub(crate) fn unsupported<E: ProvideErrorMetadata>(error: &SdkError<E, Response>) -> bool {
    matches!(code_of(error), Some("NotImplemented" | "MethodNotAllowed")) || status_of(error) == Some(501)
}

/// The server lacks the operation altogether (not: refuses this request):
/// what [`crate::support`] remembers.
pub(crate) fn not_implemented<E: ProvideErrorMetadata>(error: &SdkError<E, Response>) -> bool {
    code_of(error) == Some("NotImplemented") || status_of(error) == Some(501)
}

pub(crate) fn code_of<E: ProvideErrorMetadata>(error: &SdkError<E, Response>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

pub(crate) fn status_of<E>(error: &SdkError<E, Response>) -> Option<u16> {
    match error {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}
