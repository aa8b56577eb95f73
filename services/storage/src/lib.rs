//! The `storage` worker: each tenant's S3 bucket, or its prefix in a shared
//! bucket for the pooled tier (DESIGN.md, "Isolation tiers").
//!
//! Serves `storage.create_bucket` and its compensation `storage.delete_bucket`.
//! Every bucket (or prefix) carries an ownership marker object,
//! `.landlord/tenant`, holding the tenant id, and a `landlord-tenant` tag
//! where the server supports tagging. The marker is what proves "ours" on
//! any S3 server:
//!
//! - an existing bucket is success only if its marker names this tenant; a
//!   marker naming another tenant, or objects without a marker, is a
//!   permanent conflict. An *empty* bucket without a marker is what a crash
//!   between creating the bucket and writing the marker leaves behind, and
//!   holds nothing to lose: it is adopted;
//! - compensation empties the bucket (every object and version, paginated,
//!   deleted in batches of 1,000) and deletes it, only if the marker names
//!   this tenant (or the bucket is empty); a missing bucket is already done.
//!
//! Configuration, besides the runtime's `LANDLORD_*` variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LANDLORD_S3_ENDPOINT` | AWS | endpoint URL of an S3-compatible server |
//! | `LANDLORD_S3_REGION` | `us-east-1` | region |
//! | `LANDLORD_S3_PATH_STYLE` | `false` | path-style addressing (most S3-compatible servers) |
//! | `LANDLORD_S3_BUCKET_PATTERN` | `landlord-{key}` | bucket name; `{key}` is the tenant key |
//! | `LANDLORD_S3_SHARED_BUCKET` | `landlord-pooled` | the pooled tier's shared bucket |
//! | `LANDLORD_S3_VERSIONING` | `false` | enable versioning on new buckets |
//! | `LANDLORD_S3_ENCRYPTION` | — | default encryption: `AES256` or `aws:kms` |
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | — | static credentials |
//!
//! With `AWS_ACCESS_KEY_ID` set, `AWS_SECRET_ACCESS_KEY` is required too and
//! those keys are used. Without it, credentials come from the standard AWS
//! chain (aws-config): shared profile files (`AWS_PROFILE`), web identity
//! (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`), the ECS container
//! endpoint and EC2 instance metadata — resolved at the first request, so
//! missing credentials show up as the first step's error, not at start.
//!
//! HTTPS uses rustls on *ring* (already in the tree through async-nats);
//! the SDK's default client would build aws-lc from C.

use std::collections::HashMap;
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, Delete, ObjectIdentifier, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tag, Tagging, VersioningConfiguration,
};
use aws_smithy_http_client::tls;
use landlord_contract::{TenantKey, pb};
use landlord_runtime::{ConfigError, DeliveryInfo, Env, StepFailure, StepService};
use tracing::Instrument as _;

pub const SERVICE: &str = "storage";
/// The ownership marker, relative to the bucket root or the tenant's prefix.
pub const MARKER: &str = ".landlord/tenant";
const TAG: &str = "landlord-tenant";

#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub bucket_pattern: String,
    pub shared_bucket: String,
    pub versioning: bool,
    pub encryption: Option<ServerSideEncryption>,
    /// Static keys; `None`: the standard AWS credential chain.
    pub credentials: Option<StaticKeys>,
}

