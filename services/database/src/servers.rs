//! The tenant-data servers the worker places tenants on
//! (docs/tenant-data.md): `LANDLORD_TENANT_DATABASES`, a JSON list (inline,
//! or the path of a file holding it), or `LANDLORD_TENANT_DATABASE_URL`
//! alone, one server called `default` without a capacity.
//!
//! JSON because a server's URL may hold any of `, ; = @ : / ? &`: a list
//! separated by any of them would be ambiguous with some URL, a JSON string
//! never is.
//!
//! ```json
//! [{"name": "primary", "url": "postgres://landlord:…@pg1:5432/tenants", "capacity": 5000},
//!  {"name": "eu2", "url": "postgres://…@pg2:5432/tenants", "capacity": 5000, "drain": true,
//!   "public_host": "eu2.db.example.com", "public_port": 5432,
//!   "plans": ["enterprise"], "labels": {"region": "eu"}}]
//! ```

use std::collections::{BTreeMap, HashSet};

use landlord_runtime::{ConfigError, Env};
use serde_json::Value;

use crate::Settings;
use crate::settings::parse_url;

/// The list of servers.
pub const VAR: &str = "LANDLORD_TENANT_DATABASES";
/// The one server's variable, and the name its server gets.
pub const URL_VAR: &str = "LANDLORD_TENANT_DATABASE_URL";
pub const DEFAULT: &str = "default";

/// Which tenants a server is kept for: those whose plan is one of
/// `plans`, or who carry one of `labels`. A server with a pin takes only
/// the tenants it matches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pub plans: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl Pins {
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty() && self.labels.is_empty()
    }

    /// Whether a tenant of `plan` with `labels` is one this server is kept for.
    pub fn matches(&self, plan: &str, labels: &std::collections::HashMap<String, String>) -> bool {
        self.plans.iter().any(|p| p == plan) || self.labels.iter().any(|(k, v)| labels.get(k) == Some(v))
    }

    /// `plan enterprise, label region=eu`.
    pub fn describe(&self) -> String {
        let plans = self.plans.iter().map(|p| format!("plan {p}"));
        let labels = self.labels.iter().map(|(k, v)| format!("label {k}={v}"));
        plans.chain(labels).collect::<Vec<_>>().join(", ")
    }
}

/// One server: its settings (URL, public address, what all share) and
/// what placement reads.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub settings: Settings,
    /// How many tenants it takes; `None`: no limit.
    pub capacity: Option<u64>,
    /// Drained: no new tenants; its tenants are still served.
    pub drain: bool,
    pub pins: Pins,
}

impl ServerSettings {
    pub fn name(&self) -> &str {
        &self.settings.server
    }
}

/// The servers from the environment: `LANDLORD_TENANT_DATABASES`, else the
/// one `LANDLORD_TENANT_DATABASE_URL` names (not both).
pub fn from_env(env: &Env) -> Result<Vec<ServerSettings>, ConfigError> {
    let Some(list) = env.raw(VAR) else {
        let settings = Settings::from_env(env)?;
        return Ok(vec![ServerSettings { settings, capacity: None, drain: false, pins: Pins::default() }]);
    };
    let invalid = |value: &str, problem: String| ConfigError::Invalid { var: VAR.into(), value: value.into(), problem };
    if env.raw(URL_VAR).is_some() {
        return Err(invalid(
            "(hidden: may hold passwords)",
            format!("set either {VAR} or {URL_VAR}, not both (the single URL is the server \"{DEFAULT}\" of a list)"),
        ));
    }
    let trimmed = list.trim();
    let (text, shown) = if trimmed.starts_with('[') {
        (trimmed.to_owned(), "(hidden: may hold passwords)".to_owned())
    } else if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return Err(invalid(
            "(hidden: may hold a password)",
            format!(
                "expected a JSON list of servers or the path of a file holding one, not a URL (one server: {URL_VAR})"
            ),
        ));
    } else {
        let text = std::fs::read_to_string(trimmed)
            .map_err(|e| invalid(trimmed, format!("cannot read the list of servers: {e}")))?;
        (text, trimmed.to_owned())
    };
    parse(env, &text).map_err(|problem| invalid(&shown, problem))
}

