//! The ownership marker: which tenant, and which saga, a bucket or prefix
//! belongs to — and what a forward step or a compensation may do with it.
//!
//! The marker is the object `.landlord/tenant` at the bucket root or under
//! the tenant's prefix. Its body is the tenant id; its user metadata
//! `landlord-saga` (`x-amz-meta-landlord-saga`) is the saga that created it
//! or last adopted it; `landlord-tenant` repeats the tenant id, so that a
//! HEAD reads the marker (see [`Storage::marker_object`] for why). One
//! object, written by one PUT, so tenant and saga always change together. The body stays the bare tenant id so that
//! anything reading markers written before sagas were recorded (or reading
//! only the tenant, as `landlord audit` does) reads them the same way.
//!
//! A marker without the metadata is the older, tenant-only format: "this
//! tenant, saga unknown". A forward step adopts it like any marker of its
//! tenant. A compensation of the same tenant may delete it: such markers
//! predate saga fencing, so no later saga can have adopted them (adopting
//! rewrites the marker in the new format).
//!
//! What the marker cannot close on its own: S3 has no conditional delete
//! that every server honours, so a compensation reads the marker right
//! before each batch it deletes (after listing the batch), and lists the
//! place once more right before DeleteBucket (an empty listing: no marker
//! either), leaving a window of one request for a later saga's adoption
//! to slip into (on AWS, DeleteBucket of a bucket marked meanwhile fails
//! with BucketNotEmpty and is retried; s3s-fs deletes non-empty buckets).
//! And adoption is last writer wins: an older saga's forward command
//! running after a newer saga's would take the place back — the runtime's
//! per-step tombstone is what stops a forward command once its saga's
//! compensation has begun.

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use landlord_runtime::StepFailure;

use crate::Storage;
use crate::classify::{classify, code_of, not_implemented, status_of, unsupported};
use crate::naming::Place;
use crate::support::Feature;

/// The ownership marker, relative to the bucket root or the tenant's prefix.
pub const MARKER: &str = ".landlord/tenant";
/// The marker's user-metadata key naming the saga that owns the place.
pub const SAGA_METADATA: &str = "landlord-saga";
/// The marker's user-metadata key repeating the tenant id of its body, so
/// that a HEAD reads the whole marker.
pub const TENANT_METADATA: &str = "landlord-tenant";
/// The bucket tag naming the tenant, where the server keeps tags.
pub(crate) const TAG: &str = "landlord-tenant";

impl Place {
    /// The key of the ownership marker.
    pub fn marker_key(&self) -> String {
        format!("{}{MARKER}", self.prefix)
    }
}

/// What an ownership marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub tenant_id: String,
    /// `None`: the tenant-only format written before sagas were recorded.
    pub saga_id: Option<String>,
}

impl Marker {
    /// Reads a marker from its body and user metadata.
    pub fn parse(body: &[u8], metadata: Option<&HashMap<String, String>>) -> Self {
        let saga_id = metadata
            .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(SAGA_METADATA)))
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        Self { tenant_id: String::from_utf8_lossy(body).trim().to_owned(), saga_id }
    }
}

/// What a place holds, as far as ownership goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// No bucket.
    Missing,
    /// Nothing under the place, and no tag naming a tenant.
    Empty,
    /// An empty bucket without a marker whose `landlord-tenant` tag names a
    /// tenant: a crash between tagging and marking (workers that configured
    /// before marking left this).
    Tagged(String),
    Marked(Marker),
    /// Objects, but no marker: not Landlord's.
    Unmarked,
}

/// What a forward step does with a place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Write the marker naming this tenant and saga: a new place, one a
    /// crash left unmarked, or an adoption of this tenant's place.
    Mark,
    /// The marker already names this tenant and saga: a re-run.
    Current,
    /// Someone else's: a permanent conflict.
    Conflict(String),
}

/// What a compensation does with a place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Nothing there: already done.
    Gone,
    /// Ours to remove.
    Remove,
    /// Not ours (any more): left alone, and the reason reported.
    Leave(String),
}

impl Ownership {
    pub(crate) fn claim(&self, place: &Place, tenant_id: &str, saga_id: &str) -> Claim {
        match self {
            // `Missing` only after a bucket vanished between creating and
            // looking: writing the marker fails retryably and the next
            // attempt creates the bucket again.
            Ownership::Missing | Ownership::Empty => Claim::Mark,
            Ownership::Tagged(id) if id == tenant_id => Claim::Mark,
            Ownership::Tagged(other) => {
                Claim::Conflict(format!("{place} is tagged for tenant {other}, not {tenant_id}"))
            }
            Ownership::Marked(m) if m.tenant_id == tenant_id => {
                if m.saga_id.as_deref() == Some(saga_id) {
                    Claim::Current
                } else {
                    Claim::Mark
                }
            }
            Ownership::Marked(m) => {
                Claim::Conflict(format!("{place} belongs to tenant {}, not {tenant_id}", m.tenant_id))
            }
            Ownership::Unmarked => Claim::Conflict(format!("{place} exists with objects and no Landlord marker")),
        }
    }

