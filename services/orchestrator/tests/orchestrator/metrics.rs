//! The business metrics on `/metrics` after real sagas, and the Grafana
//! dashboard and the Prometheus alert rules in deploy/observability/
//! checked against what the orchestrator and a worker actually export.

use std::collections::BTreeSet;

use landlord_testkit::{free_port, http_get, workspace_root};

use super::*;

/// `/metrics` of the service listening on `port`.
async fn scrape(port: u16) -> Option<String> {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(port, "/metrics")).await.ok()??;
    (status == 200).then_some(body)
}

/// The value of the sample `series` (name and labels, as encoded).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The names of the samples in a `/metrics` body (`_total`, `_bucket`…
/// included: what a query names).
fn sample_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The metric names a PromQL expression reads: every identifier that is
/// not a function (followed by `(`), an aggregation, a keyword, a label
/// (inside `{…}` or a `by (…)`-like clause), a number, a duration, a
/// string or a Grafana variable.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const OPERATORS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
    // `sum by (x) (…)`: no `(` right after an aggregation.
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The index after the `close` that ends what starts at `from`, past
    // any quoted string on the way (a label value may hold `}` or `)`).
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() {
            match chars[j] {
                c if c == close => return j + 1,
                quote @ ('"' | '\'' | '`') if quote != close => {
                    j += 1;
                    while j < chars.len() && chars[j] != quote {
                        j += if chars[j] == '\\' { 2 } else { 1 };
                    }
                    j += 1;
                }
                '\\' => j += 2,
                _ => j += 1,
            }
        }
        chars.len()
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_to(i + 1, c),
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                // A number or a duration (5m, 1h30m, 1e3).
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
                if GROUPING.contains(&word.as_str()) {
                    // Its label list, if any.
                    if next == Some('(') {
                        let open = i + chars[i..].iter().position(|c| *c == '(').unwrap_or(0);
                        i = skip_to(open + 1, ')');
                    }
                } else if next != Some('(')
                    && !OPERATORS.contains(&word.to_lowercase().as_str())
                    && !AGGREGATIONS.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (operation, le) (rate(landlord_a_bucket{outcome="x",b=~"{y}"}[1h])))
        / on (operation) group_left (tier) max without (instance) (landlord_b offset 5m) > bool 0.2
        and absent(landlord_c) or sum(increase(landlord_d_total[$__rate_interval])) unless landlord_e[5m:1m]
        * 1e3 + count_values("value", landlord_f)"#;
    let found: Vec<String> = promql_metrics(expr).into_iter().collect();
    assert_eq!(
        found,
        ["landlord_a_bucket", "landlord_b", "landlord_c", "landlord_d_total", "landlord_e", "landlord_f"]
    );
}

/// Every `expr` in a Grafana dashboard, wherever its panels nest.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, value) in fields {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => dashboard_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, out)),
        _ => {}
    }
}

