//! Who a service is on the bus: the credentials it connects to NATS with
//! and the inbox prefix its replies come back on.
//!
//! One of three ways, read from the environment (none set: no
//! authentication, as against a plain local nats-server):
//!
//! - `LANDLORD_NATS_CREDS`: the path of a `.creds` file (a user JWT and its
//!   nkey seed, as `nsc` writes them), for a server in operator mode;
//! - `LANDLORD_NATS_NKEY_SEED`: a user nkey seed (`SU…`), given as the path
//!   of a file holding it (preferred: a value in the environment shows in
//!   `/proc/<pid>/environ`) or as the seed itself;
//! - `LANDLORD_NATS_USER` and `LANDLORD_NATS_PASSWORD`.
//!
//! TLS (docs/deploy.md): a `tls://` URL, or any of the variables below,
//! makes the connection require TLS; the server's certificate is checked
//! against the system's roots, or against `LANDLORD_NATS_CA_FILE` (PEM) when
//! set — a private CA. `LANDLORD_NATS_CERT_FILE` and `LANDLORD_NATS_KEY_FILE`
//! (both or neither) present a client certificate, for a server that
//! verifies its clients (`verify: true`).
//!
//! `LANDLORD_NATS_INBOX_PREFIX` sets the subject prefix of the
//! connection's reply inboxes (default `_INBOX_<user>` with a user and
//! password, else `_INBOX`). Each user of `deploy/nats/accounts.conf` may
//! subscribe only under its own prefix, so no service reads the replies
//! another one gets (a key-value read of a sealed secret comes back on an
//! inbox).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Env};

pub const CREDS_VAR: &str = "LANDLORD_NATS_CREDS";
pub const NKEY_SEED_VAR: &str = "LANDLORD_NATS_NKEY_SEED";
pub const USER_VAR: &str = "LANDLORD_NATS_USER";
pub const PASSWORD_VAR: &str = "LANDLORD_NATS_PASSWORD";
pub const INBOX_PREFIX_VAR: &str = "LANDLORD_NATS_INBOX_PREFIX";
pub const CA_FILE_VAR: &str = "LANDLORD_NATS_CA_FILE";
pub const CERT_FILE_VAR: &str = "LANDLORD_NATS_CERT_FILE";
pub const KEY_FILE_VAR: &str = "LANDLORD_NATS_KEY_FILE";

/// TLS settings of the connection beyond what the URL's scheme says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM certificates trusted for the server's certificate instead of the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl NatsTls {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let file = |var: &str| env.raw(var).map(|path| readable_file(var, path.trim())).transpose();
        let ca_file = file(CA_FILE_VAR)?;
        let client_cert = match (file(CERT_FILE_VAR)?, file(KEY_FILE_VAR)?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: KEY_FILE_VAR.to_owned(),
                    hint: "LANDLORD_NATS_CERT_FILE is set: the key of that certificate is needed too",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: CERT_FILE_VAR.to_owned(),
                    hint: "LANDLORD_NATS_KEY_FILE is set: the certificate it belongs to is needed too",
                });
            }
        };
        Ok(Self { ca_file, client_cert })
    }

    fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.client_cert.is_some()
    }
}

/// How the connection authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    None,
    /// A `.creds` file: user JWT and nkey seed.
    CredsFile(PathBuf),
    /// A user nkey seed (`SU…`).
    NkeySeed(String),
    UserPassword {
        user: String,
        password: String,
    },
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::CredsFile(path) => f.debug_tuple("CredsFile").field(path).finish(),
            Self::NkeySeed(_) => f.write_str("NkeySeed(<hidden>)"),
            Self::UserPassword { user, .. } => {
                f.debug_struct("UserPassword").field("user", user).field("password", &"<hidden>").finish()
            }
        }
    }
}

/// The credentials and inbox prefix of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAuth {
    pub credentials: NatsCredentials,
    pub inbox_prefix: String,
    pub tls: NatsTls,
}

impl Default for NatsAuth {
    fn default() -> Self {
        Self { credentials: NatsCredentials::None, inbox_prefix: "_INBOX".to_owned(), tls: NatsTls::default() }
    }
}