    pub(crate) fn undo(&self, place: &Place, tenant_id: &str, saga_id: &str) -> Undo {
        match self {
            Ownership::Missing => Undo::Gone,
            // What a crash (or a failure) between creating the bucket and
            // marking it leaves: nothing in it to lose. For a prefix, simply
            // nothing there.
            Ownership::Empty => Undo::Remove,
            Ownership::Tagged(id) if id == tenant_id => Undo::Remove,
            Ownership::Tagged(other) => Undo::Leave(format!("{place} is tagged for tenant {other}")),
            Ownership::Marked(m) if m.tenant_id != tenant_id => {
                Undo::Leave(format!("{place} belongs to tenant {}", m.tenant_id))
            }
            Ownership::Marked(Marker { saga_id: None, .. }) => Undo::Remove,
            Ownership::Marked(Marker { saga_id: Some(owner), .. }) if owner == saga_id => Undo::Remove,
            Ownership::Marked(Marker { saga_id: Some(owner), .. }) => {
                Undo::Leave(format!("{place} belongs to saga {owner}"))
            }
            Ownership::Unmarked => Undo::Leave(format!("{place} holds objects and no Landlord marker")),
        }
    }
}

/// What reading the marker object found.
#[derive(Debug)]
pub(crate) enum MarkerRead {
    /// No marker — and perhaps no bucket either: no caller needs to know
    /// which, and [`Storage::ownership`] learns it from the listing it
    /// makes next anyway.
    Absent,
    Found(Marker),
}

impl Storage {
    /// Who owns a place: the marker, else whether anything is there.
    pub async fn ownership(&self, place: &Place) -> Result<Ownership, StepFailure> {
        if let MarkerRead::Found(marker) = self.read_marker(place).await? {
            return Ok(Ownership::Marked(marker));
        }
        let listed = self.client.list_objects_v2().bucket(&place.bucket).prefix(&place.prefix).max_keys(1).send().await;
        match listed {
            Ok(page) if page.contents().is_empty() && place.own_bucket() => {
                // An empty bucket may still carry a tenant tag.
                Ok(self.tagged_tenant(&place.bucket).await?.map_or(Ownership::Empty, Ownership::Tagged))
            }
            Ok(page) if page.contents().is_empty() => Ok(Ownership::Empty),
            // The marker may have been written between the two reads (a
            // concurrent delivery creating the same place): read it again
            // before calling the objects someone else's; and the bucket may
            // have gone since the listing (a compensation deleting it).
            Ok(_) => Ok(match self.read_marker(place).await? {
                MarkerRead::Found(marker) => Ownership::Marked(marker),
                MarkerRead::Absent if self.bucket_exists(&place.bucket).await? => Ownership::Unmarked,
                MarkerRead::Absent => Ownership::Missing,
            }),
            Err(e) if code_of(&e) == Some("NoSuchBucket") => Ok(Ownership::Missing),
            Err(e) => Err(classify("listing the bucket", &e)),
        }
    }

    pub(crate) async fn read_marker(&self, place: &Place) -> Result<MarkerRead, StepFailure> {
        self.marker_object(&place.bucket, &place.marker_key()).await
    }

