//! Where `database.export` writes: the archive bucket
//! (`LANDLORD_ARCHIVE_BUCKET`, default `landlord-archive`) on the S3 server
//! the storage worker uses, configured by the same variables
//! (`LANDLORD_S3_ENDPOINT`, `LANDLORD_S3_REGION` or `AWS_REGION`,
//! `LANDLORD_S3_PATH_STYLE`, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_SESSION_TOKEN`, else the standard AWS credential chain). The client
//! is built as the storage worker builds its own (rustls on ring, checksums
//! only where S3 requires them); the two crates share no code because no
//! service crate depends on another.

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
use aws_smithy_http_client::tls;
use landlord_runtime::{ConfigError, Env, StepFailure};

type Response = aws_sdk_s3::config::http::HttpResponse;

/// The archive's settings.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
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

impl ArchiveSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let invalid = |var: &str, value: &str, problem: &str| ConfigError::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            problem: problem.to_owned(),
        };
        let bucket = env.string("LANDLORD_ARCHIVE_BUCKET", "landlord-archive");
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(invalid("LANDLORD_ARCHIVE_BUCKET", &bucket, "expected an S3 bucket name"));
        }
        let endpoint = env.raw("LANDLORD_S3_ENDPOINT");
        if let Some(url) = &endpoint {
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            if rest.is_none_or(|host| host.is_empty() || host.starts_with('/')) {
                return Err(invalid("LANDLORD_S3_ENDPOINT", url, "expected http://host[:port] or https://…"));
            }
        }
        let region = env.string("LANDLORD_S3_REGION", &env.string("AWS_REGION", "us-east-1"));
        if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid("LANDLORD_S3_REGION", &region, "expected a region name such as us-east-1"));
        }
        let credentials = match env.raw("AWS_ACCESS_KEY_ID") {
            Some(access_key) if !access_key.is_empty() => Some(StaticKeys {
                access_key,
                secret_key: env.required("AWS_SECRET_ACCESS_KEY", "the secret key for AWS_ACCESS_KEY_ID")?,
                session_token: env.raw("AWS_SESSION_TOKEN").filter(|t| !t.is_empty()),
            }),
            _ => None,
        };
        Ok(Self { bucket, endpoint, region, path_style: env.parse("LANDLORD_S3_PATH_STYLE", false)?, credentials })
    }

    fn client(&self) -> Client {
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
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint);
        }
        Client::from_conf(config.build())
    }
}

/// The archive bucket, as the export writes to it.
#[derive(Debug, Clone)]
pub struct Archive {
    client: Client,
    bucket: String,
}

impl Archive {
    pub fn new(settings: &ArchiveSettings) -> Self {
        Self { client: settings.client(), bucket: settings.bucket.clone() }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Writes `body` under `key` (replacing what a earlier attempt wrote).
    /// A missing bucket is created once: the archive needs no set-up on a
    /// fresh server.
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<(), StepFailure> {
        let what = format!("writing s3://{}/{key}", self.bucket);
        for attempt in 0..2 {
            let put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(content_type)
                .body(ByteStream::from(body.clone()))
                .send()
                .await;
            match put {
                Ok(_) => return Ok(()),
                Err(e) if attempt == 0 && e.code() == Some("NoSuchBucket") => self.create_bucket().await?,
                Err(e) => return Err(classify(&what, &e)),
            }
        }
        Err(StepFailure::retryable("NoSuchBucket", format!("{what}: the bucket vanished again")))
    }

    async fn create_bucket(&self) -> Result<(), StepFailure> {
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(classify(&format!("creating the archive bucket {}", self.bucket), &e)),
        }
    }

    /// Reads an object back (tests and verification).
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StepFailure> {
        let what = format!("reading s3://{}/{key}", self.bucket);
        let object =
            self.client.get_object().bucket(&self.bucket).key(key).send().await.map_err(|e| classify(&what, &e))?;
        let body =
            object.body.collect().await.map_err(|e| StepFailure::retryable("s3_read", format!("{what}: {e}")))?;
        Ok(body.into_bytes().to_vec())
    }
}

/// Connection trouble, timeouts, throttling and 5xx are retryable; the rest
/// (access denied, invalid requests) is not — as the storage worker says.
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
            let transient =
                matches!(code.as_str(), "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable");
            if status >= 500 || status == 429 || transient {
                StepFailure::retryable(code, message)
            } else {
                StepFailure::permanent(code, message)
            }
        }
        other => StepFailure::permanent("s3_error", format!("{what}: {other}")),
    }
}
