//! Plans and pipelines, from a TOML file (`deploy/plans.toml`).
//!
//! A plan names a tier and a pipeline; a pipeline is the ordered list of
//! steps a saga runs. Steps name their command as `<service>.<action>`, so a
//! pipeline can include services outside this repository without code.

use std::collections::BTreeMap;
use std::time::Duration;

use landlord_contract::pb::Tier;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plans file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("plans file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

/// One step of a pipeline, as the saga runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    pub service: String,
    pub action: String,
    /// Action on the same service that undoes this step.
    pub compensation: Option<String>,
    pub fatal: bool,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Vec<Duration>,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub tier: Tier,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Default)]
pub struct Plans {
    plans: BTreeMap<String, Plan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    defaults: Defaults,
    plans: BTreeMap<String, PlanEntry>,
    pipelines: BTreeMap<String, Vec<StepEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff")]
    backoff: Vec<String>,
}

impl Default for Defaults {
    fn default() -> Self {
        Self { timeout: default_timeout(), max_attempts: default_attempts(), backoff: default_backoff() }
    }
}

fn default_timeout() -> String {
    "30s".into()
}

fn default_attempts() -> u32 {
    3
}

fn default_backoff() -> Vec<String> {
    vec!["2s".into(), "10s".into()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    tier: String,
    pipeline: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    name: String,
    command: String,
    compensation: Option<String>,
    #[serde(default = "yes")]
    fatal: bool,
    timeout: Option<String>,
    max_attempts: Option<u32>,
    backoff: Option<Vec<String>>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

pub fn parse_tier(tier: &str) -> Option<Tier> {
    match tier {
        "pooled" => Some(Tier::Pooled),
        "bridge" => Some(Tier::Bridge),
        "silo" => Some(Tier::Silo),
        _ => None,
    }
}

pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Pooled => "pooled",
        Tier::Silo => "silo",
        Tier::Bridge | Tier::Unspecified => "bridge",
    }
}

/// `[a-z][a-z0-9_]*`: safe as a subject token and readable.
fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Plans {
    pub fn load(path: &str) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| PlanError::Invalid { path: path.into(), message })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let duration = |what: &str, v: &str| {
            humantime::parse_duration(v).map_err(|e| format!("{what}: {v:?} is not a duration ({e})"))
        };
        let default_backoff =
            file.defaults.backoff.iter().map(|b| duration("defaults.backoff", b)).collect::<Result<Vec<_>, _>>()?;
        let default_timeout = duration("defaults.timeout", &file.defaults.timeout)?;
        let mut plans = BTreeMap::new();
        for (name, entry) in file.plans {
            let tier = parse_tier(&entry.tier)
                .ok_or_else(|| format!("plan {name}: tier {:?} is not pooled, bridge or silo", entry.tier))?;
            let pipeline = file
                .pipelines
                .get(&entry.pipeline)
                .ok_or_else(|| format!("plan {name}: no pipeline named {:?}", entry.pipeline))?;
            if pipeline.is_empty() {
                return Err(format!("pipeline {} has no steps", entry.pipeline));
            }
            let mut steps: Vec<StepSpec> = Vec::new();
            for step in pipeline {
                let at = format!("pipeline {} step {}", entry.pipeline, step.name);
                if !is_token(&step.name) || steps.iter().any(|s| s.name == step.name) {
                    return Err(format!("{at}: step names must be unique [a-z][a-z0-9_]* tokens"));
                }
                let (service, action) = step
                    .command
                    .split_once('.')
                    .filter(|(s, a)| is_token(s) && is_token(a))
                    .ok_or_else(|| format!("{at}: command {:?} must be <service>.<action>", step.command))?;
                let compensation = match &step.compensation {
                    None => None,
                    Some(c) => match c.split_once('.') {
                        Some((s, a)) if s == service && is_token(a) => Some(a.to_owned()),
                        _ => return Err(format!("{at}: compensation {c:?} must be {service}.<action>")),
                    },
                };
                let backoff = match &step.backoff {
                    Some(list) => list.iter().map(|b| duration(&at, b)).collect::<Result<Vec<_>, _>>()?,
                    None => default_backoff.clone(),
                };
                let max_attempts = step.max_attempts.unwrap_or(file.defaults.max_attempts);
                if max_attempts == 0 {
                    return Err(format!("{at}: max_attempts must be at least 1"));
                }
                steps.push(StepSpec {
                    name: step.name.clone(),
                    service: service.to_owned(),
                    action: action.to_owned(),
                    compensation,
                    fatal: step.fatal,
                    timeout: match &step.timeout {
                        Some(t) => duration(&at, t)?,
                        None => default_timeout,
                    },
                    max_attempts,
                    backoff,
                    params: step.params.clone(),
                });
            }
            plans.insert(name.clone(), Plan { name, tier, steps });
        }
        Ok(Self { plans })
    }

    pub fn get(&self, plan: &str) -> Option<&Plan> {
        self.plans.get(plan)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plans_parse() {
        let plans = Plans::parse(include_str!("../../../deploy/plans.toml")).unwrap();
        let standard = plans.get("standard").unwrap();
        assert_eq!(standard.tier, Tier::Bridge);
        let names: Vec<_> = standard.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["idp_realm", "idp_client", "idp_admin_user", "database", "storage", "welcome_email"]);
        assert!(!standard.steps[5].fatal);
        assert_eq!(standard.steps[3].timeout, Duration::from_secs(60));
        assert_eq!(standard.steps[0].compensation.as_deref(), Some("delete_realm"));
        assert_eq!(plans.get("enterprise").unwrap().tier, Tier::Silo);
        assert_eq!(plans.get("free").unwrap().tier, Tier::Pooled);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = r#"
            [plans.x]
            tier = "bridge"
            pipeline = "p"
            [[pipelines.p]]
            name = "a"
            command = "dns.create"
            compensation = "other.delete"
        "#;
        let err = Plans::parse(bad).unwrap_err();
        assert!(err.contains("compensation \"other.delete\" must be dns.<action>"), "{err}");
        let bad = bad.replace("other.delete", "dns.delete").replace("bridge", "gold");
        assert!(Plans::parse(&bad).unwrap_err().contains("tier \"gold\""));
    }
}