/// Every rule's name and `expr` in a Prometheus rule file; each alert has
/// a severity, a summary, a description and a runbook link.
fn rule_exprs(text: &str) -> Result<Vec<(String, String)>> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text)?;
    let doc = docs.first().context("an empty rule file")?;
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().context("no groups")? {
        let name = group["name"].as_str().context("a group without a name")?;
        for rule in group["rules"].as_vec().with_context(|| format!("group {name} has no rules"))? {
            let alert = rule["alert"].as_str().or(rule["record"].as_str()).context("a rule without a name")?;
            let expr = rule["expr"].as_str().with_context(|| format!("{alert} has no expr"))?;
            if rule["alert"].as_str().is_some() {
                for (part, key) in [("labels", "severity"), ("annotations", "summary"), ("annotations", "description")]
                {
                    anyhow::ensure!(
                        rule[part][key].as_str().is_some_and(|v| !v.is_empty()),
                        "{alert} has no {part}.{key}"
                    );
                }
                let runbook = rule["annotations"]["runbook"].as_str().unwrap_or("");
                anyhow::ensure!(runbook.starts_with("docs/observability.md#"), "{alert}: runbook {runbook:?}");
            }
            out.push((alert.to_owned(), expr.to_owned()));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn sagas_are_counted_and_the_dashboard_and_alerts_use_only_exported_metrics() -> Result<()> {
    let mut p =
        Processes::with(1, &[("LANDLORD_METRICS_INTERVAL", "100ms"), ("LANDLORD_CONSUMER_INFO_INTERVAL", "100ms")])
            .await?;
    let worker_port = free_port();
    p.worker_env.push(("LANDLORD_HTTP_ADDR".into(), format!("127.0.0.1:{worker_port}")));
    p.restart_worker()?;
    // One tenant whose s2 fails once and is retried, one whose s3 fails for good.
    p.publish(&Harness::request("metrics-ok", &[("script.s2", "fail-attempts:1")]), "metrics-ok").await?;
    p.publish(&Harness::request("metrics-failed", &[("script.s3", "permanent")]), "metrics-failed").await?;
    p.wait_terminal(2, WAIT).await?;

    let port = p.ports[0];
    // The gauges are read from the control plane: wait for a read after the ends.
    let orchestrator = eventually("the tenants' statuses in the orchestrator's metrics", WAIT, || async {
        let body = scrape(port).await?;
        let active = sample(&body, r#"landlord_tenants{status="ACTIVE",tier="bridge"}"#)?;
        let failed = sample(&body, r#"landlord_tenants{status="FAILED",tier="bridge"}"#)?;
        (active == 1.0 && failed == 1.0).then_some(body)
    })
    .await?;
    let value = |series: &str| sample(&orchestrator, series);
    assert_eq!(value(r#"landlord_sagas_started_total{operation="provision"}"#), Some(2.0), "{orchestrator}");
    assert_eq!(value(r#"landlord_sagas_finished_total{operation="provision",outcome="succeeded"}"#), Some(1.0));
    assert_eq!(value(r#"landlord_sagas_finished_total{operation="provision",outcome="failed"}"#), Some(1.0));
    assert_eq!(value(r#"landlord_sagas_finished_total{operation="suspend",outcome="failed"}"#), Some(0.0));
    assert_eq!(value(r#"landlord_saga_steps_retried_total{operation="provision",step="s2"}"#), Some(1.0));
    assert_eq!(value(r#"landlord_saga_duration_seconds_count{operation="provision",outcome="succeeded"}"#), Some(1.0));
    let took = value(r#"landlord_saga_duration_seconds_sum{operation="provision",outcome="succeeded"}"#);
    assert!(took.is_some_and(|s| s > 0.0 && s < WAIT.as_secs_f64()), "{took:?}");
    assert_eq!(value(r#"landlord_tenants{status="PROVISIONING",tier="bridge"}"#), Some(0.0));
    assert_eq!(value(r#"landlord_sagas_in_progress{operation="provision",state="running"}"#), Some(0.0));
    assert_eq!(value(r#"landlord_sagas_stuck{operation="provision",reason="too_long"}"#), Some(0.0));
    assert_eq!(value(r#"landlord_consumer_pending{consumer="orchestrator-results"}"#), Some(0.0));
    let worker = eventually("the worker's metrics", WAIT, || scrape(worker_port)).await?;

    let exported: BTreeSet<String> = sample_names(&orchestrator).union(&sample_names(&worker)).cloned().collect();
    // Every metric of ours says what it is (a counter's help is under its
    // name without `_total`, a histogram's without `_bucket`…).
    let help = |family: &str| {
        let prefix = format!("# HELP {family} ");
        orchestrator.lines().chain(worker.lines()).find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
    };
    for name in exported.iter().filter(|n| n.starts_with("landlord_")) {
        let suffixes = ["_total", "_bucket", "_sum", "_count", "_created"];
        let families = std::iter::once(name.as_str()).chain(suffixes.iter().filter_map(|s| name.strip_suffix(s)));
        let text = families.into_iter().find_map(help);
        anyhow::ensure!(text.is_some_and(|t| t.trim().len() > 10), "{name} has no help text");
    }

    let root = workspace_root().join("deploy/observability");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("grafana-dashboard.json"))?)?;
    let mut used = Vec::new();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    anyhow::ensure!(exprs.len() >= 10, "the dashboard has {} queries", exprs.len());
    used.extend(exprs.iter().map(|e| ("grafana-dashboard.json".to_owned(), e.clone())));
    let rules = rule_exprs(&std::fs::read_to_string(root.join("alerts.yml"))?)?;
    let alerts: BTreeSet<&str> = rules.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in
        ["LandlordSagaStuck", "LandlordSagaFailureRate", "LandlordDeadLettersGrowing", "LandlordConsumerFallingBehind"]
    {
        anyhow::ensure!(alerts.contains(wanted), "no alert {wanted} in alerts.yml: {alerts:?}");
    }
    used.extend(rules.into_iter().map(|(name, expr)| (format!("alerts.yml {name}"), expr)));
    let mut missing = Vec::new();
    let mut seen = BTreeSet::new();
    for (place, expr) in &used {
        let names = promql_metrics(expr);
        anyhow::ensure!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{place}: {name} in {expr:?}"));
            }
            seen.insert(name);
        }
    }
    assert!(missing.is_empty(), "metrics used but not exported:\n{}\nexported: {exported:?}", missing.join("\n"));
    // The dashboard shows the business metrics the issue asks for.
    for name in [
        "landlord_tenants",
        "landlord_sagas_started_total",
        "landlord_sagas_finished_total",
        "landlord_saga_duration_seconds_bucket",
        "landlord_saga_steps_retried_total",
        "landlord_dead_letters_total",
        "landlord_consumer_pending",
        "landlord_sagas_stuck",
    ] {
        anyhow::ensure!(seen.contains(name), "{name} is in neither the dashboard nor the alerts");
    }
    Ok(())
}