#[derive(Clone)]
pub struct StaticKeys {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeys").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let invalid = |var: &str, value: &str, problem: String| ConfigError::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            problem,
        };
        let bucket_pattern = env.string("LANDLORD_S3_BUCKET_PATTERN", "landlord-{key}");
        if !bucket_pattern.contains("{key}") {
            return Err(invalid("LANDLORD_S3_BUCKET_PATTERN", &bucket_pattern, "must contain {key}".into()));
        }
        // A pattern that breaks S3's rules for an ordinary key would fail
        // every tenant: refuse it at start.
        check_bucket_name(&bucket_pattern.replace("{key}", "tenant")).map_err(|rule| {
            invalid("LANDLORD_S3_BUCKET_PATTERN", &bucket_pattern, format!("makes invalid bucket names: {rule}"))
        })?;
        let endpoint = env.raw("LANDLORD_S3_ENDPOINT");
        if let Some(url) = &endpoint {
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                return Err(invalid("LANDLORD_S3_ENDPOINT", url, "expected http://host[:port] or https://…".into()));
            }
        }
        let region = env.string("LANDLORD_S3_REGION", &env.string("AWS_REGION", "us-east-1"));
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid("LANDLORD_S3_REGION", &region, "expected a region name such as us-east-1".into()));
        }
        let credentials = match env.raw("AWS_ACCESS_KEY_ID") {
            Some(access_key) if !access_key.is_empty() => Some(StaticKeys {
                access_key,
                secret_key: env.required("AWS_SECRET_ACCESS_KEY", "the secret key for AWS_ACCESS_KEY_ID")?,
                session_token: env.raw("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            }),
            _ => None,
        };
        let shared_bucket = env.string("LANDLORD_S3_SHARED_BUCKET", "landlord-pooled");
        check_bucket_name(&shared_bucket).map_err(|p| invalid("LANDLORD_S3_SHARED_BUCKET", &shared_bucket, p))?;
        let encryption = match env.raw("LANDLORD_S3_ENCRYPTION") {
            None => None,
            Some(v) if v == "AES256" => Some(ServerSideEncryption::Aes256),
            Some(v) if v == "aws:kms" => Some(ServerSideEncryption::AwsKms),
            Some(v) => return Err(invalid("LANDLORD_S3_ENCRYPTION", &v, "expected AES256 or aws:kms".into())),
        };
        Ok(Self {
            endpoint,
            region,
            path_style: env.parse("LANDLORD_S3_PATH_STYLE", false)?,
            bucket_pattern,
            shared_bucket,
            versioning: env.parse("LANDLORD_S3_VERSIONING", false)?,
            encryption,
            credentials,
        })
    }

    pub fn client(&self) -> Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let region = Region::new(self.region.clone());
        let credentials = match &self.credentials {
            Some(keys) => SharedCredentialsProvider::new(Credentials::new(
                &keys.access_key,
                &keys.secret_key,
                keys.session_token.clone(),
                None,
                "LANDLORD environment",
            )),
            None => {
                // aws-config's default chain, built synchronously (its own
                // builder is async) and on the same HTTP client.
                let conf =
                    ProviderConfig::without_region().with_region(Some(region.clone())).with_http_client(http.clone());
                use aws_config::{ecs, environment, imds, profile, web_identity_token};
                SharedCredentialsProvider::new(
                    CredentialsProviderChain::first_try(
                        "Environment",
                        environment::EnvironmentVariableCredentialsProvider::new(),
                    )
                    .or_else("Profile", profile::ProfileFileCredentialsProvider::builder().configure(&conf).build())
                    .or_else(
                        "WebIdentityToken",
                        web_identity_token::WebIdentityTokenCredentialsProvider::builder().configure(&conf).build(),
                    )
                    .or_else("EcsContainer", ecs::EcsCredentialsProvider::builder().configure(&conf).build())
                    .or_else(
                        "Ec2InstanceMetadata",
                        imds::credentials::ImdsCredentialsProvider::builder().configure(&conf).build(),
                    ),
                )
            }
        };
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(region)
            .credentials_provider(credentials)
            .force_path_style(self.path_style)
            // Checksums only where S3 requires them: S3-compatible servers
            // differ in which of the newer checksum headers they accept.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Client::from_conf(config.build())
    }

    /// The bucket for tenant `key`, checked against S3's naming rules.
    pub fn bucket_for(&self, key: &str) -> Result<String, StepFailure> {
        let name = self.bucket_pattern.replace("{key}", key);
        check_bucket_name(&name).map_err(|rule| {
            StepFailure::permanent("invalid_bucket_name", format!("bucket name {name:?} breaks S3's rules: {rule}"))
        })?;
        Ok(name)
    }
}

/// S3's general-purpose bucket naming rules; the broken rule, if any.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err("length must be 3 to 63 characters".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("only lowercase letters, digits, '-' and '.' are allowed, not {c:?}"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("no adjacent periods, and no period next to a hyphen".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|part| part.parse::<u8>().is_ok()) {
        return Err("must not look like an IP address".into());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("must not begin with {prefix:?}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("must not end with {suffix:?}"));
        }
    }
    Ok(())
}

/// Classifies an SDK error: connection trouble, timeouts, throttling and
/// 5xx are retryable; the rest (access denied, invalid requests) is not.
type Response = aws_sdk_s3::config::http::HttpResponse;

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
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

