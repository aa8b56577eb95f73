//! A throwaway S3-compatible server: s3s-fs, installed into `.stack/bin` by
//! `deploy/install.sh`, storing buckets as folders in a temp dir. Path-style
//! addressing; no tagging, policies or versioning.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Process, scratch_dir, spawn_tied};

pub const S3_ACCESS_KEY: &str = "landlord-test";
pub const S3_SECRET_KEY: &str = "landlord-test-secret";

/// s3s-fs: `LANDLORD_S3S_FS`, else `.stack/bin/s3s-fs`.
pub fn s3s_fs_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LANDLORD_S3S_FS") {
        return Ok(PathBuf::from(path));
    }
    let path = crate::landlord_home().join("bin/s3s-fs");
    anyhow::ensure!(path.exists(), "s3s-fs not found at {} — run deploy/install.sh", path.display());
    Ok(path)
}

#[derive(Debug)]
pub struct S3Server {
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl S3Server {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = scratch_dir("s3")?;
        std::fs::create_dir_all(dir.join("data"))?;
        let mut server = Self { port: crate::free_port(), dir, process: None };
        server.launch().await?;
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the server keeps buckets (one folder each).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let binary = s3s_fs_binary()?;
        let log = self.dir.join("s3.log");
        let out = std::fs::File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(&binary);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(command).map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let mut process = Process::from_child("s3s-fs", child, log);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = process.try_status() {
                anyhow::bail!("s3s-fs exited ({}):\n{}", Process::describe(status), process.output());
            }
            anyhow::ensure!(Instant::now() < deadline, "s3s-fs not listening after 20s:\n{}", process.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL: the port refuses connections until [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts again on the same port with the same data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
