//! `storage.export`: the tenant's objects copied to the archive, then the
//! whole export — the database worker's part included — read back and
//! checked, and its manifest written.
//!
//! The orchestrator names the export's place in the input `export.prefix`
//! (`<key>/<tenant id>/<time>/`) in the archive bucket ([`crate::archive`]).
//! The database worker wrote `<prefix>database/…` and
//! `<prefix>database/manifest.json` before (its `files` with `size` and
//! `sha256`, its `tables` with row counts); a tenant without a database
//! step has none, and the manifest says so. This step:
//!
//! 1. hashes each of the tenant's objects (its bucket, or its pooled
//!    prefix; Landlord's markers left out) and copies it server-side to
//!    `<prefix>objects/<key>`; copies an earlier attempt left of objects
//!    that are gone since are deleted;
//! 2. reads back every file under the prefix: each object copy against
//!    its source's size and SHA-256, each database file against the
//!    database manifest; a file that differs, is missing, or is under
//!    `objects/` or `database/` without being expected is a permanent
//!    `export_unverified` naming it. Files of other steps (another folder
//!    under the prefix) are listed in the manifest with their checksums;
//! 3. writes `<prefix>manifest.json` — tenant, key, created_at, database,
//!    objects, `"verified": true` — and reports `export.location`
//!    (`s3://<bucket>/<prefix>`) and `export.verified` = `true`.
//!
//! Re-running it redoes it all, so a retry after any failure is safe.
//! Objects are copied with CopyObject, which S3 limits to 5 GiB each.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_s3::primitives::ByteStream;
use futures_util::{StreamExt as _, TryStreamExt as _};
use landlord_contract::pb;
use landlord_runtime::StepFailure;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Storage;
use crate::classify::{classify, code_of, status_of};
use crate::naming::Place;
use crate::ownership::{MARKER, Ownership};
use crate::suspend::{SUSPENDED, may_touch};

/// The input naming the export's prefix in the archive.
pub const EXPORT_PREFIX: &str = "export.prefix";
/// Files read or hashed at once.
const PARALLEL: usize = 8;

/// A file of an export: its key (relative to the export prefix in the
/// manifest), size and SHA-256 (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

/// Size and SHA-256 of an object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub size: u64,
    pub sha256: String,
}

/// The export prefix from the command, checked: relative, ending in `/`,
/// no empty or dot segments.
pub fn export_prefix(command: &pb::StepCommand) -> Result<String, StepFailure> {
    let prefix = command.inputs.get(EXPORT_PREFIX).map(String::as_str).unwrap_or_default();
    let segments: Vec<&str> = prefix.strip_suffix('/').unwrap_or("").split('/').collect();
    if prefix.is_empty() || segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(StepFailure::permanent(
            "invalid_export_prefix",
            format!("the input {EXPORT_PREFIX} must be a relative folder ending in '/', got {prefix:?}"),
        ));
    }
    Ok(prefix.to_owned())
}

fn unverified(message: String) -> StepFailure {
    StepFailure::permanent("export_unverified", message)
}

