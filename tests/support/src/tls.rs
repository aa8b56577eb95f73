//! HTTPS in front of the tests' plain HTTP servers.
//!
//! [`TlsFront`] terminates TLS with a `localhost`/`127.0.0.1` certificate
//! issued by a test-only CA and forwards the bytes to an upstream address,
//! so a double or stub server is reached over `https://` exactly as a real
//! service would be. The CA ([`ca_file`]) is trusted by nothing but the tests
//! that pass it on (`LANDLORD_TLS_CA_FILE`).
//!
//! `fixtures/tls/` was made once with openssl (P-256, valid 100 years); the
//! CA's private key was thrown away, so nothing else can be issued under it:
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
//!   -days 36500 -subj "/CN=Landlord test CA (tests only)" \
//!   -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout localhost.key -out localhost.csr \
//!   -subj /CN=localhost
//! openssl x509 -req -in localhost.csr -CA ca.pem -CAkey ca.key -out localhost.pem -days 36500 -extfile ext.cnf
//! # ext.cnf: basicConstraints=critical,CA:FALSE, keyUsage=critical,digitalSignature,
//! #          extendedKeyUsage=serverAuth, subjectAltName=DNS:localhost,IP:127.0.0.1
//! ```
//!
//! `other-ca.pem` (a CA nothing here trusts), `client-ca.pem`, `client.pem`
//! (`extendedKeyUsage=clientAuth`) and `rogue-client.pem` (a client
//! certificate under `other-ca.pem`) were made the same way, their CAs'
//! keys thrown away too.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls")
}

/// The test CA's certificate (PEM): what a client must trust to reach a
/// [`TlsFront`].
pub fn ca_file() -> PathBuf {
    fixtures().join("ca.pem")
}

/// The `localhost`/`127.0.0.1` server certificate and its key (PEM), for
/// servers the tests start with TLS (nats-server, PostgreSQL).
pub fn server_cert() -> (PathBuf, PathBuf) {
    (fixtures().join("localhost.pem"), fixtures().join("localhost.key"))
}

/// A CA nothing was issued under that a test server uses: trusting only it,
/// a client must refuse every test server (`other-ca.pem`, made like
/// `ca.pem`, key thrown away).
pub fn other_ca_file() -> PathBuf {
    fixtures().join("other-ca.pem")
}

/// The CA of the tests' client certificates (`client-ca.pem`): what a server
/// that verifies its clients trusts.
pub fn client_ca_file() -> PathBuf {
    fixtures().join("client-ca.pem")
}

/// A client certificate (`extendedKeyUsage=clientAuth`, CN
/// `landlord-test-service`) under [`client_ca_file`] and its key.
pub fn client_cert() -> (PathBuf, PathBuf) {
    (fixtures().join("client.pem"), fixtures().join("client.key"))
}

/// A client certificate under [`other_ca_file`]: a server trusting
/// [`client_ca_file`] must refuse it.
pub fn rogue_client_cert() -> (PathBuf, PathBuf) {
    (fixtures().join("rogue-client.pem"), fixtures().join("rogue-client.key"))
}

/// A TLS listener on `127.0.0.1` forwarding every connection to a plain
/// HTTP server; stops when dropped.
#[derive(Debug)]
pub struct TlsFront {
    /// The upstream's URL with `https://127.0.0.1:<port>` (the address the
    /// certificate names) in front of its path.
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// In front of `http_url` (`http://127.0.0.1:<port>/path…`).
    pub async fn start(http_url: &str) -> anyhow::Result<Self> {
        let rest = http_url.strip_prefix("http://").context("an http:// URL")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let upstream: SocketAddr = authority.parse().context("an IP address and port")?;
        let certificates = CertificateDer::pem_file_iter(fixtures().join("localhost.pem"))
            .context("test certificate")?
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(fixtures().join("localhost.key")).context("test key")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certificates, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends its
                    // handshake here; nothing to forward then.
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Ok(Self { url: format!("https://{addr}{path}"), task })
    }
}
