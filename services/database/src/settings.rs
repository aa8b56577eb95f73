//! The database worker's settings, from the environment, and the pool
//! they open.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use landlord_runtime::{ConfigError, Env};

use crate::archive::ArchiveSettings;
use crate::secrets::{Password, SecretsKey};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};

/// How the tenant admin gets the database password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordDelivery {
    /// A sealed delivery copy for the welcome mail (crate docs).
    WelcomeEmail,
    /// Nothing is sent; the password stays in the durable store.
    None,
}

impl PasswordDelivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WelcomeEmail => "welcome-email",
            Self::None => "none",
        }
    }
}

/// The service's own settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The tenant-data server's name (`default` for
    /// `LANDLORD_TENANT_DATABASE_URL`; see [`crate::servers`]).
    pub server: String,
    pub connect: PgConnectOptions,
    pub pool_size: u32,
    pub timeout: Duration,
    pub connection_limit: i64,
    pub secrets_key: SecretsKey,
    /// Where tenants connect: `database.host` and `database.port`.
    pub public_host: String,
    pub public_port: u16,
    pub password_delivery: PasswordDelivery,
    /// Max age of the `<namespace>_secrets` bucket holding delivery copies.
    pub secrets_ttl: Duration,
    /// The password in `LANDLORD_TENANT_DATABASE_URL`, for `pg_dump`
    /// (handed over in its environment, never its arguments).
    pub password: Option<Password>,
    /// The URL's `sslrootcert`, for `pg_dump` (`PGSSLROOTCERT`): sqlx keeps
    /// it inside its options with no way to read it back.
    pub ssl_root_cert: Option<String>,
    /// `LANDLORD_PG_BIN`: the folder with `pg_dump` (else the newest
    /// `/usr/lib/postgresql/*/bin`, else `/usr/bin`).
    pub pg_bin: Option<PathBuf>,
    /// Where exports go.
    pub archive: ArchiveSettings,
}

