//! The deployable artifacts agree with the services (issue 28 item 5): every
//! variable the Kubernetes manifests set is one the service reads, every
//! variable a service requires is set, and every Deployment has its probes,
//! a non-root user and a PodDisruptionBudget. The manifests are parsed line
//! by line (they are plain Kubernetes YAML written in one style, which this
//! test also holds them to); no container engine or cluster is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The services deployed, each from `services/<name>` as `landlord-<name>`.
const SERVICES: [&str; 6] = ["orchestrator", "gateway", "idp", "database", "storage", "notification"];

/// Variables without which a service refuses to start: `env.required(..)`
/// or `Config::require_database` in its source. The test below also scans
/// the source for `required("…")` so a new required variable cannot be
/// missed here.
fn required(service: &str) -> &'static [&'static str] {
    match service {
        "orchestrator" => &["LANDLORD_DATABASE_URL"],
        "gateway" => &["LANDLORD_DATABASE_URL", "LANDLORD_JWT_SECRET"],
        "idp" => &["LANDLORD_KEYCLOAK_URL"],
        // AWS_SECRET_ACCESS_KEY: for exports to the archive bucket, required
        // together with AWS_ACCESS_KEY_ID, which the manifest sets.
        "database" => &["LANDLORD_TENANT_DATABASE_URL", "LANDLORD_SECRETS_KEY", "AWS_SECRET_ACCESS_KEY"],
        // Required only together with AWS_ACCESS_KEY_ID; the manifest sets both.
        "storage" => &["AWS_SECRET_ACCESS_KEY"],
        "notification" => &["LANDLORD_SMTP_URL"],
        _ => &[],
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Quoted environment variable names in a crate's source (`"LANDLORD_…"`,
/// `"AWS_…"`, `"OTEL_…"`), and those passed to `required(` on the same line.
fn variables_in(crate_dir: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut files = Vec::new();
    rust_files(&repo().join("services").join(crate_dir).join("src"), &mut files);
    let (mut read, mut required) = (BTreeSet::new(), BTreeSet::new());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for line in text.lines() {
            for quoted in line.split('"').skip(1).step_by(2) {
                let is_var = ["LANDLORD_", "AWS_", "OTEL_"].iter().any(|p| quoted.starts_with(p))
                    && quoted.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                if is_var {
                    read.insert(quoted.to_owned());
                    if line.contains(&format!("required(\"{quoted}\"")) {
                        required.insert(quoted.to_owned());
                    }
                }
            }
        }
    }
    (read, required)
}

/// One manifest: the environment variables of its container, and the lines
/// as written.
struct Manifest {
    env: BTreeMap<String, String>,
    text: String,
}

fn manifest(service: &str) -> Manifest {
    let path = repo().join(format!("deploy/kubernetes/{service}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut env = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim().strip_prefix("- name: ") else { continue };
        // An env entry: the next line is its value or its valueFrom.
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        if let Some(value) = next.strip_prefix("value: ") {
            env.insert(name.to_owned(), value.trim_matches('"').to_owned());
        } else if next == "valueFrom:" {
            env.insert(name.to_owned(), "(from a Secret)".to_owned());
        }
    }
    Manifest { env, text }
}

#[test]
fn every_variable_the_manifests_set_is_read_and_every_required_one_is_set() {
    let (runtime_reads, _) = variables_in("runtime");
    let mut problems = Vec::new();
    for service in SERVICES {
        let (mut reads, required_in_source) = variables_in(service);
        reads.extend(runtime_reads.iter().cloned());
        let manifest = manifest(service);
        assert!(!manifest.env.is_empty(), "{service}: no environment found in its manifest");
        for var in manifest.env.keys() {
            if !reads.contains(var) {
                problems.push(format!("{service}: the manifest sets {var}, which landlord-{service} never reads"));
            }
        }
        for var in required(service) {
            if !manifest.env.contains_key(*var) {
                problems.push(format!("{service}: requires {var}, which the manifest does not set"));
            }
            if !reads.contains(*var) {
                problems.push(format!("{service}: the test lists {var} as required, but the source never reads it"));
            }
        }
        for var in &required_in_source {
            if !required(service).contains(&var.as_str()) {
                problems.push(format!("{service}: the source requires {var}; add it to required() and the manifest"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_deployment_has_probes_a_non_root_user_and_a_disruption_budget() {
    let kustomization = std::fs::read_to_string(repo().join("deploy/kubernetes/kustomization.yaml")).unwrap();
    for service in SERVICES {
        let Manifest { text, .. } = manifest(service);
        assert!(kustomization.contains(&format!("- {service}.yaml")), "{service}.yaml is not in kustomization.yaml");
        for needle in [
            "kind: Deployment",
            &format!("command: [\"landlord-{service}\"]"),
            "httpGet: {path: /livez, port: health}",
            "httpGet: {path: /readyz, port: health}",
            "runAsNonRoot: true",
            "kind: PodDisruptionBudget",
            "resources:",
        ] {
            assert!(text.contains(needle), "{service}.yaml lacks {needle:?}");
        }
        // The health port is the one the runtime serves /livez and /readyz on.
        assert_eq!(
            manifest(service).env.get("LANDLORD_HTTP_ADDR").map(String::as_str),
            Some("0.0.0.0:9090"),
            "{service}: LANDLORD_HTTP_ADDR must match the containerPort named health"
        );
    }
    let dockerfile = std::fs::read_to_string(repo().join("deploy/container/Dockerfile")).unwrap();
    for service in SERVICES {
        assert!(dockerfile.contains(&format!("landlord-{service}")), "the image does not build landlord-{service}");
    }
    assert!(dockerfile.contains("USER 10001"), "the image runs as root");
}

#[test]
fn every_service_connects_to_nats_as_its_own_user_of_the_accounts_file() {
    let accounts = std::fs::read_to_string(repo().join("deploy/nats/accounts.conf")).unwrap();
    let values = std::fs::read_to_string(repo().join("deploy/kubernetes/nats-values.yaml")).unwrap();
    let secrets = std::fs::read_to_string(repo().join("deploy/kubernetes/secrets.example.yaml")).unwrap();
    for service in SERVICES {
        let manifest = manifest(service);
        assert_eq!(
            manifest.env.get("LANDLORD_NATS_USER").map(String::as_str),
            Some(service),
            "{service}: its bus user"
        );
        assert_eq!(
            manifest.env.get("LANDLORD_NATS_PASSWORD").map(String::as_str),
            Some("(from a Secret)"),
            "{service}: its bus password comes from a Secret"
        );
        assert!(accounts.contains(&format!("{{ user: {service}, ")), "{service} is not a user of accounts.conf");
        // The NATS servers read the same password from the same Secret.
        let var = format!("LANDLORD_NATS_PASSWORD_{}", service.to_ascii_uppercase());
        assert!(accounts.contains(&format!("${var}")), "accounts.conf does not read {var}");
        assert!(values.contains(&format!("{var}:")), "nats-values.yaml does not give the servers {var}");
        assert!(secrets.contains(&format!("  {service}: ")), "secrets.example.yaml has no password for {service}");
    }
}
