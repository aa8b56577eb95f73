//! Request validation: a TenantRequested checked against the rules, in a
//! fixed order, before anything is created. The orchestrator applies it to
//! what arrives on the bus and the gateway to what it is asked over HTTP,
//! so both refuse the same requests with the same rule names.

use std::collections::HashMap;

use landlord_contract::pb::{self, Tier};
use landlord_contract::{KeyError, TenantKey, text};

use crate::plans::{Plan, Plans};

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub rule: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(rule: &str, reason: impl Into<String>) -> Self {
        Self { rule: rule.to_owned(), reason: reason.into() }
    }
}

impl From<KeyError> for Rejection {
    fn from(error: KeyError) -> Self {
        Self::new(error.rule(), error.to_string())
    }
}

/// A request that passed every rule, with its human-readable fields as they
/// are kept: NFC-normalised and trimmed.
#[derive(Debug, Clone)]
pub struct ValidRequest<'a> {
    pub key: TenantKey,
    pub plan: &'a Plan,
    pub tier: Tier,
    pub display_name: String,
    pub admin_first_name: String,
    pub admin_last_name: String,
    pub labels: HashMap<String, String>,
}

const MAX_DOMAINS: usize = 20;
const MAX_DISPLAY_NAME: usize = 200;
const MAX_ADMIN_NAME: usize = 100;
/// Labels, after Kubernetes' label rules: a key of at most 63 characters,
/// a value of at most 256 (Kubernetes: 63; ours carry short scripts and ids),
/// and a bounded count.
pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;

/// `field.<problem>` for a human-readable field that broke the text rule.
fn text_field(field: &str, raw: &str, max: usize, allow_empty: bool) -> Result<String, Rejection> {
    text::clean(raw, max, allow_empty)
        .map_err(|error| Rejection::new(&format!("{field}.{}", error.problem()), format!("{field} {error}")))
}

/// Checks a request against the rules, in a fixed order, and names the
/// first one broken.
pub fn validate<'a>(request: &pb::TenantRequested, plans: &'a Plans) -> Result<ValidRequest<'a>, Rejection> {
    if request.idempotency_id.trim().is_empty() || request.idempotency_id.len() > 200 {
        return Err(Rejection::new("idempotency_id.missing", "idempotency_id must be 1 to 200 characters"));
    }
    let key = TenantKey::parse(&request.key)?;
    let display_name = text_field("display_name", &request.display_name, MAX_DISPLAY_NAME, false)?;
    let admin = request.admin.as_ref().ok_or_else(|| Rejection::new("admin.missing", "admin contact is required"))?;
    validate_email(&admin.email)?;
    let admin_first_name = text_field("admin.first_name", &admin.first_name, MAX_ADMIN_NAME, true)?;
    let admin_last_name = text_field("admin.last_name", &admin.last_name, MAX_ADMIN_NAME, true)?;
    if request.domains.len() > MAX_DOMAINS {
        return Err(Rejection::new("domains.too_many", format!("at most {MAX_DOMAINS} domains are allowed")));
    }
    for (i, domain) in request.domains.iter().enumerate() {
        validate_domain(domain)?;
        if request.domains[..i].contains(domain) {
            return Err(Rejection::new("domains.duplicate", format!("domain {domain:?} is listed twice")));
        }
    }
    let labels = validate_labels(&request.labels)?;
    let plan = plans.get(&request.plan).ok_or_else(|| {
        let known: Vec<_> = plans.names().collect();
        Rejection::new("plan.unknown", format!("plan {:?} is not one of: {}", request.plan, known.join(", ")))
    })?;
    let tier = match Tier::try_from(request.tier) {
        Ok(Tier::Unspecified) => plan.tier,
        Ok(tier) => tier,
        Err(_) => return Err(Rejection::new("tier.unknown", format!("tier {} is not a known tier", request.tier))),
    };
    Ok(ValidRequest { key, plan, tier, display_name, admin_first_name, admin_last_name, labels })
}

/// Label keys follow the syntax of a Kubernetes label name: ASCII letters,
/// digits, `-`, `_` and `.`, beginning and ending with a letter or digit
/// (`script.s2`, `clerk.organization_id`). Values are human-readable text.
fn validate_labels(labels: &HashMap<String, String>) -> Result<HashMap<String, String>, Rejection> {
    if labels.len() > MAX_LABELS {
        return Err(Rejection::new(
            "labels.too_many",
            format!("at most {MAX_LABELS} labels are allowed, not {}", labels.len()),
        ));
    }
    // Sorted, so the first broken one named is the same every time.
    let mut sorted: Vec<(&String, &String)> = labels.iter().collect();
    sorted.sort();
    let mut kept = HashMap::with_capacity(labels.len());
    for (key, value) in sorted {
        let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        let key_ok = (1..=MAX_LABEL_KEY).contains(&key.len())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && edge(key.chars().next())
            && edge(key.chars().last());
        if !key_ok {
            return Err(Rejection::new(
                "labels.key",
                format!(
                    "label key {key:?} must be 1 to {MAX_LABEL_KEY} ASCII letters, digits, '-', '_' or '.', \
                     beginning and ending with a letter or digit"
                ),
            ));
        }
        let value = text::clean(value, MAX_LABEL_VALUE, true).map_err(|error| {
            Rejection::new(&format!("labels.value.{}", error.problem()), format!("label {key:?}: value {error}"))
        })?;
        kept.insert(key.clone(), value);
    }
    Ok(kept)
}