    /// Reads a marker object (ownership or suspension) with a HEAD: its
    /// metadata names the tenant. A GET of the body only for markers
    /// written before the metadata did, and for a HEAD that failed other
    /// than with a 404 (the GET's error says why).
    ///
    /// Why a HEAD, and a 404 taken as it is: s3s-fs writes the headers and
    /// the body of an answer in two writes without TCP_NODELAY, and on a
    /// reused connection the body then waits for the client's delayed ACK —
    /// a GET of a present marker took ~40 ms in a third of the calls, a
    /// HEAD never (issue 27). A HEAD's 404 cannot tell a missing bucket
    /// from a missing key, and no caller needs it to.
    pub(crate) async fn marker_object(&self, bucket: &str, key: &str) -> Result<MarkerRead, StepFailure> {
        match self.client.head_object().bucket(bucket).key(key).send().await {
            Ok(head) => {
                let named = head.metadata().and_then(|m| {
                    m.iter().find(|(k, v)| k.eq_ignore_ascii_case(TENANT_METADATA) && !v.trim().is_empty())
                });
                if let Some((_, tenant_id)) = named {
                    return Ok(MarkerRead::Found(Marker::parse(tenant_id.as_bytes(), head.metadata())));
                }
            }
            Err(e) if status_of(&e) == Some(404) => return Ok(MarkerRead::Absent),
            Err(_) => {}
        }
        match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(object) => {
                let metadata = object.metadata().cloned();
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| StepFailure::retryable("bad_response", format!("reading the marker: {e}")))?;
                Ok(MarkerRead::Found(Marker::parse(&body.into_bytes(), metadata.as_ref())))
            }
            Err(e) if matches!(code_of(&e), Some("NoSuchBucket" | "NoSuchKey")) || status_of(&e) == Some(404) => {
                Ok(MarkerRead::Absent)
            }
            Err(e) => Err(classify("reading the ownership marker", &e)),
        }
    }

    /// Whether the bucket is there (a HeadBucket: no body to wait for).
    async fn bucket_exists(&self, bucket: &str) -> Result<bool, StepFailure> {
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify("checking the bucket exists", &e)),
        }
    }

    /// Writes the marker naming this tenant and saga (creating or adopting).
    pub(crate) async fn write_marker(&self, place: &Place, tenant_id: &str, saga_id: &str) -> Result<(), StepFailure> {
        self.client
            .put_object()
            .bucket(&place.bucket)
            .key(place.marker_key())
            .body(ByteStream::from(tenant_id.as_bytes().to_vec()))
            .content_type("text/plain")
            .metadata(SAGA_METADATA, saga_id)
            .metadata(TENANT_METADATA, tenant_id)
            .send()
            .await
            .map_err(|e| classify("writing the ownership marker", &e))?;
        Ok(())
    }

    /// The `landlord-tenant` tag of a bucket, where the server keeps tags.
    async fn tagged_tenant(&self, bucket: &str) -> Result<Option<String>, StepFailure> {
        if !self.support.has(Feature::Tagging) {
            return Ok(None);
        }
        match self.client.get_bucket_tagging().bucket(bucket).send().await {
            Ok(tags) => Ok(tags.tag_set().iter().find(|t| t.key() == TAG).map(|t| t.value().to_owned())),
            // No tags, no tagging on this server, or no bucket: no tag to go by.
            Err(e)
                if matches!(code_of(&e), Some("NoSuchTagSet" | "NoSuchTagSetError" | "NoSuchBucket"))
                    || unsupported(&e) =>
            {
                if not_implemented(&e) {
                    self.support.lacks(Feature::Tagging);
                }
                Ok(None)
            }
            Err(e) => Err(classify("reading the bucket's tags", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Place {
        Place { bucket: "landlord-acme".into(), prefix: String::new() }
    }

    fn marked(tenant: &str, saga: Option<&str>) -> Ownership {
        Ownership::Marked(Marker { tenant_id: tenant.into(), saga_id: saga.map(str::to_owned) })
    }

    #[test]
    fn markers_read_both_formats() {
        let old = Marker::parse(b"id-acme\n", None);
        assert_eq!(old, Marker { tenant_id: "id-acme".into(), saga_id: None });
        let meta = HashMap::from([("Landlord-Saga".to_owned(), "s2".to_owned())]);
        assert_eq!(Marker::parse(b"id-acme", Some(&meta)).saga_id.as_deref(), Some("s2"));
        let blank = HashMap::from([(SAGA_METADATA.to_owned(), " ".to_owned())]);
        assert_eq!(Marker::parse(b"id-acme", Some(&blank)).saga_id, None);
    }

    #[test]
    fn a_forward_step_adopts_its_tenants_places_only() {
        let place = bucket();
        let claim = |o: Ownership| o.claim(&place, "id-acme", "s2");
        assert_eq!(claim(Ownership::Empty), Claim::Mark);
        assert_eq!(claim(Ownership::Tagged("id-acme".into())), Claim::Mark);
        assert_eq!(claim(marked("id-acme", Some("s1"))), Claim::Mark);
        assert_eq!(claim(marked("id-acme", None)), Claim::Mark);
        assert_eq!(claim(marked("id-acme", Some("s2"))), Claim::Current);
        assert!(matches!(claim(marked("id-other", Some("s2"))), Claim::Conflict(m) if m.contains("id-other")));
        assert!(matches!(claim(Ownership::Tagged("id-other".into())), Claim::Conflict(_)));
        assert!(matches!(claim(Ownership::Unmarked), Claim::Conflict(_)));
    }

    #[test]
    fn a_compensation_removes_only_its_own_sagas_places() {
        let place = bucket();
        let undo = |o: Ownership| o.undo(&place, "id-acme", "s1");
        assert_eq!(undo(Ownership::Missing), Undo::Gone);
        assert_eq!(undo(Ownership::Empty), Undo::Remove);
        assert_eq!(undo(Ownership::Tagged("id-acme".into())), Undo::Remove);
        assert_eq!(undo(marked("id-acme", Some("s1"))), Undo::Remove);
        assert_eq!(undo(marked("id-acme", None)), Undo::Remove, "older than saga fencing");
        assert_eq!(
            undo(marked("id-acme", Some("s2"))),
            Undo::Leave("s3.bucket landlord-acme belongs to saga s2".into())
        );
        assert_eq!(
            undo(marked("id-other", Some("s1"))),
            Undo::Leave("s3.bucket landlord-acme belongs to tenant id-other".into())
        );
        assert_eq!(
            undo(marked("id-other", None)),
            Undo::Leave("s3.bucket landlord-acme belongs to tenant id-other".into())
        );
        assert!(matches!(undo(Ownership::Tagged("id-other".into())), Undo::Leave(_)));
        assert!(matches!(undo(Ownership::Unmarked), Undo::Leave(_)));
    }
}
