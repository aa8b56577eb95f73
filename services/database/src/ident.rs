//! Names of a tenant's objects and how they are written into SQL.
//!
//! Utility statements (CREATE ROLE, CREATE SCHEMA, GRANT, COMMENT) take no
//! bind parameters, so names and literals are spliced into the text. Every
//! splice goes through [`quote_ident`] or [`quote_literal`] — even for names
//! derived from a validated tenant key — so a key that slipped past
//! validation still cannot change what a statement does.

use landlord_contract::TenantKey;

/// Prefix of every schema, role and database Landlord creates for a tenant.
pub const PREFIX: &str = "tenant_";

/// PostgreSQL truncates identifiers longer than this (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a name or value cannot be spliced into SQL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("{0:?} cannot be an SQL identifier")]
    NotAnIdentifier(String),
    #[error("{0:?} is longer than {MAX_IDENTIFIER_BYTES} bytes")]
    TooLong(String),
    #[error("a string literal cannot hold NUL")]
    Nul,
}

/// `name` as a double-quoted identifier: embedded `"` doubled. NUL cannot
/// be represented and is refused.
pub fn quote_ident(name: &str) -> Result<String, QuoteError> {
    if name.is_empty() || name.contains('\0') {
        return Err(QuoteError::NotAnIdentifier(name.to_owned()));
    }
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(QuoteError::TooLong(name.to_owned()));
    }
    Ok(format!("\"{}\"", name.replace('"', "\"\"")))
}

/// `value` as a string literal that means the same whatever
/// `standard_conforming_strings` says: `'…'` with `'` doubled, or `E'…'`
/// with `\` doubled too when it holds a backslash. NUL is refused.
pub fn quote_literal(value: &str) -> Result<String, QuoteError> {
    if value.contains('\0') {
        return Err(QuoteError::Nul);
    }
    let escaped = value.replace('\'', "''");
    Ok(if value.contains('\\') { format!("E'{}'", escaped.replace('\\', "\\\\")) } else { format!("'{escaped}'") })
}

/// The names a tenant's objects get; the same for a provision and its
/// compensation, so a compensation can find a half-made provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantNames {
    /// Login role (bridge, silo).
    pub role: String,
    /// Schema (bridge: in the tenant-data database; silo: in its own one).
    pub schema: String,
    /// Database (silo).
    pub database: String,
}

impl TenantNames {
    /// `tenant_<key with - as _>` for all three: `-` would force quoting in
    /// every query a tenant writes, `_` does not.
    pub fn for_key(key: &TenantKey) -> Self {
        let name = format!("{PREFIX}{}", key.as_str().replace('-', "_"));
        Self { role: name.clone(), schema: name.clone(), database: name }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_quotes_doubled() {
        assert_eq!(quote_ident("tenant_acme").unwrap(), r#""tenant_acme""#);
        assert_eq!(quote_ident(r#"a"b"#).unwrap(), r#""a""b""#);
        assert_eq!(
            quote_ident(r#""; DROP SCHEMA public CASCADE; --"#).unwrap(),
            r#""""; DROP SCHEMA public CASCADE; --""#
        );
        assert_eq!(quote_ident("Ünïcödé; x").unwrap(), "\"Ünïcödé; x\"");
        assert!(quote_ident("").is_err());
        assert!(quote_ident("a\0b").is_err());
        assert!(quote_ident(&"x".repeat(64)).is_err());
        assert!(quote_ident(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("plain").unwrap(), "'plain'");
        assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
        assert_eq!(quote_literal(r"a\'; DROP").unwrap(), r"E'a\\''; DROP'");
        assert!(quote_literal("nul\0").is_err());
    }

    #[test]
    fn names_derive_from_the_key() {
        let names = TenantNames::for_key(&TenantKey::parse("acme-corp-1").unwrap());
        assert_eq!(names.schema, "tenant_acme_corp_1");
        assert_eq!(names.role, names.schema);
        let longest = TenantNames::for_key(&TenantKey::parse(&"a".repeat(40)).unwrap());
        assert!(quote_ident(&longest.database).is_ok());
    }
}
