//! The archive bucket exports go to (`LANDLORD_ARCHIVE_BUCKET`), and the
//! sweep that expires them.
//!
//! The archive carries Landlord's own marker, `.landlord/archive` (body
//! `landlord-archive`), not a tenant's: the orphan audit, which looks for
//! `.landlord/tenant`, leaves it alone, and a bucket that does carry a
//! tenant's marker (a tenant whose bucket name happens to be the archive's)
//! is refused as an archive, a permanent `conflicting_owner`. The database
//! worker may have made the bucket first (its part of an export comes
//! before the objects); the marker is added then.
//!
//! Exports live under `<key>/<tenant id>/<UTC time YYYYMMDDTHHMMSSZ>/`. s3s-fs
//! has no lifecycle rules, so the storage service sweeps the archive every
//! `LANDLORD_EXPORT_SWEEP_INTERVAL` and deletes every export older than
//! `LANDLORD_EXPORT_RETENTION`, dated by its `<time>` segment, or by its
//! manifest's `created_at` where the segment is not a time. An export with
//! neither is left alone.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use landlord_runtime::StepFailure;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Storage;
use crate::classify::{classify, code_of, status_of};
use crate::ownership::MARKER;

/// Landlord's marker on the archive bucket.
pub const ARCHIVE_MARKER: &str = ".landlord/archive";
const ARCHIVE_OWNER: &str = "landlord-archive";

/// How the `<time>` segment of an export prefix is written.
const EXPORT_TIME: &str = "[year][month][day]T[hour][minute][second]Z";

/// The `<time>` segment of an export prefix.
pub fn parse_export_time(segment: &str) -> Option<OffsetDateTime> {
    let format = time::format_description::parse_borrowed::<1>(EXPORT_TIME).ok()?;
    time::PrimitiveDateTime::parse(segment, &format).ok().map(time::PrimitiveDateTime::assume_utc)
}

/// The `<time>` segment for `at`.
pub fn export_time(at: OffsetDateTime) -> String {
    time::format_description::parse_borrowed::<1>(EXPORT_TIME)
        .ok()
        .and_then(|format| at.to_offset(time::UtcOffset::UTC).format(&format).ok())
        .unwrap_or_default()
}

