//! Plans and pipelines, from a TOML file (`deploy/plans.toml`).
//!
//! A plan names a tier and its provisioning pipeline; a pipeline is the
//! ordered list of steps a saga runs. Steps name their command as
//! `<service>.<action>`, so a pipeline can include services outside this
//! repository without code. Every other operation (suspend, purge, ...)
//! runs the pipeline `[plans.X.operations]` names for it, else the one
//! `[operations]` names, else the pipeline named like the operation
//! (docs/lifecycle.md).

use std::collections::BTreeMap;
use std::time::Duration;

use landlord_contract::pb::Tier;
use serde::Deserialize;

use crate::Operation;

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
    /// Attempts before the step fails; 0: retried until it succeeds (the
    /// purge's steps: a purge is never compensated).
    pub max_attempts: u32,
    pub backoff: Vec<Duration>,
    pub params: BTreeMap<String, String>,
    /// The steps of the same pipeline this one starts after (its
    /// prerequisites, by name). A pipeline that names no `after` at all
    /// runs in file order: each step after the one before it.
    pub after: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub tier: Tier,
    /// The provisioning pipeline's steps.
    pub steps: Vec<StepSpec>,
    /// The steps of every other operation that has a pipeline.
    pub operations: BTreeMap<Operation, Vec<StepSpec>>,
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
    /// Operation -> pipeline, for every plan without its own choice.
    #[serde(default)]
    operations: BTreeMap<String, String>,
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
    /// Operation -> pipeline, for this plan only.
    #[serde(default)]
    operations: BTreeMap<String, String>,
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
    after: Option<Vec<String>>,
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

/// The operations after provisioning: each runs a pipeline of its own.
const LIFECYCLE: &[Operation] = &[
    Operation::Suspend,
    Operation::Resume,
    Operation::Update,
    Operation::Offboard,
    Operation::Restore,
    Operation::Export,
    Operation::Purge,
];

