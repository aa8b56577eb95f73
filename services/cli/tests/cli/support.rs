//! Running the CLI against a stack: a clean environment (no LANDLORD_*
//! from the caller, a config home of its own), tokens minted by the
//! gateway's own `mint-token`, outputs decoded.

use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, Result};
use landlord_e2e::{GATEWAY, Stack};
use landlord_testkit::workspace_binary;
use serde_json::Value;

/// The stack with the gateway, and tokens for it.
pub struct Api {
    pub stack: Stack,
    pub url: String,
    /// tenants:read and tenants:write.
    pub token: String,
    /// tenants:read only.
    pub read_token: String,
    /// The CLI's config home (XDG_CONFIG_HOME).
    pub config: tempfile::TempDir,
}

impl Api {
    pub async fn start() -> Result<Self> {
        Self::start_with(Vec::new()).await
    }

    /// The shipped plans (deploy/plans.toml): every lifecycle pipeline.
    pub async fn start_with_shipped_plans() -> Result<Self> {
        let plans = landlord_testkit::workspace_root().join("deploy/plans.toml");
        Self::start_with(vec![("LANDLORD_PLANS".to_owned(), plans.display().to_string())]).await
    }

    /// With `overrides` of the stack's settings.
    pub async fn start_with(overrides: Vec<(String, String)>) -> Result<Self> {
        let mut stack = Stack::servers().await?;
        stack.overrides = overrides;
        stack.start_services().await?;
        stack.start_service(GATEWAY).await?;
        let token = mint(&stack, "tenants:read,tenants:write")?;
        let read_token = mint(&stack, "tenants:read")?;
        Ok(Self { url: stack.api_url(), stack, token, read_token, config: tempfile::tempdir()? })
    }

    /// `landlord --url … --token … <args>`.
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["--url", &self.url, "--token", &self.token];
        full.extend_from_slice(args);
        self.run_bare(&full, &[]).await
    }

    /// `landlord <args>` with only `env` (and the stack's NATS settings: its
    /// address, namespace, and the operator's bus user).
    pub async fn run_bare(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let mut vars: Vec<(String, String)> = self
            .stack
            .service_env()
            .into_iter()
            .filter(|(k, _)| k == "LANDLORD_NATS_URL" || k == "LANDLORD_NAMESPACE")
            .collect();
        vars.extend(self.stack.nats_env(landlord_e2e::OPERATOR));
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        landlord(args, &vars, self.config.path()).await
    }
}

/// Runs the binary with `args` and `env`, nothing inherited that would
/// choose an API or a context, its config home at `config`.
pub async fn landlord(args: &[&str], env: &[(String, String)], config: &Path) -> Result<Output> {
    let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_landlord"));
    for var in [
        "LANDLORD_URL",
        "LANDLORD_TOKEN",
        "LANDLORD_CONTEXT",
        "LANDLORD_NATS_URL",
        "LANDLORD_NAMESPACE",
        "LANDLORD_NATS_USER",
        "LANDLORD_NATS_PASSWORD",
    ] {
        command.env_remove(var);
    }
    command.env("XDG_CONFIG_HOME", config).env("HOME", config).args(args).envs(env.iter().cloned());
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    Ok(output)
}

fn mint(stack: &Stack, scopes: &str) -> Result<String> {
    let output = std::process::Command::new(workspace_binary("landlord-gateway")?)
        .args(["mint-token", "--scope", scopes, "--ttl", "1h", "--subject", "cli-tests"])
        .env("LANDLORD_JWT_SECRET", &stack.jwt_secret)
        .output()?;
    anyhow::ensure!(output.status.success(), "mint-token: {}", String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Both streams, for a failing assertion's message.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// stdout as one JSON document.
pub fn json(output: &Output) -> Result<Value> {
    serde_json::from_slice(&output.stdout).with_context(|| format!("stdout is not JSON:\n{}", text(output)))
}

/// stdout as JSON lines, every line one.
pub fn lines(output: &Output) -> Result<Vec<Value>> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("not a JSON line: {line:?}\n{}", text(output))))
        .collect()
}

/// Asserts the exit code, showing both streams when it is another.
#[track_caller]
pub fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(code(output), expected, "{}", text(output));
}
