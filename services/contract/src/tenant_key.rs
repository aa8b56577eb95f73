//! The tenant key rule (DESIGN.md, "Tenant key").
//!
//! A key ends up in SQL identifiers, bucket names, realm names, DNS labels and
//! NATS subject tokens, so it is checked once, at the edge, against the
//! strictest of those: a lower-case ASCII letter, then lower-case letters,
//! digits and single hyphens, 3 to 40 characters, not ending in a hyphen and
//! not a reserved word. Code that builds identifiers from it still quotes them.
//!
//! A key that passes those character rules can still make a name a backend
//! refuses (S3 reserves bucket names ending in `-s3alias`), which would fail
//! half-way through provisioning and be compensated. So the rule also builds
//! every name the key becomes ([`BackendNames`]) and checks each against its
//! backend's naming rule, naming the one broken (`tenant_key.s3_bucket_name`,
//! ...). The workers build those names with settings; the check uses their
//! defaults ([`backend`]), and the bucket rule is also checked on the bare key
//! so a pattern of `{key}` alone is covered. A worker configured with another
//! prefix still checks its own names and fails the step permanently.

use std::fmt;

pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 40;

/// Words that name Landlord's own or the backends' objects.
pub const RESERVED: &[&str] = &[
    "admin",
    "api",
    "app",
    // With the default bucket pattern, its bucket would be the archive
    // bucket exports go to (LANDLORD_ARCHIVE_BUCKET, landlord-archive).
    "archive",
    "auth",
    "default",
    "internal",
    "invalid",
    "keycloak",
    "landlord",
    "master",
    "null",
    "pg",
    "postgres",
    "public",
    "root",
    "system",
    "template0",
    "template1",
    "www",
];

/// How the workers turn a key into names, with their default settings.
pub mod backend {
    /// The storage worker's `LANDLORD_S3_BUCKET_PATTERN` default
    /// (services/storage/src/settings.rs): the bucket of a bridge or silo
    /// tenant. A deployment that sets another pattern is checked by the
    /// storage worker itself, at start (the pattern with a sample key) and
    /// per key (a permanent `invalid_bucket_name` failure of the step).
    pub const BUCKET_PATTERN: &str = "landlord-{key}";
    /// The database worker's prefix of the role, schema and database it
    /// creates (services/database/src/ident.rs), followed by the key with
    /// `-` as `_`.
    pub const POSTGRES_PREFIX: &str = "tenant_";
    /// PostgreSQL truncates identifiers past NAMEDATALEN - 1 bytes.
    pub const POSTGRES_MAX_BYTES: usize = 63;
    /// The identity worker's realm, `tenant-<key>` (services/idp/src/lib.rs).
    pub const REALM_PREFIX: &str = "tenant-";
    /// The identity worker's OIDC client, `<key>-app`.
    pub const CLIENT_SUFFIX: &str = "-app";
    /// Keycloak keeps realm names and client ids in `varchar(255)` columns.
    pub const KEYCLOAK_MAX_CHARS: usize = 255;
}

/// Why a key was refused; `rule()` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("tenant key is too short: {len} characters, at least {MIN_LEN} are needed")]
    TooShort { len: usize },
    #[error("tenant key is too long: {len} characters, at most {MAX_LEN} are allowed")]
    TooLong { len: usize },
    #[error("tenant key must start with a lower-case letter a-z, not {found:?}")]
    FirstCharacter { found: char },
    #[error(
        "tenant key may contain only lower-case letters a-z, digits and '-', found {found:?} at position {position}"
    )]
    Character { found: char, position: usize },
    #[error("tenant key must not contain a double hyphen '--'")]
    DoubleHyphen,
    #[error("tenant key must not end with a hyphen")]
    TrailingHyphen,
    #[error("tenant key {0:?} is reserved")]
    Reserved(String),
    /// A name the key becomes breaks its backend's naming rule.
    #[error("tenant key cannot become the {what} {name:?}: {problem}")]
    Backend { rule: &'static str, what: &'static str, name: String, problem: String },
}

impl KeyError {
    pub fn rule(&self) -> &'static str {
        match self {
            KeyError::TooShort { .. } => "tenant_key.too_short",
            KeyError::TooLong { .. } => "tenant_key.too_long",
            KeyError::FirstCharacter { .. } => "tenant_key.first_character",
            KeyError::Character { .. } => "tenant_key.character",
            KeyError::DoubleHyphen => "tenant_key.double_hyphen",
            KeyError::TrailingHyphen => "tenant_key.trailing_hyphen",
            KeyError::Reserved(_) => "tenant_key.reserved",
            KeyError::Backend { rule, .. } => rule,
        }
    }
}

