//! A throwaway PostgreSQL cluster per test binary, and a fresh database per
//! test.
//!
//! The cluster runs with `fsync=off` (test data only). PostgreSQL refuses
//! to run as root, so as root the server runs as the `postgres` user.
//!
//! Passwords are checked as in a deployment: TCP connections, the only
//! ones tests make, authenticate with `scram-sha-256` — the superuser
//! `postgres` too, with a password generated per cluster that
//! [`Postgres::url`] and [`Postgres::fresh_database`] put into the URLs
//! they hand out ([`Postgres::password`] for anything else). Only the
//! superuser's Unix socket (in the cluster's folder) is trusted. A tenant
//! role with a wrong password, or none, is refused — which is what makes
//! the passwords Landlord generates mean something in tests.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::process::{Process, is_root, scratch_dir, spawn_tied, user_ids};

/// Directory with `initdb` and `postgres`: `LANDLORD_PG_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LANDLORD_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().ok_or_else(|| {
        anyhow::anyhow!("PostgreSQL server binaries not found — run deploy/install.sh (or set LANDLORD_PG_BIN)")
    })
}

pub struct Postgres {
    port: u16,
    /// The superuser's password (random hex: safe in a URL as it is).
    password: String,
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    durable: bool,
    /// `ssl=on` with the test CA's `localhost` certificate.
    tls: bool,
    /// `None` while stopped.
    process: Option<Process>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("port", &self.port).field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What pg_hba.conf says: the superuser's socket is trusted, every TCP
/// connection (tests connect to 127.0.0.1 only) checks a SCRAM password.
const HBA: &str = "\
# landlord-testkit: the superuser over the Unix socket without a password;
# every TCP connection with a SCRAM-SHA-256 password.
local all postgres trust
host all all 127.0.0.1/32 scram-sha-256
";

/// A database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl Postgres {
    /// The cluster of this test binary, started on first use.
    pub fn shared() -> anyhow::Result<&'static Postgres> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Postgres::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Starts a new cluster for tests (blocking: initdb takes a second or
    /// two), with fsync off.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Starts a new cluster; `durable` keeps fsync and synchronous commit
    /// on, as a real deployment does (for benchmarks).
    pub fn start_with(durable: bool) -> anyhow::Result<Self> {
        Self::start_cluster(durable, false)
    }

    /// A cluster (fsync off) that also speaks TLS (`ssl=on`) with the test
    /// CA's `localhost` certificate ([`crate::tls::server_cert`]): clients
    /// reach it with [`Self::tls_url`]. Plain connections still work, as
    /// with a server whose `pg_hba.conf` has `host` lines.
    pub fn start_tls() -> anyhow::Result<Self> {
        Self::start_cluster(false, true)
    }

