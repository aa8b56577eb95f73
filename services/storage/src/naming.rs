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
        check_bucket_name(&name).map_err(|rule| {
            StepFailure::permanent("invalid_bucket_name", format!("bucket name {name:?} breaks S3's rules: {rule}"))
        })?;
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

/// S3's general-purpose bucket naming rules; the broken rule, if any.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err("length must be 3 to 63 characters".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.')) {
        return Err(format!("only lowercase letters, digits, '-' and '.' are allowed, not {c:?}"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("must begin and end with a letter or digit".into());
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err("no adjacent periods, and no period next to a hyphen".into());
    }
    if name.split('.').count() == 4 && name.split('.').all(|part| part.parse::<u8>().is_ok()) {
        return Err("must not look like an IP address".into());
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("must not begin with {prefix:?}"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("must not end with {suffix:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_bucket_name;

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("landlord-acme").is_ok());
        assert!(check_bucket_name("ab").unwrap_err().contains("3 to 63"));
        assert!(check_bucket_name("Landlord").unwrap_err().contains("lowercase"));
        assert!(check_bucket_name("landlord-acme-").unwrap_err().contains("begin and end"));
        assert!(check_bucket_name("a..b").unwrap_err().contains("adjacent"));
        assert!(check_bucket_name("192.168.1.1").unwrap_err().contains("IP address"));
        assert!(check_bucket_name("xn--abc").unwrap_err().contains("xn--"));
        assert!(check_bucket_name("abc-s3alias").unwrap_err().contains("-s3alias"));
        assert!(check_bucket_name(&"a".repeat(64)).is_err());
    }
}
