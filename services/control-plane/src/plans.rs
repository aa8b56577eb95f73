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

/// Bounds on a step's timing: a deadline is `now() + timeout` in
/// PostgreSQL, so a timeout of zero would re-drive a step at once, forever,
/// and one of centuries would overflow the timestamp.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// More attempts than this is a mistake, not a policy.
pub const MAX_ATTEMPTS: u32 = 1000;

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
            let d = humantime::parse_duration(v).map_err(|e| format!("{what}: {v:?} is not a duration ({e})"))?;
            if d > MAX_DURATION {
                return Err(format!("{what}: {v:?} is longer than {}", humantime::format_duration(MAX_DURATION)));
            }
            Ok(d)
        };
        let timeout = |what: &str, v: &str| {
            let d = duration(what, v)?;
            if d < Duration::from_millis(1) {
                return Err(format!("{what}: timeout {v:?} must be at least 1ms"));
            }
            Ok(d)
        };
        if file.defaults.max_attempts == 0 || file.defaults.max_attempts > MAX_ATTEMPTS {
            return Err(format!("defaults.max_attempts must be 1 to {MAX_ATTEMPTS}"));
        }
        let default_backoff =
            file.defaults.backoff.iter().map(|b| duration("defaults.backoff", b)).collect::<Result<Vec<_>, _>>()?;
        let default_timeout = timeout("defaults.timeout", &file.defaults.timeout)?;
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
                if max_attempts == 0 || max_attempts > MAX_ATTEMPTS {
                    return Err(format!("{at}: max_attempts must be 1 to {MAX_ATTEMPTS}"));
                }
                steps.push(StepSpec {
                    name: step.name.clone(),
                    service: service.to_owned(),
                    action: action.to_owned(),
                    compensation,
                    fatal: step.fatal,
                    timeout: match &step.timeout {
                        Some(t) => timeout(&at, t)?,
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

    #[test]
    fn timings_are_bounded() {
        let plan = |step: &str| {
            format!(
                "[plans.x]\ntier = \"bridge\"\npipeline = \"p\"\n[[pipelines.p]]\nname = \"a\"\ncommand = \"dns.create\"\n{step}\n"
            )
        };
        assert!(Plans::parse(&plan("timeout = \"0s\"")).unwrap_err().contains("at least 1ms"));
        assert!(Plans::parse(&plan("timeout = \"500years\"")).unwrap_err().contains("longer than"));
        assert!(Plans::parse(&plan("backoff = [\"1s\", \"900years\"]")).unwrap_err().contains("longer than"));
        assert!(Plans::parse(&plan("max_attempts = 4294967295")).unwrap_err().contains("max_attempts must be 1 to"));
        assert!(Plans::parse(&plan("max_attempts = 0")).unwrap_err().contains("max_attempts must be 1 to"));
        let defaults = "[defaults]\nmax_attempts = 0\n".to_owned() + &plan("");
        assert!(Plans::parse(&defaults).unwrap_err().contains("defaults.max_attempts"));
        assert!(Plans::parse(&plan("timeout = \"30days\"")).is_ok());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A plans file from arbitrary values in the right places.
        fn plans_file() -> impl Strategy<Value = String> {
            let value = || prop_oneof!["[a-z][a-z0-9_]{0,8}", "[a-z._ -]{0,12}", any::<String>()];
            let duration = || prop_oneof!["[0-9]{1,22}(ms|s|m|h|days|years)?", any::<String>()];
            (
                value(),
                prop_oneof![Just("bridge".to_owned()), Just("silo".to_owned()), value()],
                proptest::collection::vec(
                    (value(), value(), proptest::option::of(value()), proptest::option::of(duration()), any::<u32>()),
                    0..4,
                ),
                duration(),
                proptest::collection::vec(duration(), 0..3),
            )
                .prop_map(|(plan, tier, steps, default_timeout, backoff)| {
                    // A JSON string is a TOML basic string, once DEL is escaped too.
                    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default().replace('\u{7f}', "\\u007F");
                    let mut text = format!(
                        "[defaults]\ntimeout = {}\nbackoff = [{}]\n[plans.{}]\ntier = {}\npipeline = \"p\"\n",
                        quote(&default_timeout),
                        backoff.iter().map(|b| quote(b)).collect::<Vec<_>>().join(", "),
                        quote(&plan),
                        quote(&tier),
                    );
                    for (name, command, compensation, timeout, attempts) in steps {
                        text += &format!("[[pipelines.p]]\nname = {}\ncommand = {}\n", quote(&name), quote(&command));
                        if let Some(c) = compensation {
                            text += &format!("compensation = {}\n", quote(&c));
                        }
                        if let Some(t) = timeout {
                            text += &format!("timeout = {}\n", quote(&t));
                        }
                        text += &format!("max_attempts = {attempts}\n");
                    }
                    text
                })
        }

        proptest! {
            /// Arbitrary text: parsed or refused with a message, never a panic.
            #[test]
            fn prop_plans_parse_never_panics_on_any_text(text in prop_oneof![any::<String>(), "\\PC{0,200}", "[\\[\\]a-z=\". \n0-9]{0,200}"]) {
                if let Err(message) = Plans::parse(&text) {
                    prop_assert!(!message.is_empty());
                }
            }

            /// A plans file with arbitrary values: what is accepted is within
            /// every bound the saga relies on; a refusal says what is wrong.
            #[test]
            fn prop_plans_accept_only_what_the_saga_can_run(text in plans_file()) {
                match Plans::parse(&text) {
                    Ok(plans) => {
                        for plan in plans.plans.values() {
                            prop_assert!(!plan.steps.is_empty());
                            for step in &plan.steps {
                                prop_assert!(is_token(&step.name) && is_token(&step.service) && is_token(&step.action));
                                prop_assert!(step.timeout >= Duration::from_millis(1) && step.timeout <= MAX_DURATION);
                                prop_assert!(step.backoff.iter().all(|b| *b <= MAX_DURATION));
                                prop_assert!((1..=MAX_ATTEMPTS).contains(&step.max_attempts));
                            }
                        }
                    }
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }
        }
    }
}