/// The list in `text` (JSON); the problem names the server and the field.
pub fn parse(env: &Env, text: &str) -> Result<Vec<ServerSettings>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(entries) = value else { return Err("expected a JSON list of servers".into()) };
    if entries.is_empty() {
        return Err("the list of servers is empty".into());
    }
    let mut names = HashSet::new();
    let mut servers = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("server {}", i + 1);
        let server = one(env, entry).map_err(|problem| format!("{at}: {problem}"))?;
        if !names.insert(server.name().to_owned()) {
            return Err(format!("{at}: the name {:?} is used twice", server.name()));
        }
        servers.push(server);
    }
    Ok(servers)
}

const FIELDS: [&str; 8] = ["name", "url", "capacity", "drain", "public_host", "public_port", "plans", "labels"];

fn one(env: &Env, entry: &Value) -> Result<ServerSettings, String> {
    let Value::Object(fields) = entry else { return Err("expected an object with name, url and capacity".into()) };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field {unknown:?} (known: {})", FIELDS.join(", ")));
    }
    let text = |field: &str| -> Result<Option<&str>, String> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("{field} must be a string")),
        }
    };
    let name = text("name")?.ok_or("name is required")?;
    check_name(name).map_err(|problem| format!("name {name:?} {problem}"))?;
    let within = |problem: String| format!("{name:?}: {problem}");
    let url = text("url")?.ok_or_else(|| within("url is required".into()))?;
    let connect = parse_url(url).map_err(|problem| within(format!("url: {problem}")))?;
    let capacity = match fields.get("capacity") {
        Some(Value::Number(n)) => n.as_u64().filter(|c| *c > 0),
        None | Some(Value::Null) => return Err(within("capacity is required (the most tenants it takes)".into())),
        Some(_) => None,
    }
    .ok_or_else(|| within("capacity must be a whole number above 0".into()))?;
    let drain = match fields.get("drain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(within("drain must be true or false".into())),
    };
    let public_port = match fields.get("public_port") {
        None | Some(Value::Null) => connect.get_port(),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| within("public_port must be a port number (1-65535)".into()))?,
        Some(_) => return Err(within("public_port must be a number".into())),
    };
    let public_host = text("public_host").map_err(within)?.unwrap_or(connect.get_host()).to_owned();
    let plans = match fields.get("plans") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| p.as_str().filter(|p| !p.is_empty()).map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| within("plans must be a list of plan names".into()))?,
        Some(_) => return Err(within("plans must be a list of plan names".into())),
    };
    let labels = match fields.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(|| within("labels must map label names to strings".into()))?,
        Some(_) => return Err(within("labels must be an object of label names to strings".into())),
    };
    let settings =
        Settings::for_server(env, name, url, connect, public_host, public_port).map_err(|e| within(e.to_string()))?;
    Ok(ServerSettings { settings, capacity: Some(capacity), drain, pins: Pins { plans, labels } })
}

