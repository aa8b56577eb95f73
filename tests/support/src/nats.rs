//! A throwaway nats-server with JetStream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Process, scratch_dir, spawn_tied};

/// nats-server 2.10 or newer: from `LANDLORD_NATS_SERVER`, else the one
/// `deploy/install.sh` put under `$LANDLORD_HOME/venv/bin`.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LANDLORD_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = crate::landlord_home().join("venv/bin/nats-server");
    anyhow::ensure!(
        path.exists(),
        "nats-server not found at {} — run deploy/install.sh (or set LANDLORD_NATS_SERVER)",
        path.display()
    );
    Ok(path)
}

#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    dir: PathBuf,
    extra_args: Vec<String>,
    process: Option<Process>,
}

impl NatsServer {
    /// The server shared by the tests of this test binary, started on first
    /// use (tests keep apart through their own namespaces).
    pub async fn shared() -> &'static NatsServer {
        static SHARED: tokio::sync::OnceCell<NatsServer> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(|| async { NatsServer::start().await.unwrap_or_else(|e| panic!("{e:#}")) }).await
    }

    /// Starts a server on free ports with its store in a fresh temp dir.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Same, with extra command-line arguments (e.g. a config file).
    pub async fn start_with(extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut server = Self {
            port: crate::free_port(),
            monitor_port: crate::free_port(),
            dir: scratch_dir("nats")?,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            process: None,
        };
        server.launch().await?;
        Ok(server)
    }

    /// The bus users of `deploy/nats/accounts.conf`.
    pub const USERS: [&'static str; 8] =
        ["orchestrator", "gateway", "idp", "database", "storage", "notification", "operator", "platform"];

    /// `deploy/nats/accounts.conf` (written for the namespace `landlord`)
    /// with its names moved to `namespace` and each user's password
    /// variable replaced by [`Self::user_password`].
    pub fn accounts_conf(namespace: &landlord_contract::Namespace) -> anyhow::Result<String> {
        let path = crate::workspace_root().join("deploy/nats/accounts.conf");
        let mut text =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        for user in Self::USERS {
            let var = format!("$LANDLORD_NATS_PASSWORD_{}", user.to_ascii_uppercase());
            anyhow::ensure!(text.contains(&var), "{} has no user {user}", path.display());
            text = text.replace(&var, &format!("\"{}\"", Self::user_password(user)));
        }
        let root = namespace.root();
        Ok(text
            .replace("LANDLORD_", &format!("{}_", root.to_ascii_uppercase()))
            .replace("landlord.", &format!("{root}."))
            .replace("landlord_", &format!("{root}_")))
    }

    /// A server on free ports whose only users are those of
    /// `deploy/nats/accounts.conf`, for `namespace`: every client must
    /// authenticate, each user may do only what the file allows.
    pub async fn start_with_accounts(namespace: &landlord_contract::Namespace) -> anyhow::Result<Self> {
        let dir = scratch_dir("nats-accounts")?;
        let conf = dir.join("accounts.conf");
        std::fs::write(&conf, Self::accounts_conf(namespace)?)?;
        let conf = conf.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", conf.display()))?.to_owned();
        Self::start_with(&["-c", &conf]).await
    }

    /// The password of `user` on a server from [`Self::start_with_accounts`].
    pub fn user_password(user: &str) -> String {
        format!("pw-{user}")
    }

    /// The variables a service (or the CLI) connects as `user` with
    /// (the runtime derives its inbox prefix, `_INBOX_<user>`, from them).
    pub fn user_env(user: &str) -> Vec<(String, String)> {
        vec![
            ("LANDLORD_NATS_USER".to_owned(), user.to_owned()),
            ("LANDLORD_NATS_PASSWORD".to_owned(), Self::user_password(user)),
        ]
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let binary = nats_server_binary()?;
        let log = self.dir.join("nats.log");
        let out = std::fs::File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(&binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()])
            .args(["-js", "-sd"])
            .arg(self.store_dir())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(command).map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        self.process = Some(Process::from_child("nats-server", child, log));
        self.wait_healthy(Duration::from_secs(20)).await
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_get_ok(self.monitor_port, "/healthz?js-enabled-only=true") {
                return Ok(());
            }
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.try_status()
            {
                anyhow::bail!("nats-server exited ({}):\n{}", Process::describe(status), process.output());
            }
            if Instant::now() > deadline {
                anyhow::bail!("nats-server not healthy after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no chance to sync or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts again on the same ports with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    http_get(port, path).is_some_and(|(status, _)| status == 200)
}

/// A blocking HTTP/1.0 GET on 127.0.0.1: status and body, or `None` when
/// nothing answers. Enough for health and metrics endpoints.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Some((status, body))
}