impl Storage {
    /// Makes sure the archive bucket exists and is Landlord's archive.
    pub(crate) async fn ensure_archive(&self) -> Result<(), StepFailure> {
        let bucket = &self.settings.archive_bucket;
        match self.client.head_bucket().bucket(bucket).send().await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) => match self.client.create_bucket().bucket(bucket).send().await {
                Ok(_) => {}
                Err(e) if matches!(code_of(&e), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => {}
                Err(e) => return Err(classify("creating the archive bucket", &e)),
            },
            Err(e) => return Err(classify("looking for the archive bucket", &e)),
        }
        if self.object_text(bucket, ARCHIVE_MARKER).await?.is_some() {
            return Ok(());
        }
        if let Some(tenant) = self.object_text(bucket, MARKER).await? {
            return Err(StepFailure::permanent(
                "conflicting_owner",
                format!("the archive bucket {bucket} is tenant {}'s bucket", tenant.trim()),
            ));
        }
        self.client
            .put_object()
            .bucket(bucket)
            .key(ARCHIVE_MARKER)
            .body(ByteStream::from_static(ARCHIVE_OWNER.as_bytes()))
            .content_type("text/plain")
            .send()
            .await
            .map_err(|e| classify("marking the archive bucket", &e))?;
        Ok(())
    }

    /// A small object's body as text, `None` if absent.
    pub(crate) async fn object_text(&self, bucket: &str, key: &str) -> Result<Option<String>, StepFailure> {
        match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(object) => {
                let body = object
                    .body
                    .collect()
                    .await
                    .map_err(|e| StepFailure::retryable("bad_response", format!("reading {bucket}/{key}: {e}")))?;
                Ok(Some(String::from_utf8_lossy(&body.into_bytes()).into_owned()))
            }
            Err(e) if matches!(code_of(&e), Some("NoSuchKey" | "NoSuchBucket")) || status_of(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(classify(&format!("reading {bucket}/{key}"), &e)),
        }
    }

    /// The common prefixes one level below `prefix` in the archive.
    async fn folders(&self, prefix: &str) -> Result<Vec<String>, StepFailure> {
        let bucket = &self.settings.archive_bucket;
        let (mut folders, mut token) = (Vec::new(), None::<String>);
        loop {
            let page = match self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .delimiter("/")
                .set_continuation_token(token.clone())
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(folders),
                Err(e) => return Err(classify("listing the archive", &e)),
            };
            folders.extend(page.common_prefixes().iter().filter_map(|p| p.prefix()).map(str::to_owned));
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(folders),
            }
        }
    }

    /// Deletes every export older than `retention` at `now`: the prefixes
    /// removed.
    pub async fn sweep_exports(&self, now: OffsetDateTime, retention: Duration) -> Result<Vec<String>, StepFailure> {
        let cutoff = now - retention;
        let mut removed = Vec::new();
        for key in self.folders("").await? {
            if key.starts_with(".landlord") {
                continue;
            }
            for tenant in self.folders(&key).await? {
                for export in self.folders(&tenant).await? {
                    let segment = export[tenant.len()..].trim_end_matches('/');
                    let created = match parse_export_time(segment) {
                        Some(at) => Some(at),
                        None => self.manifest_created_at(&export).await?,
                    };
                    match created {
                        Some(at) if at < cutoff => {
                            self.delete_prefix(&export).await?;
                            tracing::info!(export, created = %at, "expired export deleted");
                            removed.push(export);
                        }
                        Some(_) => {}
                        None => tracing::warn!(export, "an export without a time or a manifest is kept"),
                    }
                }
            }
        }
        Ok(removed)
    }

    async fn manifest_created_at(&self, export: &str) -> Result<Option<OffsetDateTime>, StepFailure> {
        let text = self.object_text(&self.settings.archive_bucket, &format!("{export}manifest.json")).await?;
        Ok(text
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|manifest| manifest.get("created_at").and_then(|v| v.as_str()).map(str::to_owned))
            .and_then(|at| OffsetDateTime::parse(&at, &Rfc3339).ok()))
    }

    /// Deletes every object under `prefix` in the archive.
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<usize, StepFailure> {
        let bucket = &self.settings.archive_bucket;
        let mut removed = 0;
        loop {
            let page = match self.client.list_objects_v2().bucket(bucket).prefix(prefix).send().await {
                Ok(page) => page,
                Err(e) if code_of(&e) == Some("NoSuchBucket") => return Ok(removed),
                Err(e) => return Err(classify("listing the archive", &e)),
            };
            let keys: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .filter_map(|key| ObjectIdentifier::builder().key(key).build().ok())
                .collect();
            if keys.is_empty() {
                return Ok(removed);
            }
            removed += keys.len();
            let delete = Delete::builder()
                .set_objects(Some(keys))
                .quiet(true)
                .build()
                .map_err(|e| StepFailure::permanent("delete_request", e.to_string()))?;
            let answer = self
                .client
                .delete_objects()
                .bucket(bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| classify("deleting from the archive", &e))?;
            if let Some(error) = answer.errors().first() {
                let code = error.code().unwrap_or("delete_failed").to_owned();
                return Err(StepFailure::retryable(code, format!("deleting {:?} from the archive", error.key())));
            }
        }
    }

    /// Sweeps the archive every `interval` until `stop` resolves. Failures
    /// are logged and tried again at the next round.
    pub async fn sweep_until(&self, interval: Duration, retention: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticks.tick() => {}
            }
            match self.sweep_exports(OffsetDateTime::now_utc(), retention).await {
                Ok(removed) if removed.is_empty() => tracing::debug!("archive swept: nothing expired"),
                Ok(removed) => tracing::info!(count = removed.len(), "archive swept: expired exports deleted"),
                Err(failure) => tracing::warn!(%failure, "sweeping the archive failed; trying again next round"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_times_read_and_write_the_prefix_segment() {
        let at = parse_export_time("20261206T063359Z").unwrap();
        assert_eq!(at.unix_timestamp(), 1_796_538_839);
        assert_eq!(export_time(at), "20261206T063359Z");
        assert_eq!(parse_export_time("2026-12-06"), None);
        assert_eq!(parse_export_time("20261306T063359Z"), None);
    }
}
