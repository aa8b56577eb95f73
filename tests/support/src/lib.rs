//! Test support for Landlord: real servers, started per test binary.
//!
//! - [`NatsServer`]: a throwaway `nats-server` with JetStream on a free port
//!   and a temporary store, which a test may stop, kill or restart;
//! - [`Postgres`]: a throwaway PostgreSQL cluster per test binary and a
//!   fresh database per test ([`Postgres::fresh_database`]);
//! - [`Process`]: a child process (a service binary) that dies with the
//!   test binary, with its output in a log file;
//! - [`OtlpReceiver`]: stands in for an OpenTelemetry collector;
//! - [`S3Server`]: a real S3-compatible server (s3s-fs) on a free port;
//! - [`SmtpCapture`]: a real SMTP server (aiosmtpd) that keeps every mail
//!   in a Maildir for tests to read;
//! - [`KeycloakDouble`]: a contract double of the Keycloak Admin REST API
//!   (Keycloak cannot be installed here);
//! - [`tls::TlsFront`]: HTTPS in front of a plain server, under a test CA;
//! - [`eventually`]: wait on a condition instead of sleeping;
//! - [`bench`]: percentiles, machine and versions for benchmark results;
//! - [`jwt`]: HS256 bearer tokens for the gateway;
//! - `browser` (feature `browser`): a headless Chromium over WebDriver.
//!
//! Server binaries come from the project-local toolchain that
//! `deploy/install.sh` sets up (`.stack/`), or from `LANDLORD_NATS_SERVER`
//! and `LANDLORD_PG_BIN`.

pub mod bench;
#[cfg(feature = "browser")]
pub mod browser;
pub mod jwt;
mod keycloak_double;
mod nats;
mod otlp;
mod postgres;
mod process;
mod s3;
mod smtp;
pub mod svix;
pub mod tls;

use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use keycloak_double::{
    ActionsEmail, KEYCLOAK_DOUBLE_ADMIN, KEYCLOAK_DOUBLE_CLIENT, KeycloakDouble, RecordedRequest,
};
pub use nats::{NatsCluster, NatsServer, follow_events, http_get, nats_server_binary};
pub use otlp::OtlpReceiver;
pub use postgres::{Postgres, TestDatabase, pg_bin_dir};
pub use process::{Process, scratch_dir};
pub use s3::{S3_ACCESS_KEY, S3_SECRET_KEY, S3Server, s3s_fs_binary};
pub use smtp::{CapturedMail, SmtpCapture, capture_python};

/// The workspace root (this crate lives in `tests/support`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$LANDLORD_HOME`, default `<workspace>/.stack`.
pub fn landlord_home() -> PathBuf {
    std::env::var_os("LANDLORD_HOME").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".stack"))
}

/// A namespace no other test uses, so tests can share one broker.
pub fn unique_namespace() -> landlord_contract::Namespace {
    let id = uuid::Uuid::new_v4().simple().to_string();
    // A fresh UUID always makes a valid namespace.
    landlord_contract::Namespace::new(&format!("t{}", &id[..12])).unwrap_or_default()
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Path of a binary of this workspace, built on first use if needed.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    // Test binaries live in target/<profile>/deps; workspace binaries one up.
    let dir = std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("cannot locate the target directory"))?;
    let path = dir.join(name);
    // For a working tree others are editing: test with the binaries built
    // already (`cargo build -p <crate> --bins` first) instead of building
    // the whole workspace, which someone's unfinished change may break.
    if std::env::var_os("LANDLORD_TEST_SKIP_BUILD").is_some() {
        anyhow::ensure!(path.exists(), "binary {} was not built (LANDLORD_TEST_SKIP_BUILD is set)", path.display());
        return Ok(path);
    }
    let built = BUILT.get_or_init(|| {
        let profile = if dir.ends_with("release") { vec!["--release"] } else { vec![] };
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // Variables cargo sets for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*)
        // would leak into build scripts that watch them and force rebuilds.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if (name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR") || name == "RUSTFLAGS"
            {
                cargo.env_remove(name.as_ref());
            }
        }
        // Under tests: the same targets `cargo test --workspace` builds, so
        // features unify the same way and nothing is rebuilt. Under a
        // release benchmark: the binaries only.
        let targets: &[&str] = if profile.is_empty() { &["--bins", "--tests"] } else { &["--bins"] };
        let status = cargo
            .args(["build", "--quiet", "--workspace"])
            .args(targets)
            .args(profile)
            .current_dir(workspace_root())
            .status();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("cargo build --bins failed: {s}")),
            Err(e) => Err(format!("cannot run cargo: {e}")),
        }
    });
    if let Err(error) = built {
        anyhow::bail!("{error}");
    }
    anyhow::ensure!(path.exists(), "binary {} was not built", path.display());
    Ok(path)
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with
/// `what` in the message. For waiting on a condition, never a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SHA-256 of `bytes`, lowercase hex (as export manifests write it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
