//! The S3 calls a client sends, named by operation, in order: an
//! interceptor for the storage tests and `bench-storage`, which check and
//! report what each step costs. Shared by path (`#[path]`), not through the
//! library: the worker itself has no use for it.

use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// Every request sent (each attempt, so retries show), by operation name.
#[derive(Debug, Clone, Default)]
pub struct Calls(Arc<Mutex<Vec<&'static str>>>);

impl Calls {
    /// A client like `client` whose requests this log records.
    pub fn watch(&self, client: &Client) -> Client {
        Client::from_conf(client.config().to_builder().interceptor(self.clone()).build())
    }

    /// The calls sent since the last `take`.
    pub fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "Calls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let name = operation(request.method(), request.uri());
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(name);
        Ok(())
    }
}

/// The S3 operation of a path-style request, from its method, path and
/// query; only the operations the storage worker sends are told apart.
pub fn operation(method: &str, uri: &str) -> &'static str {
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let path = path.split_once("://").map_or(path, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let keyed = path.trim_start_matches('/').split_once('/').is_some_and(|(_, key)| !key.is_empty());
    let has = |name: &str| query.split('&').any(|p| p == name || p.split_once('=').is_some_and(|(k, _)| k == name));
    match method {
        "GET" if has("list-type") => "ListObjectsV2",
        "GET" if has("versions") => "ListObjectVersions",
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" if has("tagging") => "GetBucketTagging",
        "GET" if has("policy") => "GetBucketPolicy",
        "GET" if keyed => "GetObject",
        "PUT" if has("tagging") => "PutBucketTagging",
        "PUT" if has("policy") => "PutBucketPolicy",
        "PUT" if keyed => "PutObject",
        "PUT" => "CreateBucket",
        "POST" if has("delete") => "DeleteObjects",
        "HEAD" if keyed => "HeadObject",
        "HEAD" => "HeadBucket",
        "DELETE" if has("policy") => "DeleteBucketPolicy",
        "DELETE" if keyed => "DeleteObject",
        "DELETE" => "DeleteBucket",
        _ => "other",
    }
}
