//! Named contexts in `$XDG_CONFIG_HOME/landlord/config.toml` (else
//! `~/.config/landlord/config.toml`):
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.prod]
//! url = "https://landlord.example.com"
//! token = "eyJ…"
//! nats_url = "nats://nats.example.com:4222"   # for the NATS verbs
//! namespace = "landlord"
//! ```
//!
//! The file holds tokens: it is written with mode 0600.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set: no place for the config file")]
    NoHome,
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid config file: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("no context {name:?} in {path} (known: {known})")]
    UnknownContext { name: String, path: PathBuf, known: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Where the config file is, from `XDG_CONFIG_HOME` or `HOME`.
pub fn path() -> Result<PathBuf, ConfigError> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")));
    Ok(base.ok_or(ConfigError::NoHome)?.join("landlord").join("config.toml"))
}

impl ConfigFile {
    /// The file at `path`; empty when there is none.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let write = |source| ConfigError::Write { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let text = toml::to_string(self).map_err(|e| write(std::io::Error::other(e)))?;
        // Written aside and renamed: a crash never leaves half a file.
        let partial = path.with_extension("toml.partial");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial).map_err(write)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(write)?;
        drop(file);
        std::fs::rename(&partial, path).map_err(write)
    }

    /// The context `name`, else the current one, else none.
    pub fn select(&self, name: Option<&str>, path: &Path) -> Result<Option<&Context>, ConfigError> {
        let Some(name) = name.or(self.current.as_deref()) else { return Ok(None) };
        match self.contexts.get(name) {
            Some(context) => Ok(Some(context)),
            None => Err(ConfigError::UnknownContext {
                name: name.to_owned(),
                path: path.to_owned(),
                known: if self.contexts.is_empty() {
                    "none".to_owned()
                } else {
                    self.contexts.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_an_unknown_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("landlord/config.toml");
        assert_eq!(ConfigFile::load(&path).unwrap(), ConfigFile::default());
        let mut file = ConfigFile::default();
        file.contexts.insert("prod".into(), Context { url: Some("https://x".into()), ..Default::default() });
        file.current = Some("prod".into());
        file.save(&path).unwrap();
        let back = ConfigFile::load(&path).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.select(None, &path).unwrap().and_then(|c| c.url.as_deref()), Some("https://x"));
        let unknown = back.select(Some("dev"), &path).unwrap_err().to_string();
        assert!(unknown.contains("\"dev\"") && unknown.contains("known: prod"), "{unknown}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
