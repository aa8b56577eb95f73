//! The `storage` worker: each tenant's S3 bucket, or its prefix in a shared
//! bucket for the pooled tier (DESIGN.md, "Isolation tiers").
//!
//! Serves `storage.create_bucket` and its compensation `storage.delete_bucket`,
//! and the lifecycle steps (docs/lifecycle.md): `storage.suspend` and
//! `storage.resume` ([`suspend`], each the other's compensation),
//! `storage.export` ([`export`]) and `storage.purge` ([`purge`]).
//! Every bucket (or prefix) carries an ownership marker object,
//! `.landlord/tenant`: its body the tenant id, its metadata `landlord-saga`
//! the saga that created or last adopted it ([`ownership`]); buckets also
//! get a `landlord-tenant` tag where the server supports tagging. The marker
//! is what proves "ours" on any S3 server, and fences sagas of one tenant
//! from each other (a failed tenant is retried under a new saga):
//!
//! - forward: a missing bucket is created and marked, then configured. An
//!   existing place whose marker names this tenant is *adopted*: the marker
//!   is rewritten to name this saga. A marker naming another tenant, or
//!   objects without a marker, is a permanent conflict. An *empty* bucket
//!   without a marker is what a crash between creating the bucket and
//!   writing the marker leaves behind, and holds nothing to lose: it is
//!   marked too;
//! - compensation empties the bucket (every object and version, paginated,
//!   deleted in batches of 1,000, the marker last) and deletes it, only if
//!   the marker names this tenant and this saga, or is of the older
//!   tenant-only format, or the bucket is empty and unmarked (a failed or
//!   crashed create: the compensation names the place from the tenant as
//!   the forward step does when the step reported nothing). A place another
//!   saga adopted, another tenant's, or objects without a marker are left
//!   alone: the compensation succeeds and says why in its `fenced` output.
//!   A missing bucket is already done. A pooled prefix is handled the same
//!   way, minus the bucket (the shared bucket stays).
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
//! | `LANDLORD_ARCHIVE_BUCKET` | `landlord-archive` | where exports go |
//! | `LANDLORD_EXPORT_RETENTION` | `90d` | exports older than this are deleted by the sweep |
//! | `LANDLORD_EXPORT_SWEEP_INTERVAL` | `1h` | how often the service sweeps the archive |
//! | `LANDLORD_S3_SUSPEND_EXEMPT` | — | principal ARNs (comma-separated) a suspended bucket's deny policy leaves out: on AWS, the worker's own role |
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
//!
//! Modules: [`settings`] (environment and client), [`naming`] (bucket names
//! and places), `classify` (which errors to retry), [`ownership`] (the
//! marker and the fencing rules), [`action`] (the actions and the one match
//! that runs them), `create` and `delete` (provisioning's step and its
//! compensation), [`suspend`] with [`policy`], [`export`] with [`archive`]
//! (the archive bucket and the retention sweep), [`purge`], `support` (the
//! calls the server turned out not to implement).

pub mod action;
pub mod archive;
mod classify;
mod create;
mod delete;
pub mod export;
pub mod naming;
pub mod ownership;
pub mod policy;
pub mod purge;
pub mod settings;
mod support;
pub mod suspend;

use std::sync::Arc;

use aws_sdk_s3::Client;

pub use action::Action;
pub use archive::{ARCHIVE_MARKER, export_time, parse_export_time};
pub use delete::FENCED;
pub use export::{Digest, EXPORT_PREFIX, FileEntry};
pub use naming::{BucketNameError, Place, check_bucket_name};
pub use ownership::{MARKER, Marker, Ownership, SAGA_METADATA, TENANT_METADATA};
pub use policy::{POLICY_SID, PolicyOutcome};
pub use settings::{Settings, StaticKeys};
pub use suspend::SUSPENDED;

pub const SERVICE: &str = "storage";

/// The storage worker's steps.
#[derive(Debug, Clone)]
pub struct Storage {
    settings: Settings,
    client: Client,
    /// Shared by clones: one server, one client, learnt once.
    support: Arc<support::Support>,
}

impl Storage {
    pub fn new(settings: Settings) -> Self {
        let client = settings.client();
        Self::with_client(settings, client)
    }

    /// The steps on a client of the caller's making: a test or benchmark
    /// that counts or times the calls adds an interceptor to
    /// [`Settings::client`]'s.
    pub fn with_client(settings: Settings, client: Client) -> Self {
        Self { settings, client, support: Arc::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}