/// Names are what resources and readiness checks carry: lowercase letters,
/// digits, `-` and `_`, starting with a letter or digit, at most 63.
fn check_name(name: &str) -> Result<(), &'static str> {
    let fine = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if fine { Ok(()) } else { Err("must be 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let mut all = vec![("LANDLORD_SECRETS_KEY".to_owned(), "A".repeat(43) + "=")];
        all.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Env::from_pairs(all)
    }

    fn problem(list: &str) -> String {
        match from_env(&env(&[(VAR, list)])) {
            Err(ConfigError::Invalid { problem, .. }) => problem,
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[test]
    fn a_list_with_urls_full_of_separators_parses() {
        let list = r#"[{"name": "primary", "url": "postgres://u:p%2C%3B@h1:5433/t?sslmode=disable&application_name=x", "capacity": 5000},
                       {"name": "eu2", "url": "postgresql://u@h2/t", "capacity": 10, "drain": true,
                        "public_host": "eu2.example.com", "public_port": 6432,
                        "plans": ["enterprise"], "labels": {"region": "eu"}}]"#;
        let servers = from_env(&env(&[(VAR, list)])).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].name(), "primary");
        assert_eq!(servers[0].settings.connect.get_port(), 5433);
        assert_eq!(servers[0].settings.public_host, "h1");
        assert_eq!(servers[0].capacity, Some(5000));
        assert!(!servers[0].drain && servers[0].pins.is_empty());
        assert_eq!(servers[0].settings.password.as_ref().map(|p| p.expose().to_owned()).as_deref(), Some("p,;"));
        assert_eq!(
            (servers[1].settings.public_host.as_str(), servers[1].settings.public_port),
            ("eu2.example.com", 6432)
        );
        assert!(servers[1].drain);
        assert_eq!(servers[1].pins.describe(), "plan enterprise, label region=eu");
    }

    #[test]
    fn the_single_url_is_the_default_server() {
        let servers = from_env(&env(&[(URL_VAR, "postgres://u@h/t")])).unwrap();
        assert_eq!(servers.len(), 1);
        assert_eq!((servers[0].name(), servers[0].capacity, servers[0].drain), (DEFAULT, None, false));
    }

    #[test]
    fn mistakes_are_named() {
        let url = "postgres://u@h/t";
        assert_eq!(problem("[]"), "the list of servers is empty");
        assert!(problem("[{").starts_with("not JSON"));
        assert_eq!(
            problem(url),
            format!(
                "expected a JSON list of servers or the path of a file holding one, not a URL (one server: {URL_VAR})"
            )
        );
        assert_eq!(problem(r#"[{"url": "postgres://u@h/t", "capacity": 1}]"#), "server 1: name is required");
        assert_eq!(
            problem(r#"[{"name": "A", "url": "postgres://u@h/t", "capacity": 1}]"#),
            "server 1: name \"A\" must be 1-63 of a-z, 0-9, '-' and '_', starting with a letter or digit"
        );
        assert_eq!(problem(r#"[{"name": "a", "capacity": 1}]"#), "server 1: \"a\": url is required");
        assert_eq!(
            problem(r#"[{"name": "a", "url": "mysql://h/t", "capacity": 1}]"#),
            "server 1: \"a\": url: expected a postgres:// or postgresql:// URL"
        );
        assert_eq!(
            problem(r#"[{"name": "a", "url": "postgres://u@h/t"}]"#),
            "server 1: \"a\": capacity is required (the most tenants it takes)"
        );
        assert_eq!(
            problem(r#"[{"name": "a", "url": "postgres://u@h/t", "capacity": 0}]"#),
            "server 1: \"a\": capacity must be a whole number above 0"
        );
        assert_eq!(
            problem(r#"[{"name": "a", "url": "postgres://u@h/t", "capacity": 1, "drained": true}]"#),
            "server 1: unknown field \"drained\" (known: name, url, capacity, drain, public_host, public_port, plans, labels)"
        );
        assert_eq!(
            problem(
                r#"[{"name": "a", "url": "postgres://u@h/t", "capacity": 1}, {"name": "a", "url": "postgres://u@h/t", "capacity": 1}]"#
            ),
            "server 2: the name \"a\" is used twice"
        );
        assert!(problem("/nonexistent/servers.json").starts_with("cannot read the list of servers"));
        let both = from_env(&env(&[(VAR, "[]"), (URL_VAR, url)])).unwrap_err().to_string();
        assert!(both.contains("not both"), "{both}");
    }

    #[test]
    fn a_file_holds_the_list() {
        let path = std::env::temp_dir().join(format!("servers-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, r#"[{"name": "a", "url": "postgres://u@h/t", "capacity": 3}]"#).unwrap();
        let servers = from_env(&env(&[(VAR, path.to_str().unwrap())])).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!((servers[0].name(), servers[0].capacity), ("a", Some(3)));
    }
}
