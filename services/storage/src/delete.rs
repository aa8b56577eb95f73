//! `storage.delete_bucket`, the compensation: empties and removes the
//! tenant's bucket (or prefix) — only if its marker names this saga.

use std::collections::HashMap;

use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use landlord_contract::pb;
use landlord_runtime::StepFailure;

use crate::Storage;
use crate::classify::{classify, code_of, not_implemented, unsupported};
use crate::naming::Place;
use crate::ownership::{MarkerRead, Ownership, Undo};
use crate::support::Feature;
use crate::suspend::may_touch;

/// The output that says why a compensation left a place alone.
pub const FENCED: &str = "fenced";

/// Who may empty a place: the check made before each batch.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Guard<'a> {
    /// A compensation: the marker must name this tenant and saga (or be of
    /// the tenant-only format).
    Saga { tenant_id: &'a str, saga_id: &'a str },
    /// A purge: the marker must name this tenant, whatever the saga.
    Tenant(&'a str),
}

impl Guard<'_> {
    /// What the guard makes of who owns the place: a purge goes by the
    /// lifecycle steps' rule ([`may_touch`]), a compensation by its saga's.
    fn undo(self, place: &Place, ownership: &Ownership) -> Undo {
        match self {
            Guard::Saga { tenant_id, saga_id } => ownership.undo(place, tenant_id, saga_id),
            Guard::Tenant(tenant_id) => match may_touch(place, ownership, tenant_id) {
                Ok(true) => Undo::Remove,
                Ok(false) => Undo::Gone,
                Err(conflict) => Undo::Leave(conflict.message),
            },
        }
    }
}

/// How emptying a place ended.
pub(crate) enum Emptied {
    /// No bucket: nothing to do.
    Gone,
    /// Everything removed (how many), and the last listing found nothing.
    All(usize),
    /// Not the guard's to empty, or the marker changed hands while
    /// emptying: stopped, with the reason.
    Fenced { removed: usize, note: String },
}

impl Storage {
    /// Where the forward step reported creating things, else where the
    /// current settings put this tenant: a failed or crashed forward step
    /// reports nothing, and names its place from the tenant the same way.
    fn recorded_place(&self, tenant: &pb::TenantSpec, resources: &[pb::Resource]) -> Result<Place, StepFailure> {
        match resources.iter().find_map(Place::from_resource) {
            Some(place) => Ok(place),
            None => self.settings.place(tenant),
        }
    }

    pub(crate) async fn delete(
        &self,
        tenant: &pb::TenantSpec,
        saga_id: &str,
        resources: &[pb::Resource],
    ) -> Result<pb::StepOk, StepFailure> {
        let place = self.recorded_place(tenant, resources)?;
        let guard = Guard::Saga { tenant_id: &tenant.tenant_id, saga_id };
        let removed = match self.empty(&place, guard).await? {
            Emptied::Gone => {
                tracing::info!(%place, "already gone");
                return Ok(pb::StepOk::default());
            }
            Emptied::All(removed) => removed,
            Emptied::Fenced { removed, note } => return Ok(fenced(&place, note, removed)),
        };
        if place.own_bucket() {
            // The marker is gone, so nothing proves ownership any more: a
            // forward step that marked the bucket since would be lost with
            // it. AWS refuses to delete a non-empty bucket (BucketNotEmpty,
            // retried, and the retry finds the new marker); servers that
            // delete non-empty buckets (s3s-fs) have only the last look:
            // the empty listing `empty` ended with, one request ago (no
            // marker in it either, so reading the marker again would tell
            // nothing more).
            match self.client.delete_bucket().bucket(&place.bucket).send().await {
                Ok(_) => {}
                Err(e) if code_of(&e) == Some("NoSuchBucket") => {}
                Err(e) => return Err(classify("deleting the bucket", &e)),
            }
        }
        tracing::info!(%place, removed, "deleted");
        Ok(pb::StepOk {
            resources: Vec::new(),
            outputs: HashMap::from([("storage.removed_objects".into(), removed.to_string())]),
        })
    }

