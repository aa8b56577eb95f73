//! The outside reference for the Keycloak double: Keycloak's official admin
//! client (`@keycloak/keycloak-admin-client`, pinned with its lock file in
//! `tests/support/keycloak-admin-client/`) drives the double through the
//! calls the idp worker makes; the script fails on any answer the client
//! does not accept. `npm ci` installs the pinned client into the test's
//! scratch directory (a few seconds; the npm registry must be reachable).

use std::path::Path;
use std::process::Stdio;

use super::helpers::*;

#[tokio::test]
async fn the_official_admin_client_accepts_the_doubles_answers() -> Result<()> {
    let double = double().await?;
    let source = landlord_testkit::workspace_root().join("tests/support/keycloak-admin-client");
    let dir = scratch_dir("keycloak-admin-client")?;
    for file in ["package.json", "package-lock.json", "check.mjs"] {
        std::fs::copy(source.join(file), dir.join(file)).with_context(|| format!("copying {file}"))?;
    }
    run_in(&dir, "npm", &["ci", "--no-audit", "--no-fund", "--loglevel=error"], &[]).await?;
    let env = [("KEYCLOAK_URL", double.url()), ("SHARED_REALM", SHARED_REALM.to_owned())];
    let output = run_in(&dir, "node", &["check.mjs"], &env).await?;
    assert!(output.contains("every call passed"), "{output}");
    // The script really went through the double.
    assert!(double.requests().iter().any(|r| r.method == "PUT" && r.path.contains("/organizations/")));
    assert!(double.requests().iter().any(|r| r.method == "POST" && r.path.ends_with("/logout-all")));
    Ok(())
}

/// Runs `program` in `dir` (off the runtime's threads); its output, or an
/// error with it.
async fn run_in(dir: &Path, program: &str, args: &[&str], env: &[(&str, String)]) -> Result<String> {
    let mut command = std::process::Command::new(program);
    command.args(args).current_dir(dir).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .with_context(|| format!("{program} could not be started (node and npm are needed)"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    anyhow::ensure!(output.status.success(), "{program} {} failed ({}): {text}", args.join(" "), output.status);
    Ok(text)
}
