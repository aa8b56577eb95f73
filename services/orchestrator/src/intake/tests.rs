use super::*;

fn plans() -> Plans {
    Plans::parse(include_str!("../../../../deploy/plans.toml")).unwrap()
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

/// Issue 23, item 3: invisible and direction-changing characters in
/// every human-readable field; what is kept is NFC.
#[test]
fn human_readable_fields_refuse_format_characters_and_keep_nfc() {
    assert_eq!(rule(|r| r.display_name = "Acme \u{202E}gnp.exe".into()), "display_name.bidi_control");
    assert_eq!(rule(|r| r.display_name = "Ac\u{200B}me".into()), "display_name.format_character");
    assert_eq!(rule(|r| r.display_name = "\u{FEFF}Acme".into()), "display_name.format_character");
    assert_eq!(rule(|r| r.display_name = "x".repeat(201)), "display_name.too_long");
    assert_eq!(rule(|r| r.admin.as_mut().unwrap().first_name = "A\u{2066}da".into()), "admin.first_name.bidi_control");
    assert_eq!(
        rule(|r| r.admin.as_mut().unwrap().last_name = "Love\u{200D}lace".into()),
        "admin.last_name.format_character"
    );
    assert_eq!(rule(|r| r.admin.as_mut().unwrap().last_name = "L\n".into()), "admin.last_name.control_character");
    assert_eq!(rule(|r| r.admin.as_mut().unwrap().email = "ops\u{202E}@acme.test".into()), "admin.email.invalid");
    assert_eq!(rule(|r| r.admin.as_mut().unwrap().first_name = String::new()), "valid", "names may be empty");
    let plans = plans();
    let mut decomposed = request();
    decomposed.display_name = "  Cafe\u{0301}  ".into();
    decomposed.admin.as_mut().unwrap().first_name = " Zoe\u{0308} ".into();
    decomposed.labels.insert("team".into(), "Re\u{0301}seau".into());
    let valid = validate(&decomposed, &plans).unwrap();
    assert_eq!(valid.display_name, "Café");
    assert_eq!(valid.admin_first_name, "Zoë");
    assert_eq!(valid.labels["team"], "Réseau");
    let row = tenant_row(&valid, &decomposed);
    assert_eq!((row.display_name.as_str(), row.admin_first_name.as_str()), ("Café", "Zoë"));
    assert_eq!(row.labels.0["team"], "Réseau");
}

fn arrival(subject: &str, ce_type: Option<&str>, ce_subject: Option<&str>) -> Arrival {
    Arrival {
        subject: subject.to_owned(),
        ce_type: ce_type.map(str::to_owned),
        ce_subject: ce_subject.map(str::to_owned),
    }
}

/// Issue 23, item 11: the request contract is checked where it arrives.
#[test]
fn the_request_contract_is_checked_on_arrival() {
    let ns = Namespace::default();
    let ty = Some("landlord.v1.TenantRequested");
    let check = |a: &Arrival, r: &pb::TenantRequested| check_arrival(&ns, a, r).map(|()| "ok".to_owned());
    let r = request();
    assert_eq!(check(&arrival("landlord.v1.events.acme.requested", ty, Some("acme")), &r), Ok("ok".into()));
    assert_eq!(check(&arrival("landlord.v1.events.acme.requested", ty, None), &r), Ok("ok".into()));
    let rule_of = |a: Arrival, r: &pb::TenantRequested| check_arrival(&ns, &a, r).unwrap_err().rule;
    assert_eq!(rule_of(arrival("landlord.v1.events.acme.requested", None, None), &r), "request.ce_type");
    assert_eq!(
        rule_of(arrival("landlord.v1.events.acme.requested", Some("landlord.v1.CancelSaga"), None), &r),
        "request.ce_type"
    );
    assert_eq!(rule_of(arrival("landlord.v1.events.other.requested", ty, None), &r), "request.subject_key");
    assert_eq!(rule_of(arrival("landlord.v1.events.acme.rejected", ty, None), &r), "request.subject_key");
    assert_eq!(rule_of(arrival("landlord.v1.events.acme.requested", ty, Some("other")), &r), "request.ce_subject");
    // A payload key that breaks the key rule is named by that rule.
    let bad = pb::TenantRequested { key: "Bad Key".into(), ..request() };
    assert_eq!(rule_of(arrival("landlord.v1.events._invalid.requested", ty, None), &bad), "tenant_key.first_character");
}

/// A rejection goes where the request was published, not to the
/// payload's key, and carries ce-subject and a correlation id.
#[test]
fn rejections_go_to_the_subject_key_with_subject_and_correlation() {
    let ns = Namespace::default();
    let r = request();
    let rejection = Rejection::new("request.subject_key", "x");
    let routed = rejected_event(&ns, &r, "m1", &rejection, Some(TenantKey::parse("other").unwrap()));
    assert_eq!(routed.subject, "landlord.v1.events.other.rejected");
    assert_eq!(routed.tenant_key.as_deref(), Some("other"));
    assert_eq!(routed.correlation_id, Some(saga_id(Operation::Provision, "req-1").to_string()));
    let own = rejected_event(&ns, &r, "m1", &rejection, None);
    assert_eq!(own.subject, "landlord.v1.events.acme.rejected");
    assert_eq!(own.tenant_key.as_deref(), Some("acme"));
    let bad = pb::TenantRequested { key: "a b".into(), ..request() };
    let invalid = rejected_event(&ns, &bad, "m1", &rejection, None);
    assert_eq!(invalid.subject, "landlord.v1.events._invalid.rejected");
    assert_eq!(invalid.tenant_key.as_deref(), Some("_invalid"));
    assert!(invalid.correlation_id.is_some());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The arrival check reads only the payload's key: requests whose key
    /// is arbitrary or plausible (the other fields are the control plane's
    /// validation, property-tested there).
    fn requests() -> impl Strategy<Value = pb::TenantRequested> {
        prop_oneof![any::<String>(), "[a-z][a-z0-9-]{0,44}", Just("acme".to_owned())]
            .prop_map(|key| pb::TenantRequested { key, ..Default::default() })
    }

    proptest! {
        /// Whatever arrives, the contract check names a rule or passes,
        /// and passes only when subject, ce-type and payload agree.
        #[test]
        fn prop_arrival_checks_name_a_rule(
            request in requests(),
            token in prop_oneof![Just("acme".to_owned()), "[a-z_]{1,8}", any::<String>()],
            ce_type in proptest::option::of(prop_oneof![Just("landlord.v1.TenantRequested".to_owned()), any::<String>()]),
        ) {
            let ns = Namespace::default();
            let subject = format!("landlord.v1.events.{token}.requested");
            let arrived = Arrival { subject, ce_type: ce_type.clone(), ce_subject: None };
            match check_arrival(&ns, &arrived, &request) {
                Ok(()) => {
                    prop_assert_eq!(ce_type.as_deref(), Some("landlord.v1.TenantRequested"));
                    prop_assert_eq!(&token, &request.key);
                }
                Err(rejection) => prop_assert!(rejection.rule.contains('.')),
            }
        }
    }
}
