//! The integrators' example, examples/python/request_tenant.py, run as a
//! Python team would: nats-py, and protobuf modules generated from proto/
//! with grpcio-tools (into a scratch folder, never committed). It asks for
//! a tenant over NATS only and must see it ACTIVE; the same request again
//! gets no reply, and the program still learns the outcome from the
//! stream's history.

use std::path::Path;

use anyhow::{Context as _, Result};
use landlord_e2e::Stack;
use landlord_testkit::{capture_python, scratch_dir, workspace_root};

/// Generates the Python protobuf modules for proto/landlord/v1 into `out`.
async fn generate_modules(python: &Path, out: &Path) -> Result<()> {
    let root = workspace_root();
    let protos: Vec<_> = std::fs::read_dir(root.join("proto/landlord/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    let output = tokio::process::Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(root.join("proto"))
        .arg(format!("--python_out={}", out.display()))
        .args(protos.iter().filter(|p| p.extension().is_some_and(|e| e == "proto")))
        .output()
        .await
        .context("running grpc_tools.protoc (deploy/install.sh installs grpcio-tools)")?;
    anyhow::ensure!(output.status.success(), "protoc failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok(())
}

/// Runs the example, unchanged, as a bus user: `nats.connect` given the
/// user's name, password and inbox prefix (`_INBOX_<user>`, the only inbox
/// its permissions let it subscribe under) before the example calls it.
/// The example connects without credentials, which a server with
/// deploy/nats/accounts.conf refuses; and its `js.subscribe` looks the
/// stream up by subject (`$JS.API.STREAM.NAMES`), which the platform user
/// may not — so it runs as the operator.
const AS_PLATFORM: &str = r#"
import functools, os, runpy, sys
import nats
user = os.environ.get("LANDLORD_NATS_USER")
if user:
    nats.connect = functools.partial(
        nats.connect, user=user, password=os.environ["LANDLORD_NATS_PASSWORD"], inbox_prefix=f"_INBOX_{user}")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"#;

/// Runs the example for `key` with `extra` arguments: (exit code, output).
async fn run_example(stack: &Stack, python: &Path, modules: &Path, key: &str, extra: &[&str]) -> Result<(i32, String)> {
    let output = tokio::process::Command::new(python)
        .args(["-c", AS_PLATFORM])
        .arg(workspace_root().join("examples/python/request_tenant.py"))
        .arg(key)
        .args(extra)
        .env("PYTHONPATH", modules)
        .envs(stack.nats_env(landlord_e2e::OPERATOR))
        .env("LANDLORD_NATS_URL", stack.nats_url())
        .env("LANDLORD_NAMESPACE", stack.namespace.root())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.code().unwrap_or(-1), text))
}

#[tokio::test]
async fn the_python_example_requests_a_tenant_over_nats_and_follows_it_to_active() -> Result<()> {
    let stack = Stack::start().await?;
    let python = capture_python()?;
    let modules = scratch_dir("python-pb")?;
    generate_modules(&python, &modules).await?;

    let idempotency = "python-example-1";
    // Generous: the whole suite shares two cores, and the bound only ends a
    // run that would otherwise hang.
    let args = ["--plan", "standard", "--idempotency-id", idempotency, "--timeout", "300"];
    let (code, text) = run_example(&stack, &python, &modules, "pyco", &args).await?;
    assert_eq!(code, 0, "{text}\n{}", stack.logs());
    for line in ["accepted", "step_succeeded", "activated", "outcome: ACTIVE"] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    assert!(text.contains("landlord.v1.TenantActivated"), "{text}");
    let (_, status) = stack.tenant("pyco").await?;
    assert_eq!(status, "ACTIVE");

    // The same request again: the orchestrator publishes nothing new, and
    // the program finds the outcome by replaying the key's events.
    let (code, again) = run_example(&stack, &python, &modules, "pyco", &args).await?;
    assert_eq!(code, 0, "{again}");
    assert!(again.contains("outcome: ACTIVE"), "{again}");

    // Another request for the taken key is rejected, on the key's subject.
    let (code, taken) =
        run_example(&stack, &python, &modules, "pyco", &["--idempotency-id", "python-example-2", "--timeout", "300"])
            .await?;
    assert_eq!(code, 1, "{taken}");
    assert!(taken.contains("outcome: REJECTED (tenant_key.duplicate)"), "{taken}");
    stack.assert_no_drift().await
}