    /// Deletes every object (and version) under the place, if `guard` lets
    /// it, the marker last, so that an interrupted delete still proves
    /// ownership on the retry; ends with a listing that found nothing.
    ///
    /// Each batch is listed, then the marker read, then the batch deleted:
    /// a forward step of a later saga that adopts the place meanwhile stops
    /// the emptying, with a window of one request. The first of these reads
    /// is also the ownership check, so a compensation of a marked place
    /// reads its marker once per batch and no more. Where the first listing
    /// finds nothing, or finds objects but no marker, the full look
    /// ([`Storage::ownership`]) decides: an empty bucket may carry another
    /// tenant's tag, and the marker may have appeared since.
    pub(crate) async fn empty(&self, place: &Place, guard: Guard<'_>) -> Result<Emptied, StepFailure> {
        let mut removed = 0;
        let mut first = true;
        let marker_key = place.marker_key();
        loop {
            let Some(batch) = self.list_batch(place).await? else {
                return Ok(if first { Emptied::Gone } else { Emptied::All(removed) });
            };
            let marker = match batch.is_empty() {
                true => MarkerRead::Absent,
                false => self.read_marker(place).await?,
            };
            let undo = match marker {
                MarkerRead::Found(marker) => guard.undo(place, &Ownership::Marked(marker)),
                MarkerRead::Absent if first => guard.undo(place, &self.ownership(place).await?),
                // This emptying's own marker went with the batch before.
                MarkerRead::Absent => Undo::Remove,
            };
            match undo {
                Undo::Gone if first => return Ok(Emptied::Gone),
                Undo::Gone => return Ok(Emptied::All(removed)),
                Undo::Leave(note) => return Ok(Emptied::Fenced { removed, note }),
                Undo::Remove if batch.is_empty() => return Ok(Emptied::All(removed)),
                Undo::Remove => {}
            }
            first = false;
            let chunk = marker_last(batch, &marker_key);
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

    /// Up to 1,000 objects (versions where the server keeps them); `None`:
    /// no bucket.
    async fn list_batch(&self, place: &Place) -> Result<Option<Vec<ObjectIdentifier>>, StepFailure> {
        if self.support.has(Feature::Versions) {
            let versions = self
                .client
                .list_object_versions()
                .bucket(&place.bucket)
                .prefix(&place.prefix)
                .max_keys(1000)
                .send()
                .await;
            match versions {
                Ok(page) => {
                    let out = version_identifiers(&page)?;
                    if !out.is_empty() || page.is_truncated() != Some(true) {
                        return Ok(Some(out));
                    }
                }
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(None),
                // No versions on this server: plain listing below.
                Err(e) if unsupported(&e) => {
                    if not_implemented(&e) {
                        self.support.lacks(Feature::Versions);
                    }
                }
                Err(e) => return Err(classify("listing object versions", &e)),
            }
        }
        let page =
            match self.client.list_objects_v2().bucket(&place.bucket).prefix(&place.prefix).max_keys(1000).send().await
            {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(None),
                Err(e) => return Err(classify("listing objects", &e)),
            };
        let objects = page.contents().iter().map(|o| identifier(o.key().unwrap_or_default(), None));
        objects.collect::<Result<Vec<_>, _>>().map(Some)
    }
}

/// Every version and delete marker of a listing page, each by its version id.
pub(crate) fn version_identifiers(page: &ListObjectVersionsOutput) -> Result<Vec<ObjectIdentifier>, StepFailure> {
    let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
    let markers = page.delete_markers().iter().map(|m| (m.key(), m.version_id()));
    versions.chain(markers).map(|(key, version)| identifier(key.unwrap_or_default(), version)).collect()
}

fn identifier(key: &str, version: Option<&str>) -> Result<ObjectIdentifier, StepFailure> {
    ObjectIdentifier::builder()
        .key(key)
        .set_version_id(version.map(str::to_owned))
        .build()
        .map_err(|e| StepFailure::permanent("delete_request", e.to_string()))
}

/// What to delete of a listed batch: everything but the ownership marker
/// (every version of it), and the marker only once nothing else is left,
/// so that an interrupted delete still proves ownership on the retry.
pub(crate) fn marker_last(batch: Vec<ObjectIdentifier>, marker: &str) -> Vec<ObjectIdentifier> {
    let others: Vec<ObjectIdentifier> = batch.iter().filter(|o| o.key() != marker).cloned().collect();
    if others.is_empty() { batch } else { others }
}

/// A compensation that leaves the place alone succeeds, and says why: the
/// saga's undo is done, since what is there is no longer its to undo.
fn fenced(place: &Place, note: String, removed: usize) -> pb::StepOk {
    tracing::warn!(%place, removed, %note, "left in place: not this saga's");
    let mut outputs = HashMap::from([(FENCED.to_owned(), note)]);
    if removed > 0 {
        outputs.insert("storage.removed_objects".into(), removed.to_string());
    }
    pb::StepOk { resources: Vec::new(), outputs }
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};

    use super::*;

    /// s3s-fs keeps no versions; what a versioned server lists is
    /// checked here: every version and delete marker, by version id, the
    /// ownership marker's versions last.
    #[test]
    fn versions_and_delete_markers_are_all_deleted_the_marker_last() {
        let page = ListObjectVersionsOutput::builder()
            .versions(ObjectVersion::builder().key("data.csv").version_id("v1").build())
            .versions(ObjectVersion::builder().key("data.csv").version_id("v2").build())
            .versions(ObjectVersion::builder().key(".landlord/tenant").version_id("m1").build())
            .delete_markers(DeleteMarkerEntry::builder().key("gone.txt").version_id("d1").build())
            .build();
        let batch = version_identifiers(&page).unwrap();
        let ids = |batch: &[ObjectIdentifier]| {
            batch.iter().map(|o| format!("{}@{}", o.key(), o.version_id().unwrap_or("-"))).collect::<Vec<_>>()
        };
        assert_eq!(ids(&batch), ["data.csv@v1", "data.csv@v2", ".landlord/tenant@m1", "gone.txt@d1"]);
        let first = marker_last(batch.clone(), ".landlord/tenant");
        assert_eq!(ids(&first), ["data.csv@v1", "data.csv@v2", "gone.txt@d1"]);
        let only_marker: Vec<ObjectIdentifier> = batch.into_iter().filter(|o| o.key() == ".landlord/tenant").collect();
        assert_eq!(ids(&marker_last(only_marker, ".landlord/tenant")), [".landlord/tenant@m1"]);
    }
}