/// Codes S3 documents as "try again" whatever the HTTP status.
fn transient(code: &str) -> bool {
    matches!(
        code,
        "SlowDown" | "RequestTimeout" | "OperationAborted" | "InternalError" | "ServiceUnavailable" | "Throttling"
    )
}

/// The server does not implement this call (s3s-fs: tagging, versioning).
fn unsupported<E: ProvideErrorMetadata>(error: &SdkError<E, Response>) -> bool {
    matches!(code_of(error), Some("NotImplemented" | "MethodNotAllowed")) || status_of(error) == Some(501)
}

fn code_of<E: ProvideErrorMetadata>(error: &SdkError<E, Response>) -> Option<&str> {
    match error {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

fn status_of<E>(error: &SdkError<E, Response>) -> Option<u16> {
    match error {
        SdkError::ServiceError(e) => Some(e.raw().status().as_u16()),
        _ => None,
    }
}

/// Where a tenant's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub bucket: String,
    /// Empty for a bucket of its own; `tenants/<key>/` in the shared bucket.
    pub prefix: String,
}

impl Place {
    fn marker(&self) -> String {
        format!("{}{MARKER}", self.prefix)
    }
}

/// What a place holds, as far as ownership goes.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    Missing,
    Empty,
    Tenant(String),
    /// Objects but no marker.
    Unmarked,
}

/// What reading the ownership marker found.
enum Marker {
    NoBucket,
    Absent,
    Tenant(String),
}

/// The storage worker's steps.
#[derive(Debug, Clone)]
pub struct Storage {
    settings: Settings,
    client: Client,
}

impl Storage {
    pub fn new(settings: Settings) -> Self {
        let client = settings.client();
        Self { settings, client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn place(&self, tenant: &pb::TenantSpec) -> Result<Place, StepFailure> {
        if tenant.tier == pb::Tier::Pooled as i32 {
            // The key becomes part of an object key: checked here too, since
            // `one/two` would land inside tenant `one`'s prefix.
            let key = TenantKey::parse(&tenant.key).map_err(|e| {
                StepFailure::permanent(
                    "invalid_tenant_key",
                    format!("no prefix for key {:?}: {}: {e}", tenant.key, e.rule()),
                )
            })?;
            Ok(Place { bucket: self.settings.shared_bucket.clone(), prefix: format!("tenants/{}/", key.as_str()) })
        } else {
            Ok(Place { bucket: self.settings.bucket_for(&tenant.key)?, prefix: String::new() })
        }
    }

    async fn owner(&self, place: &Place) -> Result<Owner, StepFailure> {
        match self.marker(place).await? {
            Marker::NoBucket => return Ok(Owner::Missing),
            Marker::Tenant(id) => return Ok(Owner::Tenant(id)),
            Marker::Absent => {}
        }
        let listed = self.client.list_objects_v2().bucket(&place.bucket).prefix(&place.prefix).max_keys(1).send().await;
        match listed {
            Ok(page) if page.contents().is_empty() && place.prefix.is_empty() => {
                // An empty bucket may still carry a tenant tag.
                Ok(self.tagged_tenant(&place.bucket).await?.map_or(Owner::Empty, Owner::Tenant))
            }
            Ok(page) if page.contents().is_empty() => Ok(Owner::Empty),
            // The marker may have been written between the two reads (a
            // concurrent delivery creating the same place): read it again
            // before calling the objects someone else's.
            Ok(_) => Ok(match self.marker(place).await? {
                Marker::Tenant(id) => Owner::Tenant(id),
                Marker::Absent => Owner::Unmarked,
                Marker::NoBucket => Owner::Missing,
            }),
            Err(e) if code_of(&e) == Some("NoSuchBucket") => Ok(Owner::Missing),
            Err(e) => Err(classify("listing the bucket", &e)),
        }
    }

    async fn marker(&self, place: &Place) -> Result<Marker, StepFailure> {
        match self.client.get_object().bucket(&place.bucket).key(place.marker()).send().await {
            Ok(object) => {
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| StepFailure::retryable("bad_response", format!("reading the marker: {e}")))?;
                Ok(Marker::Tenant(String::from_utf8_lossy(&body.into_bytes()).trim().to_owned()))
            }
            Err(e) if code_of(&e) == Some("NoSuchBucket") => Ok(Marker::NoBucket),
            Err(e) if code_of(&e) == Some("NoSuchKey") || status_of(&e) == Some(404) => Ok(Marker::Absent),
            Err(e) => Err(classify("reading the ownership marker", &e)),
        }
    }

    /// The `landlord-tenant` tag of a bucket, where the server keeps tags.
    async fn tagged_tenant(&self, bucket: &str) -> Result<Option<String>, StepFailure> {
        match self.client.get_bucket_tagging().bucket(bucket).send().await {
            Ok(tags) => Ok(tags.tag_set().iter().find(|t| t.key() == TAG).map(|t| t.value().to_owned())),
            // No tags, no tagging on this server, or no bucket: no tag to go by.
            Err(e)
                if matches!(code_of(&e), Some("NoSuchTagSet" | "NoSuchTagSetError" | "NoSuchBucket"))
                    || unsupported(&e) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("reading the bucket's tags", &e)),
        }
    }

