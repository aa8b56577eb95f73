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

    /// A server that speaks only TLS, with the test CA's `localhost`
    /// certificate ([`crate::tls::server_cert`]); `verify_clients`: it also
    /// asks for a client certificate under [`crate::tls::client_ca_file`].
    /// Reach it at [`Self::tls_url`].
    pub async fn start_tls(verify_clients: bool) -> anyhow::Result<Self> {
        let (cert, key) = crate::tls::server_cert();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let client_ca = crate::tls::client_ca_file().display().to_string();
        let mut args = vec!["--tls", "--tlscert", &cert, "--tlskey", &key];
        if verify_clients {
            args.extend(["--tlsverify", "--tlscacert", &client_ca]);
        }
        Self::start_with(&args).await
    }

    /// The server's address with the `tls://` scheme.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
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

    /// The password of `user` on a server from [`Self::start_with_accounts`]:
    /// generated once per test process (random), so that no password is
    /// written in the repository or reused between runs.
    pub fn user_password(user: &str) -> String {
        static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let run = RUN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
        format!("{user}-{run}")
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

/// Three nats-servers on loopback routed into one JetStream cluster
/// (`landlord-test`), each with its own store, for streams with three
/// replicas. Nodes can be killed and restarted one at a time
/// ([`NatsServer::kill`], [`NatsServer::restart`] on [`Self::nodes`]).
#[derive(Debug)]
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
    /// Started with the bus users ([`Self::start_with_accounts`]).
    accounts: bool,
}

impl NatsCluster {
    /// Three nodes without users: anyone connects.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(None).await
    }

    /// Three nodes whose only users are those of `deploy/nats/accounts.conf`
    /// for `namespace` ([`NatsServer::accounts_conf`]), as one server of
    /// [`NatsServer::start_with_accounts`] has them.
    pub async fn start_with_accounts(namespace: &landlord_contract::Namespace) -> anyhow::Result<Self> {
        let conf = scratch_dir("nats-cluster-accounts")?.join("accounts.conf");
        std::fs::write(&conf, NatsServer::accounts_conf(namespace)?)?;
        let conf = conf.to_str().ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", conf.display()))?.to_owned();
        Self::start_on(Some(conf)).await
    }

    async fn start_on(conf: Option<String>) -> anyhow::Result<Self> {
        let cluster_ports: Vec<u16> = (0..3).map(|_| crate::free_port()).collect();
        let mut nodes = Vec::new();
        for (i, port) in cluster_ports.iter().enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|other| *other != port)
                .map(|other| format!("nats://127.0.0.1:{other}"))
                .collect();
            let mut args = conf.iter().flat_map(|c| ["-c".to_owned(), c.clone()]).collect::<Vec<_>>();
            args.extend([
                "--name".to_owned(),
                format!("node-{i}"),
                "--cluster_name".to_owned(),
                "landlord-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.join(","),
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(NatsServer::start_with(&args).await?);
        }
        let cluster = Self { nodes, accounts: conf.is_some() };
        cluster.wait_for_meta_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Whether only the bus users of `deploy/nats/accounts.conf` connect.
    pub fn has_accounts(&self) -> bool {
        self.accounts
    }

    /// Every node's client URL, comma-separated, as `LANDLORD_NATS_URL`
    /// takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until the running nodes agree on a JetStream meta leader: only
    /// then can streams be created.
    pub async fn wait_for_meta_leader(&self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            for node in self.nodes.iter().filter(|n| n.process.is_some()) {
                let leader = http_get(node.monitor_port, "/jsz").and_then(|(status, body)| {
                    let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
                    let leader = jsz["meta_cluster"]["leader"].as_str()?.to_owned();
                    (status == 200 && !leader.is_empty()).then_some(leader)
                });
                if let Some(leader) = leader {
                    return Ok(leader);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no JetStream meta leader after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Events of the events stream matching `filters` (subjects), from now on,
/// through an ordered pull consumer: how a client follows events when its
/// bus user may subscribe only under its own inbox (deploy/nats/accounts.conf
/// allows nobody a plain subscription on event subjects). Each item is a
/// message, or an error the consumer recovers from by itself.
pub async fn follow_events(
    broker: &landlord_runtime::Broker,
    filters: Vec<String>,
) -> anyhow::Result<async_nats::jetstream::consumer::pull::Ordered> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let name = broker.namespace.stream_name(landlord_contract::StreamKind::Events);
    let stream = broker.jetstream.get_stream(&name).await?;
    let (filter_subject, filter_subjects) = match filters.as_slice() {
        [one] => (one.clone(), Vec::new()),
        _ => (String::new(), filters),
    };
    let config =
        OrderedConfig { filter_subject, filter_subjects, deliver_policy: DeliverPolicy::New, ..Default::default() };
    Ok(stream.create_consumer(config).await?.messages().await?)
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
