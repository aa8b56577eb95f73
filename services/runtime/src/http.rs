//! Outbound HTTP clients: plain HTTP and HTTPS over rustls with ring (the
//! crypto the rest of the tree already uses), certificates checked against
//! the system's trust store plus any roots in `LANDLORD_TLS_CA_FILE` (a
//! private CA, or the test CA).
//!
//! reqwest is built without a crypto provider of its own, so every client is
//! made here: [`client_builder`] installs ring as the process's provider
//! first. A `reqwest::Client::new()` elsewhere would panic; clippy refuses it
//! (`clippy.toml`).

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Env};

/// A PEM file of extra trust anchors for outbound HTTPS.
pub const CA_FILE_VAR: &str = "LANDLORD_TLS_CA_FILE";

/// Trust anchors added to the system's, read once at start.
#[derive(Clone, Default)]
pub struct ExtraRoots {
    file: Option<PathBuf>,
    certificates: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for ExtraRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            None => f.write_str("ExtraRoots(none)"),
            Some(file) => write!(f, "ExtraRoots({}: {} certificates)", file.display(), self.certificates.len()),
        }
    }
}

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a PEM bundle: {0}")]
    NotPem(#[source] reqwest::Error),
    #[error("no CERTIFICATE block in it")]
    NoCertificate,
}

impl ExtraRoots {
    /// The roots in [`CA_FILE_VAR`], none when it is unset; an unreadable
    /// file or one without a certificate stops start-up naming the variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env.raw(CA_FILE_VAR) {
            None => Ok(Self::default()),
            Some(file) => Self::from_pem_file(Path::new(file.trim())).map_err(|problem| ConfigError::Invalid {
                var: CA_FILE_VAR.into(),
                value: file,
                problem: problem.to_string(),
            }),
        }
    }

    /// Every certificate in a PEM bundle.
    pub fn from_pem_file(file: &Path) -> Result<Self, RootsError> {
        let pem = std::fs::read(file).map_err(|source| RootsError::Read { file: file.to_owned(), source })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(RootsError::NotPem)?;
        if certificates.is_empty() {
            return Err(RootsError::NoCertificate);
        }
        Ok(Self { file: Some(file.to_owned()), certificates })
    }
}

/// Makes ring the process's rustls crypto provider; idempotent. Called by
/// [`client_builder`] and before telemetry starts its exporter's client.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is the aim.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client builder for HTTP and HTTPS trusting the system's roots and
/// `roots`.
pub fn client_builder(roots: &ExtraRoots) -> reqwest::ClientBuilder {
    install_crypto_provider();
    #[allow(clippy::disallowed_methods)] // the one place clients are made
    let builder = reqwest::Client::builder();
    roots.certificates.iter().cloned().fold(builder, reqwest::ClientBuilder::add_root_certificate)
}

/// An error with its causes: reqwest's "error sending request" alone says
/// nothing, its sources say "connection refused" or "invalid peer
/// certificate: UnknownIssuer".
pub fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A client with the system's roots only, for tools and tests.
pub fn client() -> reqwest::Result<reqwest::Client> {
    client_builder(&ExtraRoots::default()).build()
}