fn invalid(var: &str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var: var.to_owned(), value: value.to_owned(), problem: problem.into() }
}

/// A user seed as nats-server's nkeys encode it: base32 (RFC 4648, no
/// padding) of prefix, 32 bytes and a CRC-16, 58 characters starting `SU`.
fn check_seed(seed: &str) -> Result<(), String> {
    let base32 = seed.chars().all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c));
    if seed.len() == 58 && seed.starts_with("SU") && base32 {
        Ok(())
    } else {
        Err("expected a user nkey seed (58 characters starting with SU) or the path of a file holding one".into())
    }
}

fn readable_file(var: &str, path: &str) -> Result<PathBuf, ConfigError> {
    let file = Path::new(path);
    match std::fs::metadata(file) {
        Ok(meta) if meta.is_file() => Ok(file.to_path_buf()),
        Ok(_) => Err(invalid(var, path, format!("{path} is not a file"))),
        Err(e) => Err(invalid(var, path, format!("cannot read {path}: {e}"))),
    }
}

impl NatsAuth {
    /// Reads and checks the variables above; a file that is named must
    /// exist, secrets never appear in an error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let creds = env.raw(CREDS_VAR);
        let seed = env.raw(NKEY_SEED_VAR);
        let user = env.raw(USER_VAR);
        let password = env.raw(PASSWORD_VAR);
        let chosen: Vec<&str> =
            [(CREDS_VAR, creds.is_some()), (NKEY_SEED_VAR, seed.is_some()), (USER_VAR, user.is_some())]
                .into_iter()
                .filter_map(|(var, set)| set.then_some(var))
                .collect();
        if chosen.len() > 1 {
            return Err(invalid(
                chosen[1],
                "(hidden)",
                format!("set only one way to authenticate to NATS, not {}", chosen.join(" and ")),
            ));
        }
        let credentials = match (creds, seed, user, password) {
            (Some(path), ..) => NatsCredentials::CredsFile(readable_file(CREDS_VAR, path.trim())?),
            (_, Some(value), ..) => {
                let value = value.trim();
                if value.starts_with("SU") && !value.contains('/') {
                    check_seed(value).map_err(|problem| invalid(NKEY_SEED_VAR, "(hidden: a seed)", problem))?;
                    NatsCredentials::NkeySeed(value.to_owned())
                } else {
                    let path = readable_file(NKEY_SEED_VAR, value)?;
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| invalid(NKEY_SEED_VAR, value, format!("cannot read {value}: {e}")))?;
                    let seed = text.trim();
                    check_seed(seed).map_err(|_| {
                        invalid(NKEY_SEED_VAR, value, format!("{value} does not hold a user nkey seed (SU…)"))
                    })?;
                    NatsCredentials::NkeySeed(seed.to_owned())
                }
            }
            (_, _, Some(user), Some(password)) => {
                NatsCredentials::UserPassword { user: user.trim().to_owned(), password }
            }
            (_, _, Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: PASSWORD_VAR.to_owned(),
                    hint: "LANDLORD_NATS_USER is set: its password is needed too",
                });
            }
            (_, _, None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: USER_VAR.to_owned(),
                    hint: "LANDLORD_NATS_PASSWORD is set: the user it belongs to is needed too",
                });
            }
            (None, None, None, None) => NatsCredentials::None,
        };
        let default_prefix = match &credentials {
            NatsCredentials::UserPassword { user, .. } => format!("_INBOX_{user}"),
            _ => "_INBOX".to_owned(),
        };
        let inbox_prefix = env.parse_with(INBOX_PREFIX_VAR, default_prefix, |v| {
            let ok = v
                .split('.')
                .all(|token| !token.is_empty() && !token.contains(['*', '>']) && !token.contains(char::is_whitespace));
            if ok {
                Ok(v.to_owned())
            } else {
                Err("expected subject tokens without wildcards, e.g. _INBOX_storage".into())
            }
        })?;
        Ok(Self { credentials, inbox_prefix, tls: NatsTls::from_env(env)? })
    }

    /// Connection options carrying these credentials and inbox prefix.
    pub async fn options(&self) -> Result<async_nats::ConnectOptions, AuthError> {
        let mut options = async_nats::ConnectOptions::new().custom_inbox_prefix(&self.inbox_prefix);
        if self.tls.is_set() {
            options = options.require_tls(true);
        }
        if let Some(ca_file) = &self.tls.ca_file {
            options = options.add_root_certificates(ca_file.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(match &self.credentials {
            NatsCredentials::None => options,
            NatsCredentials::CredsFile(path) => options
                .credentials_file(path)
                .await
                .map_err(|source| AuthError::Creds { path: path.clone(), source })?,
            NatsCredentials::NkeySeed(seed) => options.nkey(seed.clone()),
            NatsCredentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot use the NATS credentials file {} (LANDLORD_NATS_CREDS): {source}", path.display())]
    Creds { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(pairs: &[(&str, &str)]) -> Result<NatsAuth, ConfigError> {
        NatsAuth::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    const SEED: &str = "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU";

    #[test]
    fn nothing_set_means_no_authentication() {
        assert_eq!(auth(&[]).unwrap(), NatsAuth::default());
    }

    #[test]
    fn user_and_password_with_the_users_inbox() {
        let a = auth(&[(USER_VAR, "storage"), (PASSWORD_VAR, "pw")]).unwrap();
        assert_eq!(a.credentials, NatsCredentials::UserPassword { user: "storage".into(), password: "pw".into() });
        assert_eq!(a.inbox_prefix, "_INBOX_storage");
        assert!(!format!("{a:?}").contains("pw"), "the password is not printed");
        let a = auth(&[(USER_VAR, "s"), (PASSWORD_VAR, "pw"), (INBOX_PREFIX_VAR, "_I.s")]).unwrap();
        assert_eq!(a.inbox_prefix, "_I.s");
        let err = auth(&[(USER_VAR, "s")]).unwrap_err();
        assert!(err.to_string().starts_with("LANDLORD_NATS_PASSWORD is required"), "{err}");
        let err = auth(&[(PASSWORD_VAR, "pw")]).unwrap_err();
        assert!(err.to_string().starts_with("LANDLORD_NATS_USER is required"), "{err}");
        let err = auth(&[(INBOX_PREFIX_VAR, "_INBOX.>")]).unwrap_err();
        assert!(err.to_string().starts_with("LANDLORD_NATS_INBOX_PREFIX"), "{err}");
    }

    #[test]
    fn a_missing_creds_file_is_named() {
        let err = auth(&[(CREDS_VAR, "/nonexistent/storage.creds")]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("LANDLORD_NATS_CREDS=\"/nonexistent/storage.creds\" is invalid"), "{text}");
        assert!(text.contains("cannot read /nonexistent/storage.creds"), "{text}");
    }

    #[test]
    fn a_seed_as_value_or_file() {
        let a = auth(&[(NKEY_SEED_VAR, SEED)]).unwrap();
        assert_eq!(a.credentials, NatsCredentials::NkeySeed(SEED.into()));
        assert!(!format!("{a:?}").contains(SEED));
        let dir = std::env::temp_dir().join(format!("landlord-nkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("user.nk");
        std::fs::write(&file, format!("{SEED}\n")).unwrap();
        let a = auth(&[(NKEY_SEED_VAR, file.to_str().unwrap())]).unwrap();
        assert_eq!(a.credentials, NatsCredentials::NkeySeed(SEED.into()));
        std::fs::write(&file, "not a seed").unwrap();
        let err = auth(&[(NKEY_SEED_VAR, file.to_str().unwrap())]).unwrap_err();
        assert!(err.to_string().contains("does not hold a user nkey seed"), "{err}");
        let err = auth(&[(NKEY_SEED_VAR, "SUshort")]).unwrap_err();
        assert!(!err.to_string().contains("SUshort"), "a seed is never printed: {err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn only_one_way_at_a_time() {
        let err = auth(&[(NKEY_SEED_VAR, SEED), (USER_VAR, "u"), (PASSWORD_VAR, "p")]).unwrap_err();
        assert!(err.to_string().contains("set only one way"), "{err}");
        assert!(!err.to_string().contains(SEED));
    }
}
