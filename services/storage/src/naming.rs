//! Where a tenant's objects live: its bucket's name, checked against S3's
//! rules, or its prefix in the pooled tier's shared bucket. The forward
//! step and its compensation both name the place from the tenant spec here,
//! so a compensation finds what a failed forward step left even when the
//! step reported nothing.

use landlord_contract::{TenantKey, pb};
use landlord_runtime::StepFailure;

use crate::Settings;

/// Where a tenant's objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub bucket: String,
    /// Empty for a bucket of its own; `tenants/<key>/` in the shared bucket.
    pub prefix: String,
}

impl Place {
    /// A bucket of the tenant's own (bridge and silo), not a prefix.
    pub fn own_bucket(&self) -> bool {
        self.prefix.is_empty()
    }

    /// The resource kind and external id the step reports for this place.
    pub fn resource(&self) -> (&'static str, String) {
        if self.own_bucket() {
            ("s3.bucket", self.bucket.clone())
        } else {
            ("s3.prefix", format!("{}/{}", self.bucket, self.prefix))
        }
    }

    /// The place a reported resource names, if it is one of ours.
    pub fn from_resource(resource: &pb::Resource) -> Option<Self> {
        match resource.kind.as_str() {
            "s3.bucket" => Some(Place { bucket: resource.external_id.clone(), prefix: String::new() }),
            "s3.prefix" => resource
                .external_id
                .split_once('/')
                .map(|(bucket, prefix)| Place { bucket: bucket.to_owned(), prefix: prefix.to_owned() }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name) = self.resource();
        write!(f, "{kind} {name}")
    }
}

impl Settings {
    /// The bucket for tenant `key`, checked against S3's naming rules.
    pub fn bucket_for(&self, key: &str) -> Result<String, StepFailure> {
        let name = self.bucket_pattern.replace("{key}", key);
        check_bucket_name(&name).map_err(|e| StepFailure::permanent("invalid_bucket_name", e.to_string()))?;
        Ok(name)
    }

    /// Where this tenant's objects live under the current settings.
    pub fn place(&self, tenant: &pb::TenantSpec) -> Result<Place, StepFailure> {
        if tenant.tier == pb::Tier::Pooled as i32 {
            // The key becomes part of an object key: checked here too, since
            // `one/two` would land inside tenant `one`'s prefix.
            let key = TenantKey::parse(&tenant.key).map_err(|e| {
                StepFailure::permanent(
                    "invalid_tenant_key",
                    format!("no prefix for key {:?}: {}: {e}", tenant.key, e.rule()),
                )
            })?;
            Ok(Place { bucket: self.shared_bucket.clone(), prefix: format!("tenants/{}/", key.as_str()) })
        } else {
            Ok(Place { bucket: self.bucket_for(&tenant.key)?, prefix: String::new() })
        }
    }
}

/// A bucket name that breaks one of S3's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bucket name {name:?} breaks S3's rules: {rule}")]
pub struct BucketNameError {
    pub name: String,
    /// The rule broken, in words.
    pub rule: String,
}

/// S3's general-purpose bucket naming rules; the broken rule, if any. The
/// contract owns them, so that intake refuses a key whose bucket name would
/// break one before anything is created.
pub fn check_bucket_name(name: &str) -> Result<(), BucketNameError> {
    landlord_contract::tenant_key::check_s3_bucket_name(name)
        .map_err(|rule| BucketNameError { name: name.to_owned(), rule })
}

#[cfg(test)]
mod tests {
    use super::check_bucket_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("landlord-acme").is_ok());
        let rule = |name: &str| check_bucket_name(name).unwrap_err().rule;
        assert!(rule("ab").contains("3 to 63"));
        assert!(rule("Landlord").contains("lowercase"));
        assert!(rule("landlord-acme-").contains("begin and end"));
        assert!(rule("a..b").contains("adjacent"));
        assert!(rule("192.168.1.1").contains("IP address"));
        assert!(rule("xn--abc").contains("xn--"));
        assert!(rule("abc-s3alias").contains("-s3alias"));
        let error = check_bucket_name("ab").unwrap_err();
        assert_eq!(error.to_string(), "bucket name \"ab\" breaks S3's rules: length must be 3 to 63 characters");
        assert!(check_bucket_name(&"a".repeat(64)).is_err());
    }
}
