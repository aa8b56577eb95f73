//! `storage.suspend` and `storage.resume` (each the other's compensation).
//!
//! Suspend writes the marker object `.landlord-suspended` (at the bucket
//! root, or under a pooled tenant's prefix) — always, on every server —
//! and, for a bucket of the tenant's own, adds the deny statement to its
//! bucket policy where the server keeps policies ([`crate::policy`]); the
//! `storage.policy` output says which (`applied`, `unsupported`,
//! `not_applicable` for a pooled prefix). The marker comes first: on a
//! server that honours the policy, writing it afterwards could be refused.
//! Resume takes the statement out, then deletes the marker.
//!
//! Like the ownership marker, the suspension marker's body is the tenant
//! id and its `landlord-saga` metadata the saga that suspended. Both steps
//! first check the ownership marker: a place another tenant owns, or
//! objects without a marker, are a permanent `conflicting_owner`. A resume
//! that *compensates* a suspend (the suspend saga failed later, or its
//! command was fenced) lifts only a suspension of its own saga: one a later
//! saga wrote is left, and the `fenced` output says so. A forward resume
//! (the resume or restore operation) lifts any suspension of the tenant.

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use landlord_contract::pb;
use landlord_runtime::StepFailure;

use crate::classify::{classify, code_of, status_of};
use crate::naming::Place;
use crate::ownership::{Marker, MarkerRead, Ownership, SAGA_METADATA, TENANT_METADATA};
use crate::policy::PolicyOutcome;
use crate::{FENCED, Storage};

/// The suspension marker, relative to the bucket root or the tenant's prefix.
pub const SUSPENDED: &str = ".landlord-suspended";

impl Place {
    /// The key of the suspension marker.
    pub fn suspended_key(&self) -> String {
        format!("{}{SUSPENDED}", self.prefix)
    }
}

/// Whether the place may be touched for `tenant_id`: a marker (or tag)
/// naming it, or nothing at all; another tenant's place is a permanent
/// conflict. `Ok(false)`: there is no bucket.
pub(crate) fn may_touch(place: &Place, ownership: &Ownership, tenant_id: &str) -> Result<bool, StepFailure> {
    let conflict = |message: String| Err(StepFailure::permanent("conflicting_owner", message));
    match ownership {
        Ownership::Missing => Ok(false),
        Ownership::Empty => Ok(true),
        Ownership::Tagged(id) if id == tenant_id => Ok(true),
        Ownership::Marked(m) if m.tenant_id == tenant_id => Ok(true),
        Ownership::Tagged(other) => conflict(format!("{place} is tagged for tenant {other}, not {tenant_id}")),
        Ownership::Marked(m) => conflict(format!("{place} belongs to tenant {}, not {tenant_id}", m.tenant_id)),
        Ownership::Unmarked => conflict(format!("{place} holds objects and no Landlord marker")),
    }
}

impl Storage {
    pub(crate) async fn suspend(&self, tenant: &pb::TenantSpec, saga_id: &str) -> Result<pb::StepOk, StepFailure> {
        let place = self.settings.place(tenant)?;
        let ownership = self.ownership(&place).await?;
        if !may_touch(&place, &ownership, &tenant.tenant_id)? {
            return Err(StepFailure::permanent("not_found", format!("{place} does not exist: nothing to suspend")));
        }
        self.client
            .put_object()
            .bucket(&place.bucket)
            .key(place.suspended_key())
            .body(ByteStream::from(tenant.tenant_id.as_bytes().to_vec()))
            .content_type("text/plain")
            .metadata(SAGA_METADATA, saga_id)
            .metadata(TENANT_METADATA, &tenant.tenant_id)
            .send()
            .await
            .map_err(|e| classify("writing the suspension marker", &e))?;
        let policy =
            if place.own_bucket() { self.deny_access(&place.bucket).await? } else { PolicyOutcome::NotApplicable };
        tracing::info!(%place, policy = policy.as_str(), "suspended");
        Ok(outputs(&place, policy, None))
    }

    pub(crate) async fn resume(
        &self,
        tenant: &pb::TenantSpec,
        saga_id: &str,
        compensate: bool,
    ) -> Result<pb::StepOk, StepFailure> {
        let place = self.settings.place(tenant)?;
        let ownership = self.ownership(&place).await?;
        if !may_touch(&place, &ownership, &tenant.tenant_id)? {
            // No bucket: nothing is suspended.
            return Ok(outputs(&place, PolicyOutcome::NotApplicable, None));
        }
        let suspension = self.suspension(&place).await?;
        if let Some(marker) = &suspension {
            if marker.tenant_id != tenant.tenant_id {
                // The ownership marker names this tenant: a suspension
                // marker naming another is nobody's to lift but its own.
                let note = format!("{place} was suspended for tenant {}", marker.tenant_id);
                return Err(StepFailure::permanent("conflicting_owner", note));
            }
            if compensate && marker.saga_id.as_deref().is_some_and(|owner| owner != saga_id) {
                let note =
                    format!("{place} was suspended by saga {}, not this one", marker.saga_id.as_deref().unwrap_or(""));
                tracing::warn!(%place, %note, "suspension left in place");
                return Ok(outputs(&place, PolicyOutcome::NotApplicable, Some(note)));
            }
        }
        let policy =
            if place.own_bucket() { self.lift_denial(&place.bucket).await? } else { PolicyOutcome::NotApplicable };
        match self.client.delete_object().bucket(&place.bucket).key(place.suspended_key()).send().await {
            Ok(_) => {}
            Err(e) if code_of(&e) == Some("NoSuchKey") || status_of(&e) == Some(404) => {}
            Err(e) => return Err(classify("deleting the suspension marker", &e)),
        }
        tracing::info!(%place, policy = policy.as_str(), "resumed");
        Ok(outputs(&place, policy, None))
    }

    /// The suspension marker, if there is one.
    pub async fn suspension(&self, place: &Place) -> Result<Option<Marker>, StepFailure> {
        Ok(match self.marker_object(&place.bucket, &place.suspended_key()).await? {
            MarkerRead::Found(marker) => Some(marker),
            MarkerRead::Absent => None,
        })
    }
}

fn outputs(place: &Place, policy: PolicyOutcome, fenced: Option<String>) -> pb::StepOk {
    let mut outputs = HashMap::from([
        ("storage.policy".to_owned(), policy.as_str().to_owned()),
        ("storage.suspended_marker".to_owned(), format!("{}/{}", place.bucket, place.suspended_key())),
    ]);
    if let Some(note) = fenced {
        outputs.insert(FENCED.to_owned(), note);
    }
    pb::StepOk { resources: Vec::new(), outputs }
}
