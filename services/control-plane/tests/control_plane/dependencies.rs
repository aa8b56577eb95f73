//! Services talk over the bus and share the control plane through this
//! crate, never through each other's libraries: a service crate that
//! depends on another couples their releases and their schemas (issue 24).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Crates under `services/` that every service may use. Any other crate
/// there is a service, including ones added later.
const LIBRARIES: &[&str] = &["landlord-contract", "landlord-runtime", "landlord-control-plane"];

/// Service-to-service dependencies that are known and allowed, with why.
const ALLOWED: &[(&str, &str)] = &[
    // `landlord audit` runs the workers' drift checks (realms, databases,
    // buckets against the control plane) in the operator's terminal: the
    // CLI links those worker libraries rather than asking the running
    // workers. Until the audit moves behind the bus, this is deliberate.
    ("landlord-cli", "landlord-database"),
    ("landlord-cli", "landlord-idp"),
    ("landlord-cli", "landlord-storage"),
];

#[test]
fn no_service_crate_depends_on_another() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let services_dir = root.join("services").canonicalize().unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let services: BTreeSet<&str> = packages
        .iter()
        .filter(|p| Path::new(p["manifest_path"].as_str().unwrap()).starts_with(&services_dir))
        .map(|p| p["name"].as_str().unwrap())
        .filter(|name| !LIBRARIES.contains(name))
        .collect();
    for expected in ["landlord-orchestrator", "landlord-gateway", "landlord-idp", "landlord-database"] {
        assert!(services.contains(expected), "{expected} not found among {services:?}");
    }
    let mut found = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        if !services.contains(name) && name != "landlord-control-plane" {
            continue;
        }
        for dependency in package["dependencies"].as_array().unwrap() {
            // Dev-dependencies are test wiring, not what a service links:
            // the gateway's tests run an orchestrator in process, next to
            // the gateway, as the deployment runs them side by side.
            if dependency["kind"].as_str() == Some("dev") {
                continue;
            }
            let on = dependency["name"].as_str().unwrap();
            if services.contains(on) && !ALLOWED.contains(&(name, on)) {
                found.push(format!("{name} -> {on}"));
            }
        }
    }
    assert!(found.is_empty(), "service crates depending on service crates: {found:?}");
}

/// The allowances name real dependencies: one that was removed must go
/// from the list too, so the list never excuses more than exists.
#[test]
fn every_allowance_is_still_needed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for (from, on) in ALLOWED {
        let dir = from.trim_start_matches("landlord-");
        let manifest = std::fs::read_to_string(root.join("services").join(dir).join("Cargo.toml")).unwrap();
        assert!(manifest.contains(on), "{from} no longer depends on {on}: drop the allowance");
    }
}