impl Settings {
    /// The settings of the one tenant-data server `LANDLORD_TENANT_DATABASE_URL`
    /// names (called `default`). Several servers: [`crate::servers::from_env`].
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let var = "LANDLORD_TENANT_DATABASE_URL";
        let url = env
            .required(var, "the PostgreSQL that holds tenant data, e.g. postgres://postgres@127.0.0.1:15432/tenants")?;
        let connect = parse_url(&url).map_err(|problem| ConfigError::Invalid {
            var: var.into(),
            value: "(hidden: may hold a password)".into(),
            problem,
        })?;
        let public_port = u16::try_from(env.bounded(
            "LANDLORD_TENANT_DATABASE_PUBLIC_PORT",
            i64::from(connect.get_port()),
            1..=i64::from(u16::MAX),
        )?)
        .unwrap_or(connect.get_port());
        let public_host = env.string("LANDLORD_TENANT_DATABASE_PUBLIC_HOST", connect.get_host());
        Self::for_server(env, crate::servers::DEFAULT, &url, connect, public_host, public_port)
    }

    /// The settings of one server: its URL (already parsed into `connect`)
    /// and public address, and what every server shares from `env`.
    pub(crate) fn for_server(
        env: &Env,
        server: &str,
        url: &str,
        connect: PgConnectOptions,
        public_host: String,
        public_port: u16,
    ) -> Result<Self, ConfigError> {
        let key_var = "LANDLORD_SECRETS_KEY";
        let key = env.required(key_var, "base64 of 32 random bytes: openssl rand -base64 32")?;
        let secrets_key = SecretsKey::from_base64(&key).map_err(|problem| ConfigError::Invalid {
            var: key_var.into(),
            value: "(hidden)".into(),
            problem: problem.to_string(),
        })?;
        let password_delivery =
            env.parse_with("LANDLORD_DATABASE_PASSWORD_DELIVERY", PasswordDelivery::WelcomeEmail, |v| match v {
                "welcome-email" => Ok(PasswordDelivery::WelcomeEmail),
                "none" => Ok(PasswordDelivery::None),
                _ => Err("expected welcome-email or none".into()),
            })?;
        Ok(Self {
            server: server.to_owned(),
            public_host,
            public_port,
            connect,
            pool_size: u32::try_from(env.bounded("LANDLORD_TENANT_DATABASE_POOL_SIZE", 8, 1..=1000)?).unwrap_or(8),
            timeout: env.duration("LANDLORD_TENANT_DATABASE_TIMEOUT", Duration::from_secs(30))?,
            connection_limit: env.bounded("LANDLORD_TENANT_CONNECTION_LIMIT", 20, -1..=10_000)?,
            secrets_key,
            password_delivery,
            secrets_ttl: env.duration("LANDLORD_SECRETS_TTL", Duration::from_secs(7 * 24 * 3600))?,
            password: url_password(url).map(Password::from_plain),
            ssl_root_cert: url_query(url, "sslrootcert"),
            pg_bin: env.raw("LANDLORD_PG_BIN").filter(|d| !d.is_empty()).map(PathBuf::from),
            archive: ArchiveSettings::from_env(env)?,
        })
    }

    /// `pg_dump` of the PostgreSQL install (see [`Self::pg_bin`]).
    pub fn pg_dump(&self) -> PathBuf {
        if let Some(dir) = &self.pg_bin {
            return dir.join("pg_dump");
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("pg_dump").exists()).collect()
            })
            .unwrap_or_default();
        // Numeric order: 9.6 < 10 < 17.
        dirs.sort_by_key(|d| {
            d.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        });
        dirs.pop().map_or_else(|| PathBuf::from("/usr/bin/pg_dump"), |d| d.join("pg_dump"))
    }

    /// Connection options as the service uses them: statement timeout set,
    /// and no statement logging (defence in depth: statements carry SCRAM
    /// verifiers, never passwords).
    pub(crate) fn connect_options(&self) -> PgConnectOptions {
        let timeout_ms = self.timeout.as_millis().to_string();
        self.connect
            .clone()
            .application_name("landlord-database")
            .options([("statement_timeout", timeout_ms.as_str())])
            .disable_statement_logging()
    }
}

/// A tenant-data server's URL: `postgres://` or `postgresql://`, as sqlx
/// reads it.
pub(crate) fn parse_url(url: &str) -> Result<PgConnectOptions, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("expected a postgres:// or postgresql:// URL".into());
    }
    PgConnectOptions::from_str(url).map_err(|e| e.to_string())
}

/// The value of `name` in a URL's query (`?a=1&b=2`), percent-decoded.
fn url_query(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let value = query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?;
    percent_decode(value)
}

/// The password of a `postgres://user:password@host/…` URL, percent-decoded.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let encoded = userinfo.split_once(':')?.1;
    percent_decode(encoded)
}

fn percent_decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).ok()?);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The pool the service uses for the tenant-data database (lazy: a server
/// that is down makes commands fail as retryable, not the start).
pub fn open_pool(settings: &Settings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.pool_size)
        .acquire_timeout((settings.timeout / 6).max(Duration::from_secs(1)))
        .connect_lazy_with(settings.connect_options())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_comes_out_of_the_url_decoded() {
        assert_eq!(url_password("postgres://u:p%40ss%2Fw@h:5432/db").as_deref(), Some("p@ss/w"));
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("postgresql://u:x@y@h/db?sslmode=require").as_deref(), Some("x@y"));
        let url = "postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ssl/my%20ca.pem";
        assert_eq!(url_query(url, "sslrootcert").as_deref(), Some("/etc/ssl/my ca.pem"));
        assert_eq!(url_query(url, "sslmode").as_deref(), Some("verify-full"));
        assert_eq!(url_query("postgres://u@h/db", "sslrootcert"), None);
    }
}
