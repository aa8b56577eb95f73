//! The tenant key rule (DESIGN.md, "Tenant key").
//!
//! A key ends up in SQL identifiers, bucket names, realm names, DNS labels and
//! NATS subject tokens, so it is checked once, at the edge, against the
//! strictest of those: a lower-case ASCII letter, then lower-case letters,
//! digits and single hyphens, 3 to 40 characters, not ending in a hyphen and
//! not a reserved word. Code that builds identifiers from it still quotes them.

use std::fmt;

pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 40;

/// Words that name Landlord's own or the backends' objects.
pub const RESERVED: &[&str] = &[
    "admin",
    "api",
    "app",
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
        Ok(Self(raw.to_owned()))
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
        ];
        for (raw, rule) in cases {
            let err = TenantKey::parse(raw).unwrap_err();
            assert_eq!(err.rule(), rule, "{raw:?}: {err}");
        }
    }
}