/// `key` percent-encoded for `x-amz-copy-source` (slashes kept).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Storage {
    pub(crate) async fn export(
        &self,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
    ) -> Result<pb::StepOk, StepFailure> {
        let prefix = export_prefix(command)?;
        let place = self.settings.place(tenant)?;
        let archive = self.settings.archive_bucket.clone();
        if place.bucket == archive {
            return Err(StepFailure::permanent(
                "conflicting_owner",
                format!("{place} is the archive bucket; the tenant's objects cannot be exported into themselves"),
            ));
        }
        let ownership = self.ownership(&place).await?;
        let present = may_touch(&place, &ownership, &tenant.tenant_id)?;
        self.ensure_archive().await?;
        let sources = if present { self.source_keys(&place).await? } else { Vec::new() };
        let copied = self.copy_objects(&place, &sources, &prefix).await?;
        self.remove_stale_copies(&prefix, &copied).await?;
        let database = self.verify_database(&prefix).await?;
        let (objects, other) = self.verify_objects(&prefix, &copied).await?;
        let location = format!("s3://{archive}/{prefix}");
        let manifest = json!({
            "tenant": tenant.tenant_id,
            "key": tenant.key,
            "created_at": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
            "location": location,
            "source": match ownership { Ownership::Missing => format!("{place} (missing: nothing to copy)"), _ => place.to_string() },
            "database": database,
            "objects": objects,
            "other": other,
            "verified": true,
        });
        let body = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| StepFailure::permanent("manifest", format!("encoding the manifest: {e}")))?;
        let manifest_key = format!("{prefix}manifest.json");
        let expected = digest_of(&body);
        self.client
            .put_object()
            .bucket(&archive)
            .key(&manifest_key)
            .body(ByteStream::from(body))
            .content_type("application/json")
            .send()
            .await
            .map_err(|e| classify("writing the export manifest", &e))?;
        if self.digest(&archive, &manifest_key).await? != Some(expected) {
            return Err(unverified(format!("{manifest_key} does not read back as written")));
        }
        tracing::info!(%location, objects = objects.len(), "exported and verified");
        Ok(pb::StepOk {
            resources: Vec::new(),
            outputs: HashMap::from([
                ("export.location".to_owned(), location),
                ("export.verified".to_owned(), "true".to_owned()),
                ("export.objects".to_owned(), objects.len().to_string()),
            ]),
        })
    }

    /// The tenant's object keys, relative to its place; Landlord's markers left out.
    async fn source_keys(&self, place: &Place) -> Result<Vec<String>, StepFailure> {
        let pages: Vec<_> = self
            .client
            .list_objects_v2()
            .bucket(&place.bucket)
            .prefix(&place.prefix)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("listing the tenant's objects", &e))?;
        Ok(pages
            .iter()
            .flat_map(|page| page.contents())
            .filter_map(|o| o.key())
            .filter_map(|key| key.strip_prefix(place.prefix.as_str()))
            .filter(|key| *key != MARKER && *key != SUSPENDED)
            .map(str::to_owned)
            .collect())
    }

    /// Hashes and copies each object: relative key → its source's digest.
    async fn copy_objects(
        &self,
        place: &Place,
        keys: &[String],
        prefix: &str,
    ) -> Result<BTreeMap<String, Digest>, StepFailure> {
        let archive = &self.settings.archive_bucket;
        futures_util::stream::iter(keys.to_vec())
            .map(|key| async move {
                let source = format!("{}{key}", place.prefix);
                let Some(digest) = self.digest(&place.bucket, &source).await? else {
                    // Deleted since the listing: nothing to copy.
                    return Ok(None);
                };
                self.client
                    .copy_object()
                    .bucket(archive)
                    .key(format!("{prefix}objects/{key}"))
                    .copy_source(format!("{}/{}", place.bucket, encode_key(&source)))
                    .send()
                    .await
                    .map_err(|e| classify(&format!("copying {source:?} to the archive"), &e))?;
                Ok(Some((key, digest)))
            })
            .buffer_unordered(PARALLEL)
            .try_filter_map(|copied| async move { Ok(copied) })
            .try_collect()
            .await
    }

    /// Deletes copies under `<prefix>objects/` whose source is gone (left
    /// by an earlier attempt).
    async fn remove_stale_copies(&self, prefix: &str, copied: &BTreeMap<String, Digest>) -> Result<(), StepFailure> {
        let folder = format!("{prefix}objects/");
        for key in self.archive_keys(&folder).await? {
            let relative = &key[folder.len()..];
            if !copied.contains_key(relative) {
                self.client
                    .delete_object()
                    .bucket(&self.settings.archive_bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| classify("deleting a stale copy", &e))?;
            }
        }
        Ok(())
    }

    /// Every key under `prefix` in the archive.
    pub(crate) async fn archive_keys(&self, prefix: &str) -> Result<Vec<String>, StepFailure> {
        let pages: Vec<_> = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.archive_bucket)
            .prefix(prefix)
            .into_paginator()
            .send()
            .try_collect()
            .await
            .map_err(|e| classify("listing the export", &e))?;
        Ok(pages.iter().flat_map(|p| p.contents()).filter_map(|o| o.key()).map(str::to_owned).collect())
    }

    /// Checks the database part against its manifest; what the export's
    /// manifest says about it.
    async fn verify_database(&self, prefix: &str) -> Result<Value, StepFailure> {
        let archive = &self.settings.archive_bucket;
        let folder = format!("{prefix}database/");
        let manifest_key = format!("{folder}manifest.json");
        let present = self.archive_keys(&folder).await?;
        let Some(text) = self.object_text(archive, &manifest_key).await? else {
            if let Some(stray) = present.first() {
                return Err(unverified(format!("{stray} is in the export, but there is no {manifest_key}")));
            }
            return Ok(
                json!({ "included": false, "reason": "no database export under the prefix (the tenant's operation has no database step)" }),
            );
        };
        let manifest: Value =
            serde_json::from_str(&text).map_err(|e| unverified(format!("{manifest_key} is not JSON: {e}")))?;
        let listed =
            database_files(&manifest, prefix).map_err(|problem| unverified(format!("{manifest_key}: {problem}")))?;
        if let Some(stray) = present.iter().find(|key| **key != manifest_key && !listed.contains_key(*key)) {
            return Err(unverified(format!("{stray} is not in {manifest_key}")));
        }
        let files: Vec<FileEntry> = self
            .check_files(&listed)
            .await?
            .into_iter()
            .map(|entry| FileEntry { key: relative(&entry.key, prefix), ..entry })
            .collect();
        let manifest_digest = digest_of(text.as_bytes());
        Ok(json!({
            "included": true,
            "manifest": FileEntry { key: relative(&manifest_key, prefix), size: manifest_digest.size, sha256: manifest_digest.sha256 },
            "tables": manifest.get("tables").cloned().unwrap_or(Value::Null),
            "files": files,
        }))
    }

    /// Reads back each object copy against its source; the other steps'
    /// files are hashed as found.
    async fn verify_objects(
        &self,
        prefix: &str,
        copied: &BTreeMap<String, Digest>,
    ) -> Result<(Vec<FileEntry>, Vec<FileEntry>), StepFailure> {
        let folder = format!("{prefix}objects/");
        let expected: BTreeMap<String, Digest> =
            copied.iter().map(|(key, digest)| (format!("{folder}{key}"), digest.clone())).collect();
        let present = self.archive_keys(prefix).await?;
        if let Some(stray) = present.iter().find(|k| k.starts_with(&folder) && !expected.contains_key(*k)) {
            return Err(unverified(format!("{stray} is in the export but was not copied")));
        }
        let objects = self.check_files(&expected).await?;
        let skip = |key: &String| {
            key.starts_with(&folder)
                || key.starts_with(&format!("{prefix}database/"))
                || *key == format!("{prefix}manifest.json")
        };
        let others: Vec<String> = present.into_iter().filter(|key| !skip(key)).collect();
        let other = futures_util::stream::iter(others)
            .map(|key| async move {
                let digest = self.digest(&self.settings.archive_bucket, &key).await?;
                let digest = digest.ok_or_else(|| unverified(format!("{key} vanished while it was read")))?;
                Ok::<_, StepFailure>(FileEntry {
                    key: relative(&key, prefix),
                    size: digest.size,
                    sha256: digest.sha256,
                })
            })
            .buffered(PARALLEL)
            .try_collect()
            .await?;
        let objects =
            objects.into_iter().map(|entry| FileEntry { key: relative(&entry.key, &folder), ..entry }).collect();
        Ok((objects, other))
    }

    /// Reads back each file (full archive key → expected digest): its
    /// entries relative to the prefix, or the first that differs.
    async fn check_files(&self, expected: &BTreeMap<String, Digest>) -> Result<Vec<FileEntry>, StepFailure> {
        let archive = &self.settings.archive_bucket;
        let expected: Vec<(String, Digest)> = expected.iter().map(|(k, d)| (k.clone(), d.clone())).collect();
        futures_util::stream::iter(expected)
            .map(|(key, want)| async move {
                let Some(got) = self.digest(archive, &key).await? else {
                    return Err(unverified(format!("{key} is missing from the export")));
                };
                if got.size != want.size {
                    return Err(unverified(format!("{key}: {} bytes, expected {}", got.size, want.size)));
                }
                if !got.sha256.eq_ignore_ascii_case(&want.sha256) {
                    return Err(unverified(format!("{key}: SHA-256 {}, expected {}", got.sha256, want.sha256)));
                }
                Ok(FileEntry { key, size: got.size, sha256: got.sha256 })
            })
            .buffered(PARALLEL)
            .try_collect()
            .await
    }

    /// Size and SHA-256 of an object, read in full; `None` if absent.
    pub async fn digest(&self, bucket: &str, key: &str) -> Result<Option<Digest>, StepFailure> {
        let mut object = match self.client.get_object().bucket(bucket).key(key).send().await {
            Ok(object) => object,
            Err(e) if matches!(code_of(&e), Some("NoSuchKey")) || status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(classify(&format!("reading {bucket}/{key}"), &e)),
        };
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = object.body.next().await {
            let chunk =
                chunk.map_err(|e| StepFailure::retryable("bad_response", format!("reading {bucket}/{key}: {e}")))?;
            size += chunk.len() as u64;
            context.update(&chunk);
        }
        Ok(Some(Digest { size, sha256: hex(context.finish().as_ref()) }))
    }
}