    async fn create(&self, tenant: &pb::TenantSpec) -> Result<pb::StepOk, StepFailure> {
        let place = self.place(tenant)?;
        let own_bucket = place.prefix.is_empty();
        let mut owner = self.owner(&place).await?;
        if owner == Owner::Missing && !self.create_bucket(&place.bucket).await? {
            // It appeared since we looked (a concurrent delivery, or another
            // pooled tenant creating the shared bucket): look again.
            owner = self.owner(&place).await?;
        }
        match owner {
            Owner::Tenant(id) if id == tenant.tenant_id => {
                tracing::info!(bucket = %place.bucket, "already there and ours");
                return Ok(self.created(tenant, &place));
            }
            Owner::Tenant(other) => {
                return Err(StepFailure::permanent(
                    "conflicting_owner",
                    format!("{}/{} belongs to tenant {other}, not {}", place.bucket, place.prefix, tenant.tenant_id),
                ));
            }
            Owner::Unmarked => {
                return Err(StepFailure::permanent(
                    "conflicting_owner",
                    format!("{}/{} exists with objects and no Landlord marker", place.bucket, place.prefix),
                ));
            }
            Owner::Missing | Owner::Empty => {}
        }
        if own_bucket {
            self.configure(&place.bucket, &tenant.tenant_id).await?;
        }
        self.client
            .put_object()
            .bucket(&place.bucket)
            .key(place.marker())
            .body(ByteStream::from(tenant.tenant_id.clone().into_bytes()))
            .content_type("text/plain")
            .send()
            .await
            .map_err(|e| classify("writing the ownership marker", &e))?;
        tracing::info!(bucket = %place.bucket, prefix = %place.prefix, "created");
        Ok(self.created(tenant, &place))
    }