    fn start_cluster(durable: bool, tls: bool) -> anyhow::Result<Self> {
        let bin = pg_bin_dir()?;
        let dir = scratch_dir("pg")?;
        let data = dir.join("data");
        let run_as = if is_root() {
            let ids = user_ids("postgres").ok_or_else(|| {
                anyhow::anyhow!("running as root but there is no 'postgres' user to run PostgreSQL as")
            })?;
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1))?;
            Some(ids)
        } else {
            None
        };
        let as_user = |command: &mut Command| {
            if let Some((uid, gid)) = run_as {
                command.uid(uid).gid(gid);
            }
        };
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pwfile = dir.join("superuser.password");
        std::fs::write(&pwfile, &password)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile"])
            .arg(&pwfile)
            .args(["-E", "UTF8", "--no-sync", "--no-instructions"])
            .stdin(Stdio::null());
        as_user(&mut initdb);
        let output = initdb.output()?;
        std::fs::remove_file(&pwfile)?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, HBA)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&hba, Some(uid), Some(gid))?;
        }
        if tls {
            // PostgreSQL wants its key readable by its own user only.
            let (cert, key) = crate::tls::server_cert();
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(to);
                std::fs::copy(from, &to)?;
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
                }
            }
        }
        let mut postgres = Self { port: crate::free_port(), password, dir, bin, run_as, durable, tls, process: None };
        postgres.spawn()?;
        Ok(postgres)
    }

    /// Starts the server process on the cluster's port and waits until it
    /// accepts connections.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let (port, dir, data) = (self.port, self.dir.clone(), self.dir.join("data"));
        let log = dir.join("postgres.log");
        let out = std::fs::File::options().create(true).append(true).open(&log)?;
        let mut server = Command::new(self.bin.join("postgres"));
        server
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            .args(if self.tls { &["-c", "ssl=on"][..] } else { &[][..] })
            .args(if self.durable {
                &[][..]
            } else {
                &["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"][..]
            })
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // More settings for a look inside, e.g. `LANDLORD_TEST_PG_SETTINGS=
        // "shared_preload_libraries=pg_stat_statements"` when profiling a bench.
        for setting in std::env::var("LANDLORD_TEST_PG_SETTINGS").unwrap_or_default().split_whitespace() {
            server.args(["-c", setting]);
        }
        if let Some((uid, gid)) = self.run_as {
            server.uid(uid).gid(gid);
        }
        let child = spawn_tied(server)?;
        let mut process = Process::from_child("postgres", child, log);
        let admin_url = self.url("postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        loop {
            if runtime.block_on(async { sqlx::PgConnection::connect(&admin_url).await.is_ok() }) {
                break;
            }
            if let Some(status) = process.try_status() {
                anyhow::bail!("postgres exited ({}):\n{}", Process::describe(status), process.output());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres not accepting connections after 30s:\n{}",
                process.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server (fast shutdown: open sessions are ended) and waits
    /// for it to exit; its data stays. Blocking.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut process) = self.process.take() else { return Ok(()) };
        process.signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while process.try_status().is_none() {
            anyhow::ensure!(Instant::now() < deadline, "postgres did not stop within 30s:\n{}", process.output());
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts the stopped server again, on the same port and data. Blocking.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// URL of `database` as the superuser, with its password.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/{database}", self.password, self.port)
    }

    /// URL of `database` as the superuser over TLS, the server's
    /// certificate checked against `root` (PEM) and the name `localhost`:
    /// `sslmode=verify-full`, as libpq and sqlx read it.
    pub fn tls_url(&self, database: &str, root: &Path) -> String {
        format!(
            "postgres://postgres:{}@localhost:{}/{database}?sslmode=verify-full&sslrootcert={}",
            self.password,
            self.port,
            root.display()
        )
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Brings a new cluster's WAL to the state of one that has been running,
    /// for benchmarks: a new cluster creates each 16 MB WAL segment the first
    /// time it reaches it, zero-filling it inside some commit's flush (a
    /// 10 ms stall on this disk), while a running one reuses the segments
    /// its checkpoints freed. Writes `megabytes` of WAL, then checkpoints,
    /// which leaves them recycled as the next segments; returns how many
    /// segment files wait ahead of the insert position.
    pub async fn warm_wal(&self, megabytes: u32) -> anyhow::Result<i64> {
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        // About 1 kB of WAL per row.
        sqlx::query(
            "CREATE TABLE landlord_wal_warm_up AS SELECT g, repeat('w', 900) AS filler FROM generate_series(1, $1 * 1000) g",
        )
        .bind(i64::from(megabytes))
        .execute(&mut admin)
        .await?;
        sqlx::query("DROP TABLE landlord_wal_warm_up").execute(&mut admin).await?;
        sqlx::query("CHECKPOINT").execute(&mut admin).await?;
        let ahead = sqlx::query_scalar(
            "SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$' AND name > pg_walfile_name(pg_current_wal_insert_lsn())",
        )
        .fetch_one(&mut admin)
        .await?;
        Ok(ahead)
    }

    /// Creates an empty database with a unique name.
    pub async fn fresh_database(&self) -> anyhow::Result<TestDatabase> {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin).await?;
        Ok(TestDatabase { url: self.url(&name), name })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
