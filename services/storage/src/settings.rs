//! The worker's settings, read from the environment, and the S3 client they
//! make.

use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_http_client::tls;
use landlord_runtime::{ConfigError, Env};

use crate::naming::check_bucket_name;

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
    /// Where exports go (`LANDLORD_ARCHIVE_BUCKET`).
    pub archive_bucket: String,
    /// How long an export is kept (`LANDLORD_EXPORT_RETENTION`).
    pub export_retention: Duration,
    /// How often the archive is swept for expired exports.
    pub export_sweep_interval: Duration,
    /// Principals (ARNs) a suspended bucket's deny policy leaves out: the
    /// worker's own, so that it can still export, resume and purge.
    pub suspend_exempt: Vec<String>,
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
        check_bucket_name(&bucket_pattern.replace("{key}", "tenant")).map_err(|e| {
            invalid("LANDLORD_S3_BUCKET_PATTERN", &bucket_pattern, format!("makes invalid bucket names: {}", e.rule))
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
        check_bucket_name(&shared_bucket).map_err(|e| invalid("LANDLORD_S3_SHARED_BUCKET", &shared_bucket, e.rule))?;
        let archive_bucket = env.string("LANDLORD_ARCHIVE_BUCKET", "landlord-archive");
        check_bucket_name(&archive_bucket).map_err(|e| invalid("LANDLORD_ARCHIVE_BUCKET", &archive_bucket, e.rule))?;
        if archive_bucket == shared_bucket {
            return Err(invalid(
                "LANDLORD_ARCHIVE_BUCKET",
                &archive_bucket,
                "must not be the pooled tier's shared bucket".into(),
            ));
        }
        let export_retention = env.duration("LANDLORD_EXPORT_RETENTION", Duration::from_secs(90 * 24 * 3600))?;
        let export_sweep_interval = env.duration("LANDLORD_EXPORT_SWEEP_INTERVAL", Duration::from_secs(3600))?;
        if export_sweep_interval.is_zero() {
            return Err(invalid("LANDLORD_EXPORT_SWEEP_INTERVAL", "0", "must be longer than zero".into()));
        }
        let suspend_exempt = env
            .string("LANDLORD_S3_SUSPEND_EXEMPT", "")
            .split(',')
            .map(str::trim)
            .filter(|arn| !arn.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if let Some(arn) = suspend_exempt.iter().find(|arn| !arn.starts_with("arn:")) {
            return Err(invalid(
                "LANDLORD_S3_SUSPEND_EXEMPT",
                arn,
                "expected principal ARNs (arn:…), comma-separated".into(),
            ));
        }
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
            archive_bucket,
            export_retention,
            export_sweep_interval,
            suspend_exempt,
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
}
