//! SMTP delivery through lettre over pooled connections.
//!
//! lettre's own pooled transport opens its sockets without `TCP_NODELAY`;
//! SMTP's many small command/reply exchanges then meet Nagle's algorithm
//! and delayed ACKs, and a mail takes tens of milliseconds instead of about
//! one. So the connections here are lettre's [`AsyncSmtpConnection`]s over
//! sockets opened with `TCP_NODELAY`, kept in a small pool of idle
//! connections. Implicit TLS (`smtps://`) uses lettre's own socket.

use std::sync::Mutex;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain SMTP (`smtp://`), for local relays and capture servers.
    None,
    /// STARTTLS, required (`smtp://…?tls=starttls`).
    StartTls,
    /// Implicit TLS (`smtps://`).
    Tls,
}

#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub credentials: Option<(String, String)>,
    /// Connect and per-command timeout.
    pub timeout: Duration,
    /// Idle connections kept for reuse.
    pub pool_size: usize,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("timeout", &self.timeout)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Why an SMTP URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("not a URL: {0}")]
    NotAUrl(#[from] url::ParseError),
    #[error("scheme {0}:// is not smtp:// or smtps://")]
    Scheme(String),
    #[error("tls={tls} is not understood with {scheme}:// (use tls=starttls or tls=none)")]
    Tls { scheme: String, tls: String },
    #[error("no host")]
    NoHost,
}

impl SmtpSettings {
    /// Parses `smtp://[user:pass@]host[:port][?tls=starttls]` or
    /// `smtps://[user:pass@]host[:port]`.
    pub fn parse(url: &str) -> Result<Self, SmtpUrlError> {
        let url = url::Url::parse(url)?;
        let security = match (url.scheme(), url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned())) {
            ("smtps", None) => Security::Tls,
            ("smtp", None) => Security::None,
            ("smtp", Some(v)) if v == "starttls" => Security::StartTls,
            ("smtp", Some(v)) if v == "none" => Security::None,
            (scheme @ ("smtp" | "smtps"), Some(tls)) => {
                return Err(SmtpUrlError::Tls { scheme: scheme.to_owned(), tls });
            }
            (scheme, _) => return Err(SmtpUrlError::Scheme(scheme.to_owned())),
        };
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(SmtpUrlError::NoHost)?.to_owned();
        let port = url.port().unwrap_or(if security == Security::Tls { 465 } else { 587 });
        let credentials = (!url.username().is_empty()).then(|| {
            let decode = |s: &str| url::form_urlencoded::parse(s.as_bytes()).map(|(k, _)| k.into_owned()).collect();
            (decode(url.username()), decode(url.password().unwrap_or("")))
        });
        Ok(Self { host, port, security, credentials, timeout: Duration::from_secs(10), pool_size: 4 })
    }
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again: connection trouble, timeouts, 4xx replies.
    #[error("SMTP (transient): {0}")]
    Transient(String),
    /// The server refused the mail for good (5xx).
    #[error("SMTP (permanent): {0}")]
    Permanent(String),
}

impl SendError {
    fn from_lettre(error: &lettre::transport::smtp::Error) -> Self {
        if error.is_permanent() { Self::Permanent(error.to_string()) } else { Self::Transient(error.to_string()) }
    }
}

/// Sends mail over a pool of reused SMTP connections.
pub struct Mailer {
    settings: SmtpSettings,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|idle| idle.len()).unwrap_or(0);
        f.debug_struct("Mailer").field("settings", &self.settings).field("idle", &idle).finish()
    }
}

impl Mailer {
    pub fn new(settings: SmtpSettings) -> Self {
        Self { settings, hello: ClientId::Domain("landlord.localhost".into()), idle: Mutex::new(Vec::new()) }
    }

    /// Sends one message. A pooled connection the server has dropped in
    /// the meantime is replaced once.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or_default();
        let (mut connection, reused) = match pooled {
            Some(connection) => (connection, true),
            None => (self.connect().await?, false),
        };
        let mut outcome = connection.send(envelope, message).await;
        if reused && outcome.as_ref().is_err_and(|e| !e.is_permanent()) {
            connection = self.connect().await?;
            outcome = connection.send(envelope, message).await;
        }
        match outcome {
            Ok(_) => {
                self.release(connection);
                Ok(())
            }
            Err(error) => {
                let error = SendError::from_lettre(&error);
                if !connection.has_broken() {
                    self.release(connection);
                }
                Err(error)
            }
        }
    }

    fn release(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.settings.pool_size
        {
            idle.push(connection);
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let s = &self.settings;
        let tls =
            || TlsParameters::new(s.host.clone()).map_err(|e| SendError::Permanent(format!("TLS parameters: {e}")));
        let transient = |e: lettre::transport::smtp::Error| SendError::Transient(format!("{}:{}: {e}", s.host, s.port));
        let mut connection = if s.security == Security::Tls {
            AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                Some(s.timeout),
                &self.hello,
                Some(tls()?),
                None,
            )
            .await
            .map_err(transient)?
        } else {
            let stream = tokio::time::timeout(s.timeout, tokio::net::TcpStream::connect((s.host.as_str(), s.port)))
                .await
                .map_err(|_| SendError::Transient(format!("{}:{}: connect timed out", s.host, s.port)))?
                .map_err(|e| SendError::Transient(format!("{}:{}: {e}", s.host, s.port)))?;
            stream.set_nodelay(true).map_err(|e| SendError::Transient(format!("TCP_NODELAY: {e}")))?;
            let mut connection =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await.map_err(transient)?;
            if s.security == Security::StartTls {
                connection.starttls(tls()?, &self.hello).await.map_err(transient)?;
            }
            connection
        };
        if let Some((user, password)) = &s.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], &Credentials::new(user.clone(), password.clone()))
                .await
                .map_err(|e| SendError::from_lettre(&e))?;
        }
        Ok(connection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_security_and_credentials() {
        let s = SmtpSettings::parse("smtp://127.0.0.1:2525").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.security, s.credentials), ("127.0.0.1", 2525, Security::None, None));
        let s = SmtpSettings::parse("smtp://mailer:p%40ss@mail.example.com?tls=starttls").unwrap();
        assert_eq!((s.port, s.security), (587, Security::StartTls));
        assert_eq!(s.credentials, Some(("mailer".to_owned(), "p@ss".to_owned())));
        assert_eq!(SmtpSettings::parse("smtps://mail.example.com").unwrap().port, 465);
        assert_eq!(SmtpSettings::parse("http://x").unwrap_err(), SmtpUrlError::Scheme("http".into()));
        assert!(SmtpSettings::parse("smtp://x?tls=maybe").unwrap_err().to_string().contains("tls=maybe"));
        assert!(matches!(SmtpSettings::parse("not a url"), Err(SmtpUrlError::NotAUrl(_))));
    }
}