fn validate_email(email: &str) -> Result<(), Rejection> {
    let invalid = |why: &str| Rejection::new("admin.email.invalid", format!("admin email {email:?} {why}"));
    if email.is_empty() {
        return Err(Rejection::new("admin.email.missing", "admin email is required"));
    }
    if email.len() > 254
        || email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'))
        || !text::has_no_refused_character(email)
    {
        return Err(invalid("has characters an address cannot have"));
    }
    let Some((local, domain)) = email.rsplit_once('@') else { return Err(invalid("has no '@'")) };
    if local.is_empty() || local.contains('@') || local.len() > 64 {
        return Err(invalid("has an invalid local part"));
    }
    if validate_domain(domain).is_err() {
        return Err(invalid("has an invalid domain"));
    }
    Ok(())
}

/// A DNS host name as the tenant's client will use it in redirect URIs:
/// lower-case LDH labels of 1 to 63, at least two of them, 253 in all, a
/// top-level label that is not all digits (no IP addresses), and no `--`
/// in the third and fourth place except the IDNA `xn--`.
fn validate_domain(domain: &str) -> Result<(), Rejection> {
    let invalid = || Rejection::new("domains.invalid", format!("{domain:?} is not a valid DNS host name"));
    let labels: Vec<&str> = domain.split('.').collect();
    if domain.len() > 253 || labels.len() < 2 {
        return Err(invalid());
    }
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && (l.get(2..4) != Some("--") || l.starts_with("xn--"))
    };
    let top_ok = labels.last().is_some_and(|top| !top.chars().all(|c| c.is_ascii_digit()));
    if labels.iter().all(label_ok) && top_ok { Ok(()) } else { Err(invalid()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans() -> Plans {
        Plans::parse(include_str!("../../../deploy/plans.toml")).unwrap()
    }

    fn request() -> pb::TenantRequested {
        pb::TenantRequested {
            idempotency_id: "req-1".into(),
            key: "acme".into(),
            display_name: "Acme".into(),
            plan: "standard".into(),
            admin: Some(pb::AdminContact {
                email: "ops@acme.test".into(),
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
            }),
            domains: vec!["acme.test".into(), "app.acme.test".into()],
            ..Default::default()
        }
    }

    fn rule(change: impl FnOnce(&mut pb::TenantRequested)) -> String {
        let mut r = request();
        change(&mut r);
        validate(&r, &plans()).map(|_| "valid".to_owned()).unwrap_or_else(|e| e.rule)
    }

    #[test]
    fn a_good_request_passes_and_takes_the_plans_tier() {
        let plans = plans();
        let valid = validate(&request(), &plans).unwrap();
        assert_eq!(valid.tier, Tier::Bridge);
        assert_eq!(rule(|r| r.tier = Tier::Silo as i32), "valid");
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(rule(|r| r.key = "a'b;drop".into()), "tenant_key.character");
        assert_eq!(rule(|r| r.admin = None), "admin.missing");
        assert_eq!(rule(|r| r.admin.as_mut().unwrap().email = String::new()), "admin.email.missing");
        assert_eq!(rule(|r| r.admin.as_mut().unwrap().email = "ops@acme".into()), "admin.email.invalid");
        assert_eq!(
            rule(|r| r.admin.as_mut().unwrap().email = "ops@acme.test\r\nBcc: x@y.z".into()),
            "admin.email.invalid"
        );
        assert_eq!(rule(|r| r.plan = "platinum".into()), "plan.unknown");
        assert_eq!(rule(|r| r.domains = vec!["bad domain.test".into()]), "domains.invalid");
        assert_eq!(rule(|r| r.display_name = " ".into()), "display_name.empty");
        assert_eq!(rule(|r| r.idempotency_id = String::new()), "idempotency_id.missing");
        assert_eq!(rule(|r| r.tier = 42), "tier.unknown");
    }

    /// Issue 23, item 2: a key the key rule's characters allow but a
    /// backend's names do not is refused before anything is created.
    #[test]
    fn keys_that_make_names_a_backend_refuses_are_refused_by_the_backend_rule() {
        assert_eq!(rule(|r| r.key = "acme-s3alias".into()), "tenant_key.s3_bucket_name");
        assert_eq!(rule(|r| r.key = "sthree-acme".into()), "tenant_key.s3_bucket_name");
        let rejection =
            validate(&pb::TenantRequested { key: "acme-s3alias".into(), ..request() }, &plans()).unwrap_err();
        assert!(rejection.reason.contains("landlord-acme-s3alias"), "{rejection:?}");
    }

    /// Issue 23, item 3: labels have rules.
    #[test]
    fn labels_have_rules() {
        let label = |k: &str, v: &str| {
            let (k, v) = (k.to_owned(), v.to_owned());
            rule(move |r| {
                r.labels.insert(k, v);
            })
        };
        assert_eq!(label("script.s2", "fail-attempts:2"), "valid");
        assert_eq!(label("clerk.organization_id", "org_2abc"), "valid");
        assert_eq!(label("", "x"), "labels.key");
        assert_eq!(label(".hidden", "x"), "labels.key");
        assert_eq!(label("a/b", "x"), "labels.key");
        assert_eq!(label("ключ", "x"), "labels.key");
        assert_eq!(label(&"k".repeat(64), "x"), "labels.key");
        assert_eq!(label(&"k".repeat(63), "x"), "valid");
        assert_eq!(label("k", &"v".repeat(257)), "labels.value.too_long");
        assert_eq!(label("k", &"v".repeat(256)), "valid");
        assert_eq!(label("k", "a\u{202E}b"), "labels.value.bidi_control");
        assert_eq!(label("k", "a\u{0000}b"), "labels.value.control_character");
        assert_eq!(
            rule(|r| r.labels = (0..=MAX_LABELS).map(|i| (format!("k{i}"), String::new())).collect()),
            "labels.too_many"
        );
    }

    #[test]
    fn domains_are_host_names_listed_once() {
        assert_eq!(rule(|r| r.domains = vec!["acme.test".into(), "acme.test".into()]), "domains.duplicate");
        for bad in
            ["1.2.3.4", "acme.test.", ".acme.test", "ACME.test", "ab--c.test", "-a.test", "a_b.test", "localhost"]
        {
            assert_eq!(rule(|r| r.domains = vec![bad.into()]), "domains.invalid", "{bad}");
        }
        for good in ["xn--bcher-kva.test", "demo.localhost", "a.b.c.d.example", "1acme.test"] {
            assert_eq!(rule(|r| r.domains = vec![good.into()]), "valid", "{good}");
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Requests near the valid one: each field arbitrary or plausible.
        fn requests() -> impl Strategy<Value = pb::TenantRequested> {
            let text = || prop_oneof![any::<String>(), "\\PC{0,30}", "[A-Za-z \u{202E}\u{200B}\u{FEFF}\u{0301}]{0,12}"];
            let key = prop_oneof![any::<String>(), "[a-z][a-z0-9-]{0,44}", "[a-z]{3,10}-s3alias"];
            let domain = prop_oneof![any::<String>(), "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,3}"];
            let label_key = prop_oneof![any::<String>(), "[a-zA-Z0-9._-]{0,70}"];
            (
                (any::<String>(), key, text(), prop_oneof![Just("standard".to_owned()), any::<String>()]),
                (any::<i32>(), proptest::option::of((text(), text(), text()))),
                proptest::collection::vec(domain, 0..4),
                proptest::collection::hash_map(label_key, text(), 0..4),
            )
                .prop_map(|((idempotency_id, key, display_name, plan), (tier, admin), domains, labels)| {
                    pb::TenantRequested {
                        idempotency_id,
                        key,
                        display_name,
                        plan,
                        tier,
                        admin: admin.map(|(email, first_name, last_name)| pb::AdminContact {
                            email,
                            first_name,
                            last_name,
                        }),
                        domains,
                        labels,
                        ..Default::default()
                    }
                })
        }

        proptest! {
            /// Any request is accepted or refused with a named rule, never a
            /// panic; what is accepted is kept clean.
            #[test]
            fn prop_validate_accepts_or_names_a_rule(request in requests()) {
                let plans = plans();
                match validate(&request, &plans) {
                    Ok(valid) => {
                        prop_assert!(!valid.display_name.is_empty());
                        for kept in [&valid.display_name, &valid.admin_first_name, &valid.admin_last_name]
                            .into_iter()
                            .chain(valid.labels.values())
                        {
                            prop_assert!(landlord_contract::text::has_no_refused_character(kept));
                        }
                        prop_assert!(valid.key.backend_names().check().is_ok());
                    }
                    Err(rejection) => {
                        prop_assert!(rejection.rule.contains('.'), "{:?}", rejection);
                        prop_assert!(!rejection.reason.is_empty());
                    }
                }
            }
        }
    }
}
