//! A throwaway S3-compatible server: s3s-fs, installed into `.stack/bin` by
//! `deploy/install.sh`, storing buckets as folders in a temp dir. Path-style
//! addressing; no tagging, policies or versioning.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{Process, scratch_dir};

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
    /// The server shared by the tests of this test binary, started on first
    /// use. Tests that share it must keep apart through their own bucket
    /// names; tests that kill it or count buckets start their own.
    pub async fn shared() -> &'static S3Server {
        static SHARED: tokio::sync::OnceCell<S3Server> = tokio::sync::OnceCell::const_new();
        SHARED.get_or_init(|| async { S3Server::start().await.unwrap_or_else(|e| panic!("{e:#}")) }).await
    }

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
        let mut command = Command::new(s3s_fs_binary()?);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(self.data_dir());
        self.process = Some(Process::start_listening("s3s-fs", command, self.port, self.dir.join("s3.log")).await?);
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