/// A key that passed the rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey(String);

impl TenantKey {
    pub fn parse(raw: &str) -> Result<Self, KeyError> {
        let len = raw.chars().count();
        let mut chars = raw.chars();
        match chars.next() {
            None => return Err(KeyError::TooShort { len: 0 }),
            Some(c) if !c.is_ascii_lowercase() => return Err(KeyError::FirstCharacter { found: c }),
            Some(_) => {}
        }
        if let Some((position, found)) =
            raw.chars().enumerate().find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(KeyError::Character { found, position });
        }
        if len < MIN_LEN {
            return Err(KeyError::TooShort { len });
        }
        if len > MAX_LEN {
            return Err(KeyError::TooLong { len });
        }
        if raw.contains("--") {
            return Err(KeyError::DoubleHyphen);
        }
        if raw.ends_with('-') {
            return Err(KeyError::TrailingHyphen);
        }
        if RESERVED.contains(&raw) {
            return Err(KeyError::Reserved(raw.to_owned()));
        }
        let key = Self(raw.to_owned());
        key.backend_names().check()?;
        Ok(key)
    }

    /// The names the workers build from this key, with their defaults.
    pub fn backend_names(&self) -> BackendNames {
        let postgres = format!("{}{}", backend::POSTGRES_PREFIX, self.0.replace('-', "_"));
        BackendNames {
            bucket: backend::BUCKET_PATTERN.replace("{key}", &self.0),
            bare_bucket: self.0.clone(),
            role: postgres.clone(),
            schema: postgres.clone(),
            database: postgres,
            realm: format!("{}{}", backend::REALM_PREFIX, self.0),
            client_id: format!("{}{}", self.0, backend::CLIENT_SUFFIX),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Every name a key becomes (see [`TenantKey::backend_names`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendNames {
    /// The tenant's own bucket, after the default pattern.
    pub bucket: String,
    /// The bucket a pattern of `{key}` alone would make.
    pub bare_bucket: String,
    /// PostgreSQL login role (bridge, silo).
    pub role: String,
    /// PostgreSQL schema (bridge).
    pub schema: String,
    /// PostgreSQL database (silo).
    pub database: String,
    /// Keycloak realm (bridge, silo).
    pub realm: String,
    /// Keycloak OIDC client id.
    pub client_id: String,
}

impl BackendNames {
    /// Checks each name against its backend's rule; the first broken one.
    pub fn check(&self) -> Result<(), KeyError> {
        type Check = fn(&str) -> Result<(), String>;
        let checks: [(&'static str, &'static str, &str, Check); 7] = [
            ("tenant_key.s3_bucket_name", "S3 bucket name", &self.bucket, check_s3_bucket_name),
            ("tenant_key.s3_bucket_name", "S3 bucket name", &self.bare_bucket, check_s3_bucket_name),
            ("tenant_key.postgres_identifier", "PostgreSQL role", &self.role, check_postgres_identifier),
            ("tenant_key.postgres_identifier", "PostgreSQL schema", &self.schema, check_postgres_identifier),
            ("tenant_key.postgres_identifier", "PostgreSQL database", &self.database, check_postgres_identifier),
            ("tenant_key.keycloak_realm_name", "Keycloak realm", &self.realm, check_keycloak_realm_name),
            ("tenant_key.keycloak_client_id", "Keycloak client id", &self.client_id, check_keycloak_client_id),
        ];
        for (rule, what, name, check) in checks {
            check(name).map_err(|problem| KeyError::Backend { rule, what, name: name.to_owned(), problem })?;
        }
        Ok(())
    }
}

/// S3's general-purpose bucket naming rules; the broken rule, if any.
///
/// The storage worker checks the names it builds with these rules too
/// (`landlord_storage::check_bucket_name`), so intake and the worker cannot
/// disagree.
pub fn check_s3_bucket_name(name: &str) -> Result<(), String> {
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
    // Reserved by AWS: punycode, S3 access points and Object Lambda, demo
    // buckets, multi-region access points, directory and table buckets.
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Err(format!("must not begin with {prefix:?} (reserved by S3)"));
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Err(format!("must not end with {suffix:?} (reserved by S3)"));
        }
    }
    Ok(())
}

/// The names the database worker builds: unquoted-safe PostgreSQL
/// identifiers (it still quotes them) that PostgreSQL keeps whole.
pub fn check_postgres_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > backend::POSTGRES_MAX_BYTES {
        return Err(format!(
            "must be 1 to {} bytes (PostgreSQL truncates longer names), is {}",
            backend::POSTGRES_MAX_BYTES,
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return Err("must begin with a lower-case letter or '_'".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')) {
        return Err(format!("only lower-case letters, digits and '_' are allowed, not {c:?}"));
    }
    // CREATE ROLE refuses these: they belong to PostgreSQL.
    if name.starts_with("pg_") {
        return Err("must not begin with \"pg_\" (reserved by PostgreSQL)".into());
    }
    Ok(())
}

/// Keycloak realm names: they appear in URLs (`/realms/<name>/...`) and
/// Keycloak refuses reserved URL characters in them; `master` is its own.
pub fn check_keycloak_realm_name(name: &str) -> Result<(), String> {
    check_keycloak_name(name)?;
    if name == "master" {
        return Err("\"master\" is Keycloak's administration realm".into());
    }
    Ok(())
}

/// Keycloak client ids: the same URL-safe characters as realm names.
pub fn check_keycloak_client_id(name: &str) -> Result<(), String> {
    check_keycloak_name(name)
}

fn check_keycloak_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > backend::KEYCLOAK_MAX_CHARS {
        return Err(format!("must be 1 to {} characters", backend::KEYCLOAK_MAX_CHARS));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("only ASCII letters, digits, '-', '_' and '.' are allowed, not {c:?}"));
    }
    if name == "." || name == ".." {
        return Err("must not be a path segment like '.' or '..'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_keys() {
        for ok in ["acme", "acme-corp", "a1b2", "abc", &"a".repeat(MAX_LEN)] {
            assert_eq!(TenantKey::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_the_rule_each_bad_key_breaks() {
        let cases = [
            ("", "tenant_key.too_short"),
            ("ab", "tenant_key.too_short"),
            (&"a".repeat(MAX_LEN + 1), "tenant_key.too_long"),
            ("1acme", "tenant_key.first_character"),
            ("-acme", "tenant_key.first_character"),
            ("Acme", "tenant_key.first_character"),
            ("acMe", "tenant_key.character"),
            ("ac'me", "tenant_key.character"),
            ("acme;drop", "tenant_key.character"),
            ("ac me", "tenant_key.character"),
            ("ac.me", "tenant_key.character"),
            ("ac_me", "tenant_key.character"),
            ("аcme", "tenant_key.first_character"), // Cyrillic а
            ("acmе", "tenant_key.character"),       // Cyrillic е
            ("ac--me", "tenant_key.double_hyphen"),
            ("acme-", "tenant_key.trailing_hyphen"),
            ("admin", "tenant_key.reserved"),
            ("postgres", "tenant_key.reserved"),
            // Regression (issue 23): passed the key rule, then failed at
            // storage after a realm, client, user, role and schema were made.
            ("acme-s3alias", "tenant_key.s3_bucket_name"),
            ("sthree-acme", "tenant_key.s3_bucket_name"),
            ("amzn-s3-demo-acme", "tenant_key.s3_bucket_name"),
        ];
        for (raw, rule) in cases {
            let err = TenantKey::parse(raw).unwrap_err();
            assert_eq!(err.rule(), rule, "{raw:?}: {err}");
        }
    }

    #[test]
    fn backend_rules_name_what_they_refuse() {
        let err = TenantKey::parse("acme-s3alias").unwrap_err();
        assert!(err.to_string().contains("S3 bucket name \"landlord-acme-s3alias\""), "{err}");
        assert!(err.to_string().contains("-s3alias"), "{err}");
        assert!(check_s3_bucket_name("landlord-acme--ol-s3").is_err());
        assert!(check_s3_bucket_name("xn--acme").is_err());
        assert!(check_s3_bucket_name(&"a".repeat(64)).is_err());
        assert!(check_s3_bucket_name("ab").is_err());
        assert!(check_s3_bucket_name("192.168.1.1").is_err());
        assert!(check_s3_bucket_name("landlord-acme").is_ok());
        assert!(check_postgres_identifier(&format!("tenant_{}", "a".repeat(57))).is_err());
        assert!(check_postgres_identifier(&format!("tenant_{}", "a".repeat(56))).is_ok());
        assert!(check_postgres_identifier("pg_acme").is_err());
        assert!(check_postgres_identifier("tenant-acme").is_err());
        assert!(check_keycloak_realm_name("master").is_err());
        assert!(check_keycloak_realm_name("tenant/acme").is_err());
        assert!(check_keycloak_realm_name("..").is_err());
        assert!(check_keycloak_client_id("acme-app").is_ok());
    }

    #[test]
    fn names_follow_the_workers_defaults() {
        let names = TenantKey::parse("acme-corp").unwrap().backend_names();
        assert_eq!(names.bucket, "landlord-acme-corp");
        assert_eq!(names.role, "tenant_acme_corp");
        assert_eq!(names.database, "tenant_acme_corp");
        assert_eq!(names.realm, "tenant-acme-corp");
        assert_eq!(names.client_id, "acme-corp-app");
    }

    /// Backend rules written independently of the checks above, from the
    /// backends' documentation, as the oracle for the property test.
    mod oracle {
        /// AWS "General purpose bucket naming rules".
        pub fn s3_accepts(name: &str) -> bool {
            let bytes = name.as_bytes();
            let lower_or_digit = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            (3..=63).contains(&bytes.len())
                && bytes.iter().all(|&b| lower_or_digit(b) || b == b'-' || b == b'.')
                && lower_or_digit(bytes[0])
                && lower_or_digit(bytes[bytes.len() - 1])
                && !bytes.windows(2).any(|w| w[0] == b'.' && (w[1] == b'.' || w[1] == b'-') || w == b"-.")
                && name.parse::<std::net::Ipv4Addr>().is_err()
                && !["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p))
                && !["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"].iter().any(|s| name.ends_with(s))
        }

        /// An identifier PostgreSQL keeps whole and needs no quoting for,
        /// that is not reserved for its own roles.
        pub fn postgres_accepts(name: &str) -> bool {
            let mut chars = name.chars();
            name.len() <= 63
                && chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !name.starts_with("pg_")
        }

        /// A realm or client id Keycloak stores and puts in URLs unescaped.
        pub fn keycloak_accepts(name: &str) -> bool {
            !name.is_empty()
                && name.len() <= 255
                && name != "master"
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }

        /// A DNS label and a NATS subject token.
        pub fn dns_label_and_subject_token(key: &str) -> bool {
            (1..=63).contains(&key.len())
                && !key.starts_with('-')
                && !key.ends_with('-')
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
    }

    mod properties {
        use super::super::*;
        use super::oracle;
        use proptest::prelude::*;

        fn key_like() -> impl Strategy<Value = String> {
            prop_oneof![
                // Mostly shaped like keys, to reach the backend rules.
                "[a-z][a-z0-9-]{0,44}",
                "[a-z][a-z0-9-]{0,20}(-s3alias|--ol-s3|-app|-x-s3)",
                "(sthree-|amzn-s3-demo-|xn--|pg-|tenant-)[a-z0-9-]{0,20}",
                // And anything at all.
                any::<String>(),
                "\\PC{0,50}",
            ]
        }

        proptest! {
            /// Whatever the rule accepts becomes names every backend accepts.
            #[test]
            fn prop_accepted_keys_make_names_every_backend_accepts(raw in key_like()) {
                match TenantKey::parse(&raw) {
                    Ok(key) => {
                        prop_assert_eq!(key.as_str(), raw.as_str());
                        let names = key.backend_names();
                        prop_assert!(oracle::s3_accepts(&names.bucket), "{:?}", names.bucket);
                        prop_assert!(oracle::s3_accepts(&names.bare_bucket), "{:?}", names.bare_bucket);
                        for pg in [&names.role, &names.schema, &names.database] {
                            prop_assert!(oracle::postgres_accepts(pg), "{:?}", pg);
                        }
                        prop_assert!(oracle::keycloak_accepts(&names.realm), "{:?}", names.realm);
                        prop_assert!(oracle::keycloak_accepts(&names.client_id), "{:?}", names.client_id);
                        prop_assert!(oracle::dns_label_and_subject_token(key.as_str()));
                    }
                    Err(error) => {
                        // Every refusal names a rule and says why.
                        prop_assert!(error.rule().starts_with("tenant_key."), "{}", error.rule());
                        prop_assert!(!error.to_string().is_empty());
                    }
                }
            }

            /// A key that every backend would take and that has the key's
            /// shape is accepted: the backend checks refuse nothing more
            /// than the backends do.
            #[test]
            fn prop_keys_every_backend_takes_are_accepted(raw in "[a-z]([a-z0-9]|-[a-z0-9]){2,19}") {
                let names = TenantKey::parse(&raw).map(|k| k.backend_names());
                let bucket = backend::BUCKET_PATTERN.replace("{key}", &raw);
                let backends_take = oracle::s3_accepts(&bucket) && oracle::s3_accepts(&raw);
                if backends_take && !RESERVED.contains(&raw.as_str()) {
                    prop_assert!(names.is_ok(), "{:?}: {:?}", raw, names);
                }
            }
        }
    }
}
