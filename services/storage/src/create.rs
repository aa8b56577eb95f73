//! `storage.create_bucket`: the tenant's bucket (or prefix), marked with
//! its tenant and saga, then configured.

use std::collections::HashMap;

use aws_sdk_s3::types::{
    BucketVersioningStatus, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    Tag, Tagging, VersioningConfiguration,
};
use landlord_contract::pb;
use landlord_runtime::StepFailure;

use crate::Storage;
use crate::classify::{classify, code_of, not_implemented, status_of, unsupported};
use crate::naming::Place;
use crate::ownership::{Claim, Ownership, TAG};
use crate::support::Feature;

impl Storage {
    /// Creates, or adopts, the tenant's place for `saga_id`.
    ///
    /// The marker is written right after CreateBucket and before the
    /// bucket is configured, so that a configuration that fails leaves a
    /// bucket its saga's compensation recognises as its own; only a crash
    /// between CreateBucket and the marker leaves an unmarked bucket, and
    /// that one is empty. Configuration runs on every forward run, adoption
    /// included: a run that failed while configuring is completed by the
    /// next one.
    pub(crate) async fn create(&self, tenant: &pb::TenantSpec, saga_id: &str) -> Result<pb::StepOk, StepFailure> {
        let place = self.settings.place(tenant)?;
        let mut ownership = self.ownership(&place).await?;
        if ownership == Ownership::Missing {
            ownership = if self.create_bucket(&place.bucket).await? {
                Ownership::Empty
            } else {
                // It appeared since we looked (a concurrent delivery, or
                // another pooled tenant creating the shared bucket): look again.
                self.ownership(&place).await?
            };
        }
        match ownership.claim(&place, &tenant.tenant_id, saga_id) {
            Claim::Conflict(message) => return Err(StepFailure::permanent("conflicting_owner", message)),
            Claim::Current => tracing::info!(%place, "already there and this saga's"),
            Claim::Mark => {
                if let Ownership::Marked(previous) = &ownership {
                    let from = previous.saga_id.as_deref().unwrap_or("(a marker without a saga)");
                    tracing::info!(%place, from, "adopting this tenant's place from an earlier saga");
                }
                self.write_marker(&place, &tenant.tenant_id, saga_id).await?;
            }
        }
        if place.own_bucket() {
            self.configure(&place.bucket, &tenant.tenant_id).await?;
        }
        tracing::info!(%place, "created");
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
        if self.support.has(Feature::Tagging) {
            match self.client.put_bucket_tagging().bucket(bucket).tagging(tagging).send().await {
                Ok(_) => {}
                Err(e) if unsupported(&e) => {
                    if not_implemented(&e) {
                        self.support.lacks(Feature::Tagging);
                    }
                    tracing::debug!(bucket, "tagging not supported here; the marker object proves ownership");
                }
                Err(e) => return Err(classify("tagging the bucket", &e)),
            }
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
        let metadata = HashMap::from([(landlord_contract::RESOURCE_TENANT_ID.to_owned(), tenant.tenant_id.clone())]);
        let (kind, external_id) = place.resource();
        let mut outputs = HashMap::from([("storage.bucket".to_owned(), place.bucket.clone())]);
        if !place.own_bucket() {
            outputs.insert("storage.prefix".into(), place.prefix.clone());
        }
        if let Some(endpoint) = &self.settings.endpoint {
            outputs.insert("storage.endpoint".into(), endpoint.clone());
        }
        pb::StepOk { resources: vec![pb::Resource { kind: kind.into(), external_id, metadata }], outputs }
    }
}