/// `[a-z][a-z0-9_]*`: safe as a subject token and readable.
fn is_token(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Fills each step's `after` and checks the graph of pipeline `pipeline`:
/// without any `after` in the file, each step comes after the one before
/// it (the order of the file, as before graphs); with some, a step without
/// `after` starts at once. Refused: a step named in `after` that is not in
/// the pipeline (or is the step itself), a cycle, and a step with a
/// compensation that names a non-fatal step in `after` — a non-fatal step
/// that failed counts as done for its dependents, so the dependent (and
/// later its compensation) would run on a step that is missing.
fn graph(pipeline: &str, entries: &[StepEntry], steps: &mut [StepSpec]) -> Result<(), String> {
    if entries.iter().all(|e| e.after.is_none()) {
        for i in 1..steps.len() {
            steps[i].after = vec![steps[i - 1].name.clone()];
        }
        return Ok(());
    }
    for (i, entry) in entries.iter().enumerate() {
        let mut after: Vec<String> = Vec::new();
        for name in entry.after.iter().flatten() {
            let at = format!("pipeline {pipeline} step {}", entry.name);
            let Some(prerequisite) = steps.iter().find(|s| s.name == *name) else {
                return Err(format!("{at}: after names {name:?}, which is not a step of pipeline {pipeline}"));
            };
            if *name == entry.name {
                return Err(format!("{at}: a step cannot come after itself"));
            }
            if steps[i].compensation.is_some() && !prerequisite.fatal {
                return Err(format!(
                    "{at}: its compensation would depend on a missing step: it comes after {name:?}, which is \
                     not fatal (a failure of it counts as done), yet it has a compensation"
                ));
            }
            if !after.contains(name) {
                after.push(name.clone());
            }
        }
        steps[i].after = after;
    }
    // Kahn: whatever cannot be ordered is on a cycle, or after one.
    let mut done: Vec<bool> = vec![false; steps.len()];
    loop {
        let ready: Vec<usize> = (0..steps.len())
            .filter(|&i| {
                !done[i] && steps[i].after.iter().all(|a| steps.iter().zip(&done).any(|(s, d)| *d && s.name == *a))
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            done[i] = true;
        }
    }
    let left: Vec<&str> = steps.iter().zip(&done).filter(|(_, d)| !**d).map(|(s, _)| s.name.as_str()).collect();
    if !left.is_empty() {
        return Err(format!(
            "pipeline {pipeline}: the steps {} wait for each other (a cycle in after)",
            left.join(", ")
        ));
    }
    Ok(())
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
        let mut pipelines: BTreeMap<&str, Vec<StepSpec>> = BTreeMap::new();
        for (name, entries) in &file.pipelines {
            if entries.is_empty() {
                return Err(format!("pipeline {name} has no steps"));
            }
            let mut steps: Vec<StepSpec> = Vec::new();
            for step in entries {
                let at = format!("pipeline {name} step {}", step.name);
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
                // 0 only where a step says so: a default of "forever" would
                // keep every saga from ever compensating.
                let max_attempts = step.max_attempts.unwrap_or(file.defaults.max_attempts);
                if max_attempts > MAX_ATTEMPTS {
                    return Err(format!("{at}: max_attempts must be 1 to {MAX_ATTEMPTS}, or 0 (until it succeeds)"));
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
                    after: Vec::new(),
                });
            }
            graph(name, entries, &mut steps)?;
            pipelines.insert(name, steps);
        }
        let chosen = |at: &str, table: &BTreeMap<String, String>| {
            let mut chosen = BTreeMap::new();
            for (operation, pipeline) in table {
                let operation =
                    operation.parse::<Operation>().ok().filter(|o| *o != Operation::Provision).ok_or_else(|| {
                        let known: Vec<&str> = LIFECYCLE.iter().map(|o| o.as_str()).collect();
                        format!("{at}: {operation:?} is not an operation (one of: {})", known.join(", "))
                    })?;
                if !pipelines.contains_key(pipeline.as_str()) {
                    return Err(format!("{at}: {operation} names no pipeline: there is no pipeline {pipeline:?}"));
                }
                chosen.insert(operation, pipeline.clone());
            }
            Ok(chosen)
        };
        let common = chosen("[operations]", &file.operations)?;
        let mut plans = BTreeMap::new();
        for (name, entry) in &file.plans {
            let tier = parse_tier(&entry.tier)
                .ok_or_else(|| format!("plan {name}: tier {:?} is not pooled, bridge or silo", entry.tier))?;
            let steps = pipelines
                .get(entry.pipeline.as_str())
                .ok_or_else(|| format!("plan {name}: no pipeline named {:?}", entry.pipeline))?
                .clone();
            let own = chosen(&format!("[plans.{name}.operations]"), &entry.operations)?;
            let mut operations = BTreeMap::new();
            for &operation in LIFECYCLE {
                let pipeline =
                    own.get(&operation).or_else(|| common.get(&operation)).map_or(operation.as_str(), String::as_str);
                if let Some(steps) = pipelines.get(pipeline) {
                    operations.insert(operation, steps.clone());
                }
            }
            plans.insert(name.clone(), Plan { name: name.clone(), tier, steps, operations });
        }
        Ok(Self { plans })
    }

    pub fn get(&self, plan: &str) -> Option<&Plan> {
        self.plans.get(plan)
    }

    /// The steps `operation` runs for a tenant of `plan` (provision: the
    /// plan's pipeline; others: its `[plans.<plan>.operations]` choice,
    /// else `[operations]`, else the pipeline named like the operation).
    /// `None`: unknown plan, or no pipeline for the operation.
    pub fn steps(&self, plan: &str, operation: Operation) -> Option<&[StepSpec]> {
        let plan = self.plans.get(plan)?;
        match operation {
            Operation::Provision => Some(&plan.steps),
            other => plan.operations.get(&other).map(Vec::as_slice),
        }
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
        let after: Vec<Vec<&str>> =
            standard.steps.iter().map(|s| s.after.iter().map(String::as_str).collect()).collect();
        // idp realm → client → admin user, beside the database and the
        // storage; the welcome mail after all of them.
        let all: Vec<&str> = vec!["idp_admin_user", "database", "storage"];
        let expected: Vec<Vec<&str>> = vec![vec![], vec!["idp_realm"], vec!["idp_client"], vec![], vec![], all];
        assert_eq!(after, expected);
        assert!(!standard.steps[5].fatal);
        assert_eq!(standard.steps[3].timeout, Duration::from_secs(60));
        assert_eq!(standard.steps[0].compensation.as_deref(), Some("delete_realm"));
        assert_eq!(plans.get("enterprise").unwrap().tier, Tier::Silo);
        assert_eq!(plans.get("free").unwrap().tier, Tier::Pooled);
    }

    fn step_names(plans: &Plans, plan: &str, operation: Operation) -> Vec<String> {
        plans.steps(plan, operation).unwrap().iter().map(|s| format!("{}.{}", s.service, s.action)).collect()
    }

    /// The defaults are docs/lifecycle.md's table, for every plan.
    #[test]
    fn the_shipped_plans_have_the_documented_lifecycle_pipelines() {
        let plans = Plans::parse(include_str!("../../../deploy/plans.toml")).unwrap();
        let suspend = ["idp.suspend", "database.suspend", "storage.suspend", "notification.send_suspended"];
        let resume = ["idp.resume", "database.resume", "storage.resume", "notification.send_resumed"];
        let export = ["database.export", "storage.export"];
        for plan in ["free", "standard", "enterprise"] {
            assert_eq!(step_names(&plans, plan, Operation::Suspend), suspend);
            assert_eq!(step_names(&plans, plan, Operation::Resume), resume);
            assert_eq!(step_names(&plans, plan, Operation::Restore), resume, "restore runs the resume steps");
            assert_eq!(step_names(&plans, plan, Operation::Update), ["idp.update"]);
            let offboard = [&suspend[..3], &export, &["notification.send_deletion_scheduled"]].concat();
            assert_eq!(step_names(&plans, plan, Operation::Offboard), offboard);
            assert_eq!(step_names(&plans, plan, Operation::Export), export);
            assert_eq!(
                step_names(&plans, plan, Operation::Purge),
                ["idp.purge", "database.purge", "storage.purge", "notification.send_deleted"]
            );
            assert_eq!(plans.steps(plan, Operation::Provision).unwrap(), &plans.get(plan).unwrap().steps[..]);
        }
        let steps = |operation| plans.steps("standard", operation).unwrap();
        let compensations: Vec<_> = steps(Operation::Suspend).iter().map(|s| s.compensation.as_deref()).collect();
        assert_eq!(compensations, [Some("resume"), Some("resume"), Some("resume"), None]);
        let compensations: Vec<_> = steps(Operation::Resume).iter().map(|s| s.compensation.as_deref()).collect();
        assert_eq!(compensations, [Some("suspend"), Some("suspend"), Some("suspend"), None]);
        assert_eq!(steps(Operation::Update)[0].compensation.as_deref(), Some("update"));
        for operation in [Operation::Suspend, Operation::Resume, Operation::Offboard, Operation::Purge] {
            let mail = steps(operation).last().unwrap();
            assert_eq!((mail.service.as_str(), mail.fatal), ("notification", false), "{operation}");
            assert!(steps(operation)[..steps(operation).len() - 1].iter().all(|s| s.fatal), "{operation}");
        }
        for step in &steps(Operation::Purge)[..3] {
            assert_eq!(step.max_attempts, 0, "{}: retried until it succeeds", step.name);
            assert_eq!(step.compensation, None);
            assert_eq!(step.backoff.last(), Some(&Duration::from_secs(30)), "{}", step.name);
        }
        assert!(steps(Operation::Offboard).iter().all(|s| s.action != "export" || s.compensation.is_none()));
    }

    #[test]
    fn an_operation_runs_the_plans_choice_else_the_common_one_else_its_namesake() {
        let text = r#"
            [operations]
            suspend = "lock"
            [plans.a]
            tier = "bridge"
            pipeline = "p"
            [plans.a.operations]
            suspend = "lock_and_bill"
            [plans.b]
            tier = "silo"
            pipeline = "p"
            [[pipelines.p]]
            name = "one"
            command = "idp.create_realm"
            [[pipelines.lock]]
            name = "lock"
            command = "idp.suspend"
            [[pipelines.lock_and_bill]]
            name = "lock"
            command = "idp.suspend"
            [[pipelines.lock_and_bill]]
            name = "bill"
            command = "billing.pause"
            [[pipelines.resume]]
            name = "unlock"
            command = "idp.resume"
        "#;
        let plans = Plans::parse(text).unwrap();
        assert_eq!(step_names(&plans, "a", Operation::Suspend), ["idp.suspend", "billing.pause"]);
        assert_eq!(step_names(&plans, "b", Operation::Suspend), ["idp.suspend"]);
        assert_eq!(step_names(&plans, "a", Operation::Resume), ["idp.resume"]);
        assert_eq!(step_names(&plans, "b", Operation::Provision), ["idp.create_realm"]);
        assert!(plans.steps("a", Operation::Purge).is_none(), "no pipeline: the operation is refused");
        assert!(plans.steps("nope", Operation::Suspend).is_none());
    }

    #[test]
    fn operation_tables_naming_unknown_things_are_refused_at_load() {
        let file = |table: &str| {
            format!(
                "{table}\n[plans.x]\ntier = \"bridge\"\npipeline = \"p\"\n[[pipelines.p]]\nname = \"a\"\ncommand = \"dns.create\"\n"
            )
        };
        let err = Plans::parse(&file("[operations]\nsuspnd = \"p\"")).unwrap_err();
        assert!(err.contains(r#"[operations]: "suspnd" is not an operation (one of: suspend, resume"#), "{err}");
        let err = Plans::parse(&file("[operations]\nprovision = \"p\"")).unwrap_err();
        assert!(err.contains(r#""provision" is not an operation"#), "{err}");
        let err = Plans::parse(&file("[operations]\npurge = \"wipe\"")).unwrap_err();
        assert!(err.contains(r#"[operations]: purge names no pipeline: there is no pipeline "wipe""#), "{err}");
        let own = file("").replace("pipeline = \"p\"\n", "pipeline = \"p\"\noperations = { resume = \"back\" }\n");
        let err = Plans::parse(&own).unwrap_err();
        assert!(
            err.contains(r#"[plans.x.operations]: resume names no pipeline: there is no pipeline "back""#),
            "{err}"
        );
        let err = Plans::parse(&(file("") + "[pipelines]\nempty = []\n")).unwrap_err();
        assert!(err.contains("pipeline empty has no steps"), "{err}");
    }

    fn pipeline(steps: &str) -> Result<Plans, String> {
        Plans::parse(&format!("[plans.x]\ntier = \"bridge\"\npipeline = \"p\"\n{steps}"))
    }

    fn afters(plans: &Plans) -> Vec<(String, Vec<String>)> {
        plans.get("x").unwrap().steps.iter().map(|s| (s.name.clone(), s.after.clone())).collect()
    }

    #[test]
    fn a_pipeline_without_after_runs_in_file_order() {
        let plans = pipeline(
            "[[pipelines.p]]\nname = \"a\"\ncommand = \"dns.a\"\n[[pipelines.p]]\nname = \"b\"\ncommand = \"dns.b\"\n\
             [[pipelines.p]]\nname = \"c\"\ncommand = \"dns.c\"\n",
        )
        .unwrap();
        let expected: Vec<(String, Vec<String>)> =
            vec![("a".into(), vec![]), ("b".into(), vec!["a".into()]), ("c".into(), vec!["b".into()])];
        assert_eq!(afters(&plans), expected);
    }

    #[test]
    fn a_pipeline_with_after_is_a_graph_and_its_mistakes_are_named() {
        let step = |name: &str, extra: &str| {
            format!("[[pipelines.p]]\nname = \"{name}\"\ncommand = \"dns.{name}\"\n{extra}\n")
        };
        let plans = pipeline(&(step("a", "") + &step("b", "") + &step("c", "after = [\"a\", \"b\", \"a\"]"))).unwrap();
        let expected: Vec<(String, Vec<String>)> =
            vec![("a".into(), vec![]), ("b".into(), vec![]), ("c".into(), vec!["a".into(), "b".into()])];
        assert_eq!(afters(&plans), expected, "a step without after starts at once; duplicates count once");

        let err = pipeline(&(step("a", "") + &step("b", "after = [\"nope\"]"))).unwrap_err();
        assert!(err.contains("pipeline p step b: after names \"nope\", which is not a step of pipeline p"), "{err}");
        let err = pipeline(&(step("a", "after = [\"a\"]"))).unwrap_err();
        assert!(err.contains("pipeline p step a: a step cannot come after itself"), "{err}");
        let err = pipeline(
            &(step("a", "after = [\"c\"]")
                + &step("b", "after = [\"a\"]")
                + &step("c", "after = [\"b\"]")
                + &step("d", "")),
        )
        .unwrap_err();
        assert!(err.contains("pipeline p: the steps a, b, c wait for each other (a cycle in after)"), "{err}");
        let err =
            pipeline(&(step("a", "fatal = false") + &step("b", "compensation = \"dns.undo_b\"\nafter = [\"a\"]")))
                .unwrap_err();
        assert!(err.contains("pipeline p step b: its compensation would depend on a missing step"), "{err}");
        let err = pipeline(&(step("a", "") + &step("a", "after = []"))).unwrap_err();
        assert!(err.contains("pipeline p step a: step names must be unique"), "{err}");
        // Without a compensation, a step may follow a non-fatal one.
        assert!(pipeline(&(step("a", "fatal = false") + &step("b", "after = [\"a\"]"))).is_ok());
    }

    #[test]
    fn every_operation_but_provision_is_a_lifecycle_operation() {
        let others: Vec<Operation> = Operation::ALL.iter().copied().filter(|o| *o != Operation::Provision).collect();
        assert_eq!(LIFECYCLE, &others[..]);
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
        assert!(Plans::parse(&plan("max_attempts = 1001")).unwrap_err().contains("or 0 (until it succeeds)"));
        // 0: until it succeeds, where a step says so; never as the default.
        assert_eq!(Plans::parse(&plan("max_attempts = 0")).unwrap().get("x").unwrap().steps[0].max_attempts, 0);
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
                                prop_assert!(step.max_attempts <= MAX_ATTEMPTS);
                            }
                        }
                    }
                    Err(message) => prop_assert!(!message.is_empty()),
                }
            }
        }
    }
}