/// The files a database manifest lists (full archive key → digest). An
/// entry names its file by `key` or `path` (or `file`, `name`), relative
/// to the export prefix or to its `database/` folder.
fn database_files(manifest: &Value, prefix: &str) -> Result<BTreeMap<String, Digest>, String> {
    let files = manifest.get("files").and_then(Value::as_array).ok_or("no \"files\" list")?;
    let mut listed = BTreeMap::new();
    for entry in files {
        let name = ["key", "path", "file", "name"]
            .iter()
            .find_map(|field| entry.get(*field).and_then(Value::as_str))
            .ok_or_else(|| format!("a file entry without a key: {entry}"))?;
        let size = entry.get("size").and_then(Value::as_u64).ok_or_else(|| format!("{name}: no size"))?;
        let sha256 = entry.get("sha256").and_then(Value::as_str).ok_or_else(|| format!("{name}: no sha256"))?;
        let key = if name.starts_with(prefix) {
            name.to_owned()
        } else if name.starts_with("database/") {
            format!("{prefix}{name}")
        } else {
            format!("{prefix}database/{name}")
        };
        listed.insert(key, Digest { size, sha256: sha256.to_owned() });
    }
    Ok(listed)
}

fn relative(key: &str, prefix: &str) -> String {
    key.strip_prefix(prefix).unwrap_or(key).to_owned()
}

pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    Digest { size: bytes.len() as u64, sha256: hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()) }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_relative_folders() {
        let with = |prefix: &str| pb::StepCommand {
            inputs: HashMap::from([(EXPORT_PREFIX.to_owned(), prefix.to_owned())]),
            ..Default::default()
        };
        assert_eq!(export_prefix(&with("acme/id/20261206T063359Z/")).unwrap(), "acme/id/20261206T063359Z/");
        for bad in ["", "acme", "/acme/", "acme//x/", "acme/../x/", "./"] {
            assert_eq!(export_prefix(&with(bad)).unwrap_err().code, "invalid_export_prefix", "{bad:?}");
        }
    }

    #[test]
    fn database_manifests_name_files_relative_to_either_folder() {
        let manifest = json!({"files": [
            {"path": "schema.sql", "size": 3, "sha256": "ab"},
            {"key": "database/t1.csv", "size": 1, "sha256": "cd"},
            {"key": "p/database/t2.csv", "size": 2, "sha256": "ef"},
        ]});
        let files = database_files(&manifest, "p/").unwrap();
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["p/database/schema.sql", "p/database/t1.csv", "p/database/t2.csv"]
        );
        assert!(database_files(&json!({"files": [{"path": "x"}]}), "p/").unwrap_err().contains("no size"));
        assert!(database_files(&json!({}), "p/").is_err());
    }

    #[test]
    fn digests_and_copy_sources() {
        assert_eq!(digest_of(b"abc").sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(encode_key("tenants/a b/ü+x.txt"), "tenants/a%20b/%C3%BC%2Bx.txt");
    }
}
