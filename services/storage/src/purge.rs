//! `storage.purge`: the end of an offboarded tenant's storage. Every
//! unfinished multipart upload is aborted, every object version and delete
//! marker deleted (the ownership marker last), then the bucket deleted; a
//! pooled tenant's prefix is emptied the same way and the shared bucket
//! stays.
//!
//! Unlike a compensation, a purge is not fenced by saga — the place was
//! made by the provisioning saga, the purge is another — but by tenant: a
//! marker (or tag) naming another tenant, or objects without a marker, and
//! nothing is deleted (a permanent `conflicting_owner`); the marker is read
//! again before each batch. A missing bucket or an empty prefix is already
//! done. Connection trouble and 5xx are retryable: the purge step is
//! retried until it succeeds, so a server that comes back finishes the job.
//!
//! Servers without `ListMultipartUploads` (s3s-fs) cannot say which uploads
//! are unfinished; the `storage.uploads` output then says `unsupported`.

use std::collections::HashMap;

use aws_sdk_s3::types::MultipartUpload;
use landlord_contract::pb;
use landlord_runtime::StepFailure;

use crate::Storage;
use crate::classify::{classify, code_of, status_of, unsupported};
use crate::delete::{Emptied, Guard};
use crate::naming::Place;
use crate::suspend::may_touch;

impl Storage {
    pub(crate) async fn purge(
        &self,
        tenant: &pb::TenantSpec,
        resources: &[pb::Resource],
    ) -> Result<pb::StepOk, StepFailure> {
        let place = match resources.iter().find_map(Place::from_resource) {
            Some(place) => place,
            None => self.settings.place(tenant)?,
        };
        let tenant_id = tenant.tenant_id.as_str();
        let ownership = self.ownership(&place).await?;
        if !may_touch(&place, &ownership, tenant_id)? {
            tracing::info!(%place, "already gone");
            return Ok(purged(&place, 0, "none", true));
        }
        if place.own_bucket() {
            // A suspended bucket's deny statement would refuse the deletes.
            self.lift_denial(&place.bucket).await?;
        }
        let uploads = self.abort_uploads(&place).await?;
        let removed = match self.empty(&place, Guard::Tenant(tenant_id)).await? {
            // Gone since the look above: nothing left to delete.
            Emptied::Gone => 0,
            Emptied::All(removed) => removed,
            Emptied::Fenced { note, .. } => return Err(StepFailure::permanent("conflicting_owner", note)),
        };
        if place.own_bucket() {
            match self.client.delete_bucket().bucket(&place.bucket).send().await {
                Ok(_) => {}
                Err(e) if code_of(&e) == Some("NoSuchBucket") => {}
                Err(e) => return Err(classify("deleting the bucket", &e)),
            }
        }
        self.check_purged(&place).await?;
        tracing::info!(%place, removed, uploads = %uploads, "purged");
        Ok(purged(&place, removed, &uploads, false))
    }

    /// Aborts every unfinished multipart upload under the place: how many,
    /// or `unsupported`.
    async fn abort_uploads(&self, place: &Place) -> Result<String, StepFailure> {
        let mut aborted = 0usize;
        let (mut key_marker, mut upload_marker) = (None::<String>, None::<String>);
        loop {
            let listed = self
                .client
                .list_multipart_uploads()
                .bucket(&place.bucket)
                .prefix(&place.prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_marker.clone())
                .send()
                .await;
            let page = match listed {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(aborted.to_string()),
                Err(e) if unsupported(&e) => return Ok("unsupported".into()),
                Err(e) => return Err(classify("listing multipart uploads", &e)),
            };
            for upload in page.uploads() {
                self.abort(place, upload).await?;
                aborted += 1;
            }
            if page.is_truncated() != Some(true) || page.uploads().is_empty() {
                return Ok(aborted.to_string());
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_marker = page.next_upload_id_marker().map(str::to_owned);
        }
    }

    async fn abort(&self, place: &Place, upload: &MultipartUpload) -> Result<(), StepFailure> {
        let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else { return Ok(()) };
        match self.client.abort_multipart_upload().bucket(&place.bucket).key(key).upload_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some("NoSuchUpload") || status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify("aborting a multipart upload", &e)),
        }
    }

    /// Never report a purge done while anything remains: the place is
    /// listed once more.
    async fn check_purged(&self, place: &Place) -> Result<(), StepFailure> {
        if place.own_bucket() {
            return match self.client.head_bucket().bucket(&place.bucket).send().await {
                Ok(_) => Err(StepFailure::retryable("not_purged", format!("{place} still exists after DeleteBucket"))),
                Err(e) if status_of(&e) == Some(404) => Ok(()),
                Err(e) => Err(classify("checking the bucket is gone", &e)),
            };
        }
        let left =
            match self.client.list_objects_v2().bucket(&place.bucket).prefix(&place.prefix).max_keys(1).send().await {
                Ok(left) => left,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(()),
                Err(e) => return Err(classify("checking the prefix is empty", &e)),
            };
        match left.contents().first().and_then(|o| o.key()) {
            Some(key) => Err(StepFailure::retryable("not_purged", format!("{place} still holds {key:?}"))),
            None => Ok(()),
        }
    }
}

fn purged(place: &Place, removed: usize, uploads: &str, already: bool) -> pb::StepOk {
    let mut outputs = HashMap::from([
        ("storage.removed_objects".to_owned(), removed.to_string()),
        ("storage.uploads_aborted".to_owned(), uploads.to_owned()),
    ]);
    if already {
        outputs.insert("storage.purge".into(), format!("{place} was already gone"));
    }
    pb::StepOk { resources: Vec::new(), outputs }
}
