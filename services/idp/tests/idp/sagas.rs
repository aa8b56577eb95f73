//! Fencing between sagas of one tenant: a retry adopts, a stale compensation
//! leaves, a half-done step is cleaned up.

use super::helpers::*;

#[tokio::test]
async fn a_retry_adopts_the_realm_and_a_stale_compensation_of_the_failed_saga_leaves_it() -> Result<()> {
    let double = double().await?;
    let key = SecretsKey::generate()?;
    let (idp, secrets) = welcome_email_idp(&double, &key).await?;
    let spec = tenant("adopted", "abababab-0001", pb::Tier::Bridge);
    let client = |double: &KeycloakDouble| {
        double.clients("tenant-adopted").into_iter().find(|c| c["clientId"] == "adopted-app").unwrap_or_default()
    };
    // S1 creates everything, marked with its saga.
    let first = provision_in(&idp, &spec, "saga-1").await?;
    let realm = double.realm("tenant-adopted").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-1"));
    assert_eq!(saga_of(&client(&double)), Some("saga-1"));
    assert_eq!(saga_of(&double.users("tenant-adopted")[0]), Some("saga-1"));
    // S1 ends FAILED with its compensations still on their way; the retry
    // S2 runs forward and adopts every object.
    let second = provision_in(&idp, &spec, "saga-2").await?;
    assert_eq!(second[0].outputs, first[0].outputs);
    let realm = double.realm("tenant-adopted").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-2"));
    assert_eq!(owner(&realm), Some("abababab-0001"), "the rest of the marker is kept");
    assert_eq!(realm["attributes"]["tenantKey"], "adopted");
    assert_eq!(realm["displayName"], "adopted Inc.", "the realm's settings are untouched");
    let adopted_client = client(&double);
    assert_eq!(saga_of(&adopted_client), Some("saga-2"));
    assert_eq!(adopted_client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(adopted_client["publicClient"], true);
    let user = &double.users("tenant-adopted")[0];
    assert_eq!(saga_of(user), Some("saga-2"));
    assert_eq!(user["attributes"]["tenantId"], json!(["abababab-0001"]));
    assert_eq!(user["attributes"]["role"], json!(["tenant-admin"]));
    // Adopting is rewriting the marker once: a redelivery of S2 writes nothing.
    let puts = |double: &KeycloakDouble| double.requests().into_iter().filter(|r| r.method == "PUT").count();
    let before = puts(&double);
    assert_eq!(provision_in(&idp, &spec, "saga-2").await?, second);
    assert_eq!(puts(&double), before, "the same saga re-running adopts nothing");
    // S1's late compensations leave S2's objects and say so.
    let reference = SecretRef::parse(&second[2].outputs["idp.admin_password_ref"]).context("no reference")?;
    let sealed = secrets.get(&reference).await?.context("no sealed password")?;
    let notes = compensate_in(&idp, &spec, "saga-1", &first).await?;
    assert_eq!(notes[0]["fenced"], "user ada@adopted.test in realm tenant-adopted belongs to saga saga-2");
    assert_eq!(notes[1]["fenced"], "client adopted-app in realm tenant-adopted belongs to saga saga-2");
    assert_eq!(notes[2]["fenced"], "realm tenant-adopted belongs to saga saga-2");
    assert!(double.realm_names().contains(&"tenant-adopted".to_owned()));
    assert_eq!(saga_of(&client(&double)), Some("saga-2"));
    assert_eq!(double.users("tenant-adopted").len(), 1);
    assert_eq!(secrets.get(&reference).await?, Some(sealed), "S2's welcome mail still finds the password");
    assert!(double.requests().iter().all(|r| r.method != "DELETE"), "nothing was deleted");
    // S2's own compensations delete everything and purge the password.
    let notes = compensate_in(&idp, &spec, "saga-2", &second).await?;
    assert!(notes.iter().all(|o| !o.contains_key("fenced")), "{notes:?}");
    assert!(!double.realm_names().contains(&"tenant-adopted".to_owned()));
    assert!(secrets.get(&reference).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_retry_adopts_the_organization_and_a_stale_compensation_leaves_it_in_the_shared_realm() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pooladopt", "abababab-0002", pb::Tier::Pooled);
    let first = provision_in(&idp, &spec, "saga-1").await?;
    let org = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    assert_eq!(org["attributes"]["landlordSagaId"], json!(["saga-1"]));
    let second = provision_in(&idp, &spec, "saga-2").await?;
    assert_eq!(second[0].outputs["idp.organization_id"], first[0].outputs["idp.organization_id"]);
    // The whole organization was written back: only the saga changed.
    let orgs = double.organizations(SHARED_REALM);
    assert_eq!(orgs.len(), 1);
    let adopted = &orgs[0];
    assert_eq!(adopted["attributes"]["landlordSagaId"], json!(["saga-2"]));
    let mut unchanged = adopted.clone();
    unchanged["attributes"]["landlordSagaId"] = json!(["saga-1"]);
    assert_eq!(unchanged, org, "name, alias, domains and the other attributes are kept");
    let users = double.users(SHARED_REALM);
    assert_eq!(users.len(), 1);
    assert_eq!(saga_of(&users[0]), Some("saga-2"));
    let org_id = adopted["id"].as_str().unwrap_or_default();
    assert_eq!(double.members(SHARED_REALM, org_id), [users[0]["id"].as_str().unwrap_or_default()]);
    assert_eq!(double.actions_emails().len(), 1, "the adopted admin gets no second password mail");
    // S1's late compensations (the client's is a no-op for pooled tenants).
    let notes = compensate_in(&idp, &spec, "saga-1", &first).await?;
    assert_eq!(notes[0]["fenced"], format!("user ada@pooladopt.test in realm {SHARED_REALM} belongs to saga saga-2"));
    assert_eq!(notes[2]["fenced"], format!("organization pooladopt in realm {SHARED_REALM} belongs to saga saga-2"));
    assert_eq!(double.organizations(SHARED_REALM).len(), 1);
    assert_eq!(double.users(SHARED_REALM).len(), 1);
    // S2's own compensations remove them; the shared realm stays.
    compensate_in(&idp, &spec, "saga-2", &second).await?;
    assert!(double.organizations(SHARED_REALM).is_empty());
    assert!(double.users(SHARED_REALM).is_empty());
    assert!(double.realm_names().contains(&SHARED_REALM.to_owned()));
    Ok(())
}

#[tokio::test]
async fn the_compensation_of_a_create_realm_that_failed_half_way_deletes_the_realm_it_left() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    // The realm is created, then setting its user profile is refused: the
    // step fails permanently and reports no resources.
    let spec = tenant("halfway", "abababab-0003", pb::Tier::Bridge);
    double.fail_next_to("PUT", "/admin/realms/tenant-halfway/users/profile", 1, 403);
    let error = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("403");
    assert!(!error.retryable, "{error}");
    let realm = double.realm("tenant-halfway").context("the realm was created before the failure")?;
    assert_eq!(saga_of(&realm), Some("saga-1"), "and marked in the same request");
    // Its compensation has no resources to go by: the name comes from the key.
    let cmd = command_in(&spec, "saga-1", "idp_realm", true);
    assert!(cmd.resources.is_empty());
    for _ in 0..2 {
        let ok = run(&idp, "delete_realm", &cmd).await?;
        assert!(!ok.outputs.contains_key("fenced"), "{:?}", ok.outputs);
    }
    assert!(!double.realm_names().contains(&"tenant-halfway".to_owned()));
    // The same half-done realm taken over by a retry before the failed
    // saga's compensation arrives: the retry finishes the profile, the late
    // compensation leaves the realm.
    let spec = tenant("retaken", "abababab-0004", pb::Tier::Bridge);
    double.fail_next_to("PUT", "/admin/realms/tenant-retaken/users/profile", 1, 403);
    run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("403");
    provision_in(&idp, &spec, "saga-2").await?;
    let user = &double.users("tenant-retaken")[0];
    assert_eq!(user["attributes"]["tenantId"], json!(["abababab-0004"]), "the retry set the user profile");
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-retaken belongs to saga saga-2");
    assert!(double.realm_names().contains(&"tenant-retaken".to_owned()));
    Ok(())
}

#[tokio::test]
async fn another_tenants_or_an_unmarked_object_is_never_deleted_by_a_compensation() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    // Pooled: an organization of another tenant under the same name.
    let owner_spec = tenant("poolowned", "abababab-0005", pb::Tier::Pooled);
    provision_in(&idp, &owner_spec, "saga-owner").await?;
    let intruder = tenant("poolowned", "abababab-0006", pb::Tier::Pooled);
    let ok = run(&idp, "delete_realm", &command_in(&intruder, "saga-owner", "idp_realm", true)).await?;
    assert_eq!(
        ok.outputs["fenced"],
        format!("organization poolowned in realm {SHARED_REALM} belongs to tenant abababab-0005"),
        "the same saga id does not make it the intruder's"
    );
    assert_eq!(double.organizations(SHARED_REALM).len(), 1);
    // A realm an operator made by hand, with no marker: a forward step
    // refuses it and a compensation leaves it.
    double.add_realm(json!({"realm": "tenant-handmade", "enabled": true}));
    let spec = tenant("handmade", "abababab-0007", pb::Tier::Bridge);
    let error =
        run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await.expect_err("no marker");
    assert_eq!(error.code, "conflict", "{error}");
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-handmade carries no tenant marker");
    // A realm of this tenant made before sagas were marked: a compensation
    // cannot tell whose it is and leaves it; a forward step adopts it.
    double.add_realm(json!({"realm": "tenant-legacy", "enabled": true,
        "attributes": {"tenantId": "abababab-0008", "tenantKey": "legacy"}}));
    let spec = tenant("legacy", "abababab-0008", pb::Tier::Bridge);
    let ok = run(&idp, "delete_realm", &command_in(&spec, "saga-1", "idp_realm", true)).await?;
    assert_eq!(ok.outputs["fenced"], "realm tenant-legacy carries no saga marker (made before sagas were marked)");
    run(&idp, "create_realm", &command_in(&spec, "saga-2", "idp_realm", false)).await?;
    let realm = double.realm("tenant-legacy").context("no realm")?;
    assert_eq!(saga_of(&realm), Some("saga-2"));
    assert_eq!(realm["attributes"]["tenantKey"], "legacy");
    assert!(double.realm_names().iter().any(|r| r == "tenant-handmade"));
    assert!(double.requests().iter().all(|r| r.method != "DELETE"), "nothing was deleted");
    Ok(())
}

