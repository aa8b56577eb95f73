//! Tenant keys for organizations: from the slug, and the suffixed forms
//! tried when a key is taken (docs/clerk.md).

use landlord_contract::{KeyError, TenantKey};

/// The tenant key rule's maximum length (`landlord_contract`'s `MAX_LEN`,
/// which the crate does not export; a test keeps the two in step).
const KEY_MAX_LEN: usize = 40;

/// A tenant key from an organization's slug, or the rule it cannot meet.
pub fn key_from_slug(slug: &str) -> std::result::Result<TenantKey, KeyError> {
    let mut key = String::new();
    for c in slug.chars().map(|c| c.to_ascii_lowercase()) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            key.push(c);
        } else if matches!(c, '-' | '_' | '.' | ' ') && !key.is_empty() && !key.ends_with('-') {
            key.push('-');
        }
    }
    key.truncate(KEY_MAX_LEN);
    while key.ends_with('-') {
        key.pop();
    }
    TenantKey::parse(&key)
}

/// How many suffixed keys (`-2` to `-<this>`) are tried for an
/// organization whose key is taken before it is rejected.
pub const MAX_KEY_SUFFIX: u32 = 99;

/// The keys an organization may get, in order of preference: the key from
/// its slug, then the same with `-2`, `-3`, … up to [`MAX_KEY_SUFFIX`], the
/// base cut (and any hyphen it ends with dropped) so that each still meets
/// the key rule, its length included.
pub fn key_candidates(key: &TenantKey) -> Vec<TenantKey> {
    let mut candidates = vec![key.clone()];
    for n in 2..=MAX_KEY_SUFFIX {
        let suffix = format!("-{n}");
        let mut base = key.as_str().to_owned();
        base.truncate(KEY_MAX_LEN.saturating_sub(suffix.len()));
        while base.ends_with('-') {
            base.pop();
        }
        if let Ok(candidate) = TenantKey::parse(&format!("{base}{suffix}"))
            && !candidates.contains(&candidate)
        {
            candidates.push(candidate);
        }
    }
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_become_keys_or_name_the_rule() {
        assert_eq!(key_from_slug("Acme_Corp").unwrap().as_str(), "acme-corp");
        assert_eq!(key_from_slug("acme--corp.").unwrap().as_str(), "acme-corp");
        assert_eq!(key_from_slug("ÀCME inc").unwrap().as_str(), "cme-inc");
        assert_eq!(key_from_slug(&"a".repeat(60)).unwrap().as_str().len(), KEY_MAX_LEN);
        assert_eq!(key_from_slug("1acme").unwrap_err().rule(), "tenant_key.first_character");
        assert_eq!(key_from_slug("admin").unwrap_err().rule(), "tenant_key.reserved");
        assert_eq!(key_from_slug("a").unwrap_err().rule(), "tenant_key.too_short");
        assert!(TenantKey::parse(&"a".repeat(KEY_MAX_LEN)).is_ok());
        assert_eq!(TenantKey::parse(&"a".repeat(KEY_MAX_LEN + 1)).unwrap_err().rule(), "tenant_key.too_long");
    }

    #[test]
    fn a_taken_key_gets_suffixes_that_meet_the_key_rule() {
        let keys = |key: &str| -> Vec<String> {
            key_candidates(&TenantKey::parse(key).unwrap()).iter().map(|k| k.as_str().to_owned()).collect()
        };
        let acme = keys("acme");
        assert_eq!(&acme[..3], ["acme", "acme-2", "acme-3"]);
        assert_eq!(acme.len(), MAX_KEY_SUFFIX as usize);
        assert_eq!(acme.last().map(String::as_str), Some("acme-99"));
        // The longest key is cut to leave room, and a cut that ends in a
        // hyphen drops it (no "--").
        let long = format!("{}-b", "a".repeat(KEY_MAX_LEN - 2));
        let cut = keys(&long);
        assert_eq!(cut[1], format!("{}-2", "a".repeat(KEY_MAX_LEN - 2)));
        assert_eq!(cut[10], format!("{}-11", "a".repeat(KEY_MAX_LEN - 3)));
        for key in keys(&long).iter().chain(&acme) {
            assert!(TenantKey::parse(key).is_ok() && key.len() <= KEY_MAX_LEN, "{key}");
        }
    }
}