    /// Creates the bucket: `true` if this call made it, `false` if it was
    /// already there and reachable with our credentials.
    async fn create_bucket(&self, bucket: &str) -> Result<bool, StepFailure> {
        let mut request = self.client.create_bucket().bucket(bucket);
        if self.settings.region != "us-east-1" {
            request = request.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(self.settings.region.as_str().into())
                    .build(),
            );
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if code_of(&e) == Some("BucketAlreadyOwnedByYou") => Ok(false),
            // AWS: another account's. Other servers (s3s-fs, older MinIO)
            // answer this for buckets of ours too: a HEAD tells them apart.
            Err(e) if code_of(&e) == Some("BucketAlreadyExists") => {
                match self.client.head_bucket().bucket(bucket).send().await {
                    Ok(_) => Ok(false),
                    Err(e) if status_of(&e).is_some_and(|s| s < 500) => Err(StepFailure::permanent(
                        "conflicting_owner",
                        format!(
                            "bucket {bucket} exists and is not ours (HEAD answers HTTP {})",
                            status_of(&e).unwrap_or(0)
                        ),
                    )),
                    Err(e) => Err(classify("checking an existing bucket", &e)),
                }
            }
            Err(e) => Err(classify("creating the bucket", &e)),
        }
    }

    /// Tag, encryption and versioning, each where the server supports it.
    async fn configure(&self, bucket: &str, tenant_id: &str) -> Result<(), StepFailure> {
        let tag = Tag::builder()
            .key(TAG)
            .value(tenant_id)
            .build()
            .map_err(|e| StepFailure::permanent("tag", e.to_string()))?;
        let tagging =
            Tagging::builder().tag_set(tag).build().map_err(|e| StepFailure::permanent("tag", e.to_string()))?;
        match self.client.put_bucket_tagging().bucket(bucket).tagging(tagging).send().await {
            Ok(_) => {}
            Err(e) if unsupported(&e) => {
                tracing::debug!(bucket, "tagging not supported here; the marker object proves ownership");
            }
            Err(e) => return Err(classify("tagging the bucket", &e)),
        }
        if let Some(algorithm) = &self.settings.encryption {
            let rule = ServerSideEncryptionRule::builder()
                .apply_server_side_encryption_by_default(
                    ServerSideEncryptionByDefault::builder()
                        .sse_algorithm(algorithm.clone())
                        .build()
                        .map_err(|e| StepFailure::permanent("encryption", e.to_string()))?,
                )
                .build();
            let configuration = ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| StepFailure::permanent("encryption", e.to_string()))?;
            match self
                .client
                .put_bucket_encryption()
                .bucket(bucket)
                .server_side_encryption_configuration(configuration)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e) if unsupported(&e) => {
                    tracing::warn!(bucket, "default encryption is not supported by this S3 server");
                }
                Err(e) => return Err(classify("setting default encryption", &e)),
            }
        }
        if self.settings.versioning {
            let versioning = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
            match self.client.put_bucket_versioning().bucket(bucket).versioning_configuration(versioning).send().await {
                Ok(_) => {}
                Err(e) if unsupported(&e) => {
                    tracing::warn!(bucket, "versioning is not supported by this S3 server");
                }
                Err(e) => return Err(classify("enabling versioning", &e)),
            }
        }
        Ok(())
    }

    fn created(&self, tenant: &pb::TenantSpec, place: &Place) -> pb::StepOk {
        let metadata = HashMap::from([("tenant_id".to_owned(), tenant.tenant_id.clone())]);
        let (kind, external_id) = if place.prefix.is_empty() {
            ("s3.bucket", place.bucket.clone())
        } else {
            ("s3.prefix", format!("{}/{}", place.bucket, place.prefix))
        };
        let mut outputs = HashMap::from([("storage.bucket".to_owned(), place.bucket.clone())]);
        if !place.prefix.is_empty() {
            outputs.insert("storage.prefix".into(), place.prefix.clone());
        }
        if let Some(endpoint) = &self.settings.endpoint {
            outputs.insert("storage.endpoint".into(), endpoint.clone());
        }
        pb::StepOk { resources: vec![pb::Resource { kind: kind.into(), external_id, metadata }], outputs }
    }

    /// Where the forward step reported creating things, else where the
    /// current settings put this tenant (a crash before the report).
    fn recorded_place(&self, tenant: &pb::TenantSpec, resources: &[pb::Resource]) -> Result<Place, StepFailure> {
        for resource in resources {
            match resource.kind.as_str() {
                "s3.bucket" => return Ok(Place { bucket: resource.external_id.clone(), prefix: String::new() }),
                "s3.prefix" => {
                    if let Some((bucket, prefix)) = resource.external_id.split_once('/') {
                        return Ok(Place { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
                    }
                }
                _ => {}
            }
        }
        self.place(tenant)
    }

    async fn delete(&self, tenant: &pb::TenantSpec, resources: &[pb::Resource]) -> Result<pb::StepOk, StepFailure> {
        let place = self.recorded_place(tenant, resources)?;
        match self.owner(&place).await? {
            Owner::Missing => {
                tracing::info!(bucket = %place.bucket, "already gone");
                return Ok(pb::StepOk::default());
            }
            Owner::Tenant(id) if id == tenant.tenant_id => {}
            Owner::Empty => {}
            Owner::Tenant(other) => {
                return Err(StepFailure::permanent(
                    "conflicting_owner",
                    format!("refusing to delete {}/{}: it belongs to tenant {other}", place.bucket, place.prefix),
                ));
            }
            Owner::Unmarked => {
                return Err(StepFailure::permanent(
                    "conflicting_owner",
                    format!("refusing to delete {}/{}: objects without a Landlord marker", place.bucket, place.prefix),
                ));
            }
        }
        let removed = self.empty(&place).await?;
        if place.prefix.is_empty() {
            match self.client.delete_bucket().bucket(&place.bucket).send().await {
                Ok(_) => {}
                Err(e) if code_of(&e) == Some("NoSuchBucket") => {}
                Err(e) => return Err(classify("deleting the bucket", &e)),
            }
        }
        tracing::info!(bucket = %place.bucket, prefix = %place.prefix, removed, "deleted");
        Ok(pb::StepOk {
            resources: Vec::new(),
            outputs: HashMap::from([("storage.removed_objects".into(), removed.to_string())]),
        })
    }

    /// Deletes every object (and version) under the place, the marker last.
    pub async fn empty(&self, place: &Place) -> Result<usize, StepFailure> {
        let mut removed = 0;
        loop {
            let batch = self.list_batch(place).await?;
            if batch.is_empty() {
                return Ok(removed);
            }
            let marker = place.marker();
            // Keep the marker until everything else is gone, so that an
            // interrupted delete still proves ownership on the retry.
            let others: Vec<ObjectIdentifier> = batch.iter().filter(|o| o.key() != marker).cloned().collect();
            let chunk = if others.is_empty() { batch } else { others };
            removed += chunk.len();
            let delete = Delete::builder()
                .set_objects(Some(chunk))
                .quiet(true)
                .build()
                .map_err(|e| StepFailure::permanent("delete_request", e.to_string()))?;
            let answer = self
                .client
                .delete_objects()
                .bucket(&place.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify("deleting objects", &e))?;
            if let Some(error) = answer.errors().first() {
                let code = error.code().unwrap_or("delete_failed");
                let message = format!("deleting {:?}: {code}: {}", error.key(), error.message().unwrap_or(""));
                return Err(if code == "AccessDenied" {
                    StepFailure::permanent(code, message)
                } else {
                    StepFailure::retryable(code, message)
                });
            }
        }
    }

    /// Up to 1,000 objects (versions where the server keeps them).
    async fn list_batch(&self, place: &Place) -> Result<Vec<ObjectIdentifier>, StepFailure> {
        let identifier = |key: &str, version: Option<&str>| {
            ObjectIdentifier::builder()
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .build()
                .map_err(|e| StepFailure::permanent("delete_request", e.to_string()))
        };
        let versions =
            self.client.list_object_versions().bucket(&place.bucket).prefix(&place.prefix).max_keys(1000).send().await;
        match versions {
            Ok(page) => {
                let mut out = Vec::new();
                for v in page.versions() {
                    out.push(identifier(v.key().unwrap_or_default(), v.version_id())?);
                }
                for m in page.delete_markers() {
                    out.push(identifier(m.key().unwrap_or_default(), m.version_id())?);
                }
                if !out.is_empty() || page.is_truncated() != Some(true) {
                    return Ok(out);
                }
            }
            Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(Vec::new()),
            // No versions on this server: plain listing below.
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(classify("listing object versions", &e)),
        }
        let page =
            match self.client.list_objects_v2().bucket(&place.bucket).prefix(&place.prefix).max_keys(1000).send().await
            {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(Vec::new()),
                Err(e) => return Err(classify("listing objects", &e)),
            };
        page.contents().iter().map(|o| identifier(o.key().unwrap_or_default(), None)).collect()
    }
}

impl StepService for Storage {
    async fn run(
        &self,
        action: &str,
        command: &pb::StepCommand,
        _delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        let tenant =
            command.tenant.as_ref().ok_or_else(|| StepFailure::permanent("no_tenant", "command has no tenant"))?;
        if tenant.tenant_id.is_empty() {
            return Err(StepFailure::permanent("no_tenant_id", "the tenant has no id to mark its objects with"));
        }
        let span = tracing::info_span!("storage", action, tenant = %tenant.key, saga = %command.saga_id);
        async {
            match action {
                "create_bucket" => self.create(tenant).await,
                "delete_bucket" => self.delete(tenant, &command.resources).await,
                other => Err(StepFailure::permanent("unknown_action", format!("storage has no {other:?}"))),
            }
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::check_bucket_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("landlord-acme").is_ok());
        assert!(check_bucket_name("ab").unwrap_err().contains("3 to 63"));
        assert!(check_bucket_name("Landlord").unwrap_err().contains("lowercase"));
        assert!(check_bucket_name("landlord-acme-").unwrap_err().contains("begin and end"));
        assert!(check_bucket_name("a..b").unwrap_err().contains("adjacent"));
        assert!(check_bucket_name("192.168.1.1").unwrap_err().contains("IP address"));
        assert!(check_bucket_name("xn--abc").unwrap_err().contains("xn--"));
        assert!(check_bucket_name("abc-s3alias").unwrap_err().contains("-s3alias"));
        assert!(check_bucket_name(&"a".repeat(64)).is_err());
    }
}