#[tokio::test]
async fn the_compensation_of_a_create_admin_user_that_failed_half_way_deletes_the_user_it_left() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("poolhalf", "abababab-0009", pb::Tier::Pooled);
    let org = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await?;
    // The user is created in the shared realm, then adding it to the
    // organization is refused.
    double.fail_next_to("POST", "/members", 1, 403);
    let mut cmd = command_in(&spec, "saga-1", "idp_admin_user", false);
    cmd.inputs = org.outputs.clone();
    let error = run(&idp, "create_admin_user", &cmd).await.expect_err("403");
    assert!(!error.retryable, "{error}");
    assert_eq!(double.users(SHARED_REALM).len(), 1, "the user was created before the failure");
    // No resources: the compensation finds the user by the admin's address.
    let ok = run(&idp, "delete_admin_user", &command_in(&spec, "saga-1", "idp_admin_user", true)).await?;
    assert!(!ok.outputs.contains_key("fenced"), "{:?}", ok.outputs);
    assert!(double.users(SHARED_REALM).is_empty());
    Ok(())
}

#[tokio::test]
async fn a_shared_realm_whose_user_profile_drops_the_markers_is_refused_before_any_user_exists() -> Result<()> {
    let double = KeycloakDouble::start().await?;
    // Organizations enabled, but the default user profile: undeclared
    // attributes (the markers) would be dropped silently.
    double.add_realm(json!({"realm": SHARED_REALM, "enabled": true, "organizationsEnabled": true,
        "smtpServer": {"host": "mail.test", "port": "25", "from": "noreply@shared.test"}}));
    let idp = idp(&double)?;
    let spec = tenant("poolbare", "abababab-000a", pb::Tier::Pooled);
    let org = run(&idp, "create_realm", &command_in(&spec, "saga-1", "idp_realm", false)).await?;
    let mut cmd = command_in(&spec, "saga-1", "idp_admin_user", false);
    cmd.inputs = org.outputs.clone();
    let error = run(&idp, "create_admin_user", &cmd).await.expect_err("profile drops the markers");
    assert!(!error.retryable && error.code == "refused", "{error}");
    assert!(error.message.contains("tenantId, landlordSagaId"), "{error}");
    assert!(double.users(SHARED_REALM).is_empty());
    double.set_unmanaged_attribute_policy(SHARED_REALM, "ADMIN_EDIT");
    run(&idp, "create_admin_user", &cmd).await?;
    assert_eq!(saga_of(&double.users(SHARED_REALM)[0]), Some("saga-1"));
    Ok(())
}
