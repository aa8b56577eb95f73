//! Versioned seed SQL: a tenant's default data (`services/database/seeds/`,
//! described in its README). Files are compiled in, so a running service
//! applies exactly the seeds it was built and tested with.

/// A seed file with what its header promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    pub name: &'static str,
    pub version: u32,
    pub sql: &'static str,
    /// Tables that must exist afterwards.
    pub tables: Vec<&'static str>,
    /// Rows the tenant must have afterwards, per table.
    pub rows: Vec<(&'static str, i64)>,
}

/// Why a seed cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedError {
    #[error("no seed {spec:?} (known: {known})")]
    Unknown { spec: String, known: String },
    #[error("seed {0:?}: version must be a number")]
    BadVersion(String),
    #[error("{seed}: bad verify-rows entry {entry:?}")]
    BadHeader { seed: String, entry: String },
}

const FILES: &[(&str, u32, &str)] = &[
    ("default", 1, include_str!("../seeds/default/v1.sql")),
    ("empty", 1, include_str!("../seeds/empty/v1.sql")),
    ("pooled", 1, include_str!("../seeds/pooled/v1.sql")),
];

impl Seed {
    fn from_file(name: &'static str, version: u32, sql: &'static str) -> Result<Self, SeedError> {
        let header = |tag: &str| sql.lines().find_map(|l| l.strip_prefix(tag)).map(str::trim);
        let tables = header("-- verify-tables:").unwrap_or_default().split_whitespace().collect();
        let rows = header("-- verify-rows:")
            .unwrap_or_default()
            .split_whitespace()
            .map(|pair| {
                let bad = || SeedError::BadHeader { seed: format!("{name}@{version}"), entry: pair.to_owned() };
                let (table, n) = pair.split_once('=').ok_or_else(bad)?;
                Ok((table, n.parse().map_err(|_| bad())?))
            })
            .collect::<Result<_, SeedError>>()?;
        Ok(Self { name, version, sql, tables, rows })
    }

    /// Picks `default` or `default@2` (newest version when none is given).
    pub fn find(spec: &str) -> Result<Self, SeedError> {
        let (name, version) = match spec.split_once('@') {
            Some((name, v)) => {
                let v = v.trim_start_matches('v');
                (name, Some(v.parse::<u32>().map_err(|_| SeedError::BadVersion(spec.to_owned()))?))
            }
            None => (spec, None),
        };
        let candidates = FILES.iter().filter(|(n, v, _)| *n == name && version.is_none_or(|want| want == *v));
        let (name, version, sql) = candidates
            .max_by_key(|(_, v, _)| *v)
            .ok_or_else(|| SeedError::Unknown { spec: spec.to_owned(), known: Self::known() })?;
        Self::from_file(name, *version, sql)
    }

    fn known() -> String {
        FILES.iter().map(|(n, v, _)| format!("{n}@{v}")).collect::<Vec<_>>().join(", ")
    }

    /// `default@1`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// SHA-256 of the file, hex: recorded with the tenant's objects.
    pub fn checksum(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.sql.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_parses_and_names_resolve() {
        for (name, version, _) in FILES {
            Seed::find(&format!("{name}@{version}")).unwrap();
        }
        let default = Seed::find("default").unwrap();
        assert_eq!(default.tables.len(), 10);
        assert_eq!(default.rows, vec![("roles", 3), ("settings", 3)]);
        assert_eq!(default.label(), "default@1");
        assert_eq!(default.checksum().len(), 64);
        assert!(Seed::find("default@9").unwrap_err().to_string().contains("known: default@1"));
        assert!(matches!(Seed::find("nope"), Err(SeedError::Unknown { .. })));
        assert_eq!(Seed::find("default@x"), Err(SeedError::BadVersion("default@x".into())));
    }
}
