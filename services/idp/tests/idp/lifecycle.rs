//! The lifecycle actions against the double: suspend blocks sign-in and
//! ends sessions, resume lets the admin in again, update reaches the
//! client's redirect URIs and the organization, purge deletes and refuses
//! another tenant's objects; half-done steps and their compensations.

use super::helpers::*;

const PASSWORD: &str = "Correct-horse-battery-1";

/// A password grant through the realm's `admin-cli`: the status and body.
async fn sign_in(double: &KeycloakDouble, realm: &str, username: &str) -> Result<(u16, Value)> {
    let http = landlord_runtime::http::client_builder(&Default::default()).build()?;
    let reply = http
        .post(format!("{}/realms/{realm}/protocol/openid-connect/token", double.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=password&client_id=admin-cli&username={username}&password={PASSWORD}"))
        .send()
        .await?;
    let status = reply.status().as_u16();
    Ok((status, reply.json().await?))
}

/// Provisions the tenant and gives its admin a password of its own (as at
/// the first sign-in); returns the admin's user id and username.
async fn provisioned(
    idp: &Idp,
    double: &KeycloakDouble,
    spec: &pb::TenantSpec,
    realm: &str,
) -> Result<(String, String)> {
    let results = provision(idp, spec).await?;
    let user_id = results[2].outputs["idp.admin_user_id"].clone();
    double.set_password(realm, &user_id, PASSWORD);
    Ok((user_id, results[2].outputs["idp.admin_username"].clone()))
}

fn step(spec: &pb::TenantSpec, name: &str, compensate: bool) -> pb::StepCommand {
    command_in(spec, &format!("saga-{name}-{}", spec.key), &format!("idp_{name}"), compensate)
}

#[tokio::test]
async fn suspend_disables_the_realm_refuses_sign_in_and_ends_sessions_and_resume_reverses_it() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    for (key, tier) in [("sus-bridge", pb::Tier::Bridge), ("sus-silo", pb::Tier::Silo)] {
        let spec = tenant(key, &format!("{key}-id"), tier);
        let realm = format!("tenant-{key}");
        let (_, admin) = provisioned(&idp, &double, &spec, &realm).await?;
        let (status, token) = sign_in(&double, &realm, &admin).await?;
        assert_eq!(status, 200, "{token}");
        assert_eq!(double.sessions(&realm).len(), 1);

        let ok = run(&idp, "suspend", &step(&spec, "suspend", false)).await?;
        assert_eq!(ok.outputs["idp.enabled"], "false");
        let disabled = double.realm(&realm).context("no realm")?;
        assert_eq!(disabled["enabled"], false);
        assert_eq!(owner(&disabled), Some(spec.tenant_id.as_str()), "the marker is kept");
        let puts = double.requests_to("PUT", &format!("/admin/realms/{realm}"));
        assert_eq!(puts.len(), 1);
        assert_eq!(serde_json::from_str::<Value>(&puts[0].body)?, json!({"enabled": false}), "only the field");
        assert!(double.sessions(&realm).is_empty(), "logout-all ended the session");
        let (status, refused) = sign_in(&double, &realm, &admin).await?;
        assert_eq!((status, &refused["error"]), (403, &json!("access_denied")), "{refused}");
        assert_eq!(refused["error_description"], "Realm not enabled");

        // A redelivery writes nothing more and ends sessions again.
        run(&idp, "suspend", &step(&spec, "suspend", false)).await?;
        assert_eq!(double.requests_to("PUT", &format!("/admin/realms/{realm}")).len(), 1);
        assert_eq!(double.requests_to("POST", &format!("/admin/realms/{realm}/logout-all")).len(), 2);

        let ok = run(&idp, "resume", &step(&spec, "resume", false)).await?;
        assert_eq!(ok.outputs["idp.enabled"], "true");
        assert_eq!(double.realm(&realm).context("no realm")?["enabled"], true);
        let (status, token) = sign_in(&double, &realm, &admin).await?;
        assert_eq!(status, 200, "the admin signs in again: {token}");
    }
    Ok(())
}

#[tokio::test]
async fn a_pooled_suspend_disables_the_organization_and_the_tenants_users_and_resume_reverses_exactly_that()
-> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("sus-pooled", "sus-pooled-id", pb::Tier::Pooled);
    let (admin_id, admin) = provisioned(&idp, &double, &spec, SHARED_REALM).await?;
    let org = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    let org_id = org["id"].as_str().context("no id")?.to_owned();
    // Another member the tenant's admin invited (no Landlord marker), and
    // one an operator disabled before: neither is Landlord's to change.
    let http = landlord_runtime::http::client_builder(&Default::default()).build()?;
    let admin_token = http
        .post(format!("{}/realms/master/protocol/openid-connect/token", double.url()))
        .basic_auth(KEYCLOAK_DOUBLE_CLIENT.0, Some(KEYCLOAK_DOUBLE_CLIENT.1))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await?
        .json::<Value>()
        .await?["access_token"]
        .as_str()
        .context("client_secret_basic gave no token")?
        .to_owned();
    let mut guests = Vec::new();
    for (name, enabled) in [("guest", true), ("blocked", false)] {
        let created = http
            .post(format!("{}/admin/realms/{SHARED_REALM}/users", double.url()))
            .bearer_auth(&admin_token)
            .json(&json!({"username": format!("{name}@sus-pooled.test"), "enabled": enabled,
                "attributes": {"tenantId": [if enabled { "someone-else" } else { "sus-pooled-id" }]}}))
            .send()
            .await?;
        let id = created.headers()["location"].to_str()?.rsplit('/').next().context("no id")?.to_owned();
        http.post(format!("{}/admin/realms/{SHARED_REALM}/organizations/{org_id}/members", double.url()))
            .bearer_auth(&admin_token)
            .json(&id)
            .send()
            .await?
            .error_for_status()?;
        guests.push(id);
    }
    assert_eq!(sign_in(&double, SHARED_REALM, &admin).await?.0, 200);

    let ok = run(&idp, "suspend", &step(&spec, "suspend", false)).await?;
    assert_eq!(ok.outputs["idp.users_disabled"], "1", "{ok:?}");
    let suspended = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    assert_eq!(suspended["enabled"], false);
    // Written back whole: Keycloak's PUT replaces the record.
    assert_eq!(suspended["attributes"], org["attributes"]);
    assert_eq!(suspended["domains"], org["domains"]);
    assert_eq!(suspended["description"], org["description"]);
    let user = |id: &str| double.users(SHARED_REALM).into_iter().find(|u| u["id"] == id).unwrap_or_default();
    assert_eq!(user(&admin_id)["enabled"], false);
    assert_eq!(user(&admin_id)["attributes"]["landlordSuspendedBy"], json!(["saga-suspend-sus-pooled"]));
    assert_eq!(user(&guests[0])["enabled"], true, "not the tenant's user");
    assert!(double.sessions(SHARED_REALM).is_empty(), "every member logged out");
    assert_eq!(double.requests_to("POST", "/logout").len(), 3, "each member");
    let (status, refused) = sign_in(&double, SHARED_REALM, &admin).await?;
    assert_eq!((status, &refused["error_description"]), (400, &json!("Account disabled")), "{refused}");

    run(&idp, "resume", &step(&spec, "resume", false)).await?;
    assert_eq!(double.organizations(SHARED_REALM)[0]["enabled"], true);
    assert_eq!(user(&admin_id)["enabled"], true);
    assert!(user(&admin_id)["attributes"].get("landlordSuspendedBy").is_none());
    assert_eq!(user(&admin_id)["attributes"]["tenantId"], json!(["sus-pooled-id"]), "the marker is kept");
    assert_eq!(user(&guests[1])["enabled"], false, "an operator's disabled user stays disabled");
    assert_eq!(sign_in(&double, SHARED_REALM, &admin).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn update_reaches_the_clients_redirect_uris_and_the_organization_and_its_compensation_restores_them() -> Result<()>
{
    let double = double().await?;
    let idp = idp(&double)?;
    let before = tenant("upd", "upd-id", pb::Tier::Bridge);
    provision(&idp, &before).await?;
    let after = pb::TenantSpec {
        display_name: "Upd Renamed".into(),
        domains: vec!["upd.example.org".into()],
        ..before.clone()
    };
    let client = || double.clients("tenant-upd").into_iter().find(|c| c["clientId"] == "upd-app").unwrap_or_default();
    run(&idp, "update", &step(&after, "update", false)).await?;
    assert_eq!(client()["redirectUris"], json!(["https://upd.example.org/*"]));
    assert_eq!(client()["webOrigins"], json!(["https://upd.example.org"]));
    assert_eq!(client()["attributes"]["post.logout.redirect.uris"], "https://upd.example.org/*");
    assert_eq!(client()["attributes"]["pkce.code.challenge.method"], "S256", "the rest of the client is kept");
    assert_eq!(double.realm("tenant-upd").context("no realm")?["displayName"], "Upd Renamed");
    // Again: nothing left to write.
    let puts = double.requests().iter().filter(|r| r.method == "PUT").count();
    run(&idp, "update", &step(&after, "update", false)).await?;
    assert_eq!(double.requests().iter().filter(|r| r.method == "PUT").count(), puts);
    // The compensation carries the tenant as it was.
    run(&idp, "update", &step(&before, "update", true)).await?;
    assert_eq!(client()["redirectUris"], json!(["https://upd.example.com/*", "https://app.upd.io/*"]));
    assert_eq!(double.realm("tenant-upd").context("no realm")?["displayName"], "upd Inc.");

    let pooled = tenant("upd-pooled", "upd-pooled-id", pb::Tier::Pooled);
    provision(&idp, &pooled).await?;
    let org = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    let changed = pb::TenantSpec {
        display_name: "Pooled Renamed".into(),
        domains: vec!["app.upd-pooled.io".into(), "new.upd-pooled.io".into()],
        ..pooled.clone()
    };
    run(&idp, "update", &step(&changed, "update", false)).await?;
    let updated = double.organizations(SHARED_REALM).into_iter().next().context("no organization")?;
    assert_eq!(updated["description"], "Pooled Renamed");
    assert_eq!(updated["name"], "upd-pooled", "the name stays the key every step finds it by");
    let names: Vec<&str> =
        updated["domains"].as_array().into_iter().flatten().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["app.upd-pooled.io", "new.upd-pooled.io"]);
    assert_eq!(updated["attributes"], org["attributes"], "written back whole");
    Ok(())
}

#[tokio::test]
async fn purge_deletes_the_tenants_objects_once_and_refuses_another_tenants() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("gone", "gone-id", pb::Tier::Silo);
    provision(&idp, &spec).await?;
    let ok = run(&idp, "purge", &step(&spec, "purge", false)).await?;
    assert_eq!(ok.outputs["idp.purged"], "deleted");
    assert!(!double.realm_names().contains(&"tenant-gone".to_owned()));
    let ok = run(&idp, "purge", &step(&spec, "purge", false)).await?;
    assert_eq!(ok.outputs["idp.purged"], "already gone", "a repeat is done, not an error");

    // A realm of the same name whose marker names another tenant.
    double.add_realm(json!({"realm": "tenant-mine", "enabled": true, "attributes": {"tenantId": "someone-else"}}));
    let mine = tenant("mine", "mine-id", pb::Tier::Bridge);
    for action in ["purge", "suspend", "update"] {
        let error = run(&idp, action, &step(&mine, action, false)).await.err().context("not refused")?;
        assert!(!error.retryable && error.code == "conflicting_owner", "{action}: {error}");
    }
    assert_eq!(double.realm("tenant-mine").context("deleted")?["enabled"], true, "nothing changed");

    let pooled = tenant("gone-pooled", "gone-pooled-id", pb::Tier::Pooled);
    provision(&idp, &pooled).await?;
    let ok = run(&idp, "purge", &step(&pooled, "purge", false)).await?;
    assert_eq!(ok.outputs["idp.users_deleted"], "1");
    assert!(double.organizations(SHARED_REALM).is_empty());
    assert!(double.users(SHARED_REALM).is_empty(), "the admin Landlord created is deleted");
    assert_eq!(run(&idp, "purge", &step(&pooled, "purge", false)).await?.outputs["idp.purged"], "already gone");

    // An organization named after the key that is another tenant's: nothing deleted.
    let other = tenant("taken-pooled", "other-id", pb::Tier::Pooled);
    provision(&idp, &other).await?;
    let claimant = tenant("taken-pooled", "claimant-id", pb::Tier::Pooled);
    let error = run(&idp, "purge", &step(&claimant, "purge", false)).await.err().context("not refused")?;
    assert!(!error.retryable && error.code == "conflicting_owner", "{error}");
    assert_eq!(double.organizations(SHARED_REALM).len(), 1);
    assert_eq!(double.users(SHARED_REALM).len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_suspend_that_fails_half_way_is_retryable_and_its_compensation_resumes() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("half", "half-id", pb::Tier::Bridge);
    let (_, admin) = provisioned(&idp, &double, &spec, "tenant-half").await?;
    // The realm is disabled, then Keycloak fails the logout.
    double.fail_next_to("POST", "/logout-all", 1, 500);
    let error = run(&idp, "suspend", &step(&spec, "suspend", false)).await.err().context("did not fail")?;
    assert!(error.retryable && error.code == "keycloak_unavailable", "{error}");
    assert_eq!(double.realm("tenant-half").context("no realm")?["enabled"], false);
    // The saga gives up: the compensation is `resume`, sent as such (as is
    // the undo of a fenced suspend).
    run(&idp, "resume", &step(&spec, "suspend", true)).await?;
    assert_eq!(double.realm("tenant-half").context("no realm")?["enabled"], true);
    assert_eq!(sign_in(&double, "tenant-half", &admin).await?.0, 200);
    // A resume that fails is compensated by a suspend.
    run(&idp, "suspend", &step(&spec, "resume", true)).await?;
    assert_eq!(sign_in(&double, "tenant-half", &admin).await?.0, 403);

    // A tenant whose realm is gone cannot be suspended: permanent, named.
    let lost = tenant("lost", "lost-id", pb::Tier::Bridge);
    let error = run(&idp, "suspend", &step(&lost, "suspend", false)).await.err().context("did not fail")?;
    assert!(!error.retryable && error.code == "not_found", "{error}");
    // Keycloak down: retryable.
    double.fail_next(1, 503);
    let error = run(&idp, "resume", &step(&spec, "resume", false)).await.err().context("did not fail")?;
    assert!(error.retryable, "{error}");
    Ok(())
}

#[tokio::test]
async fn a_pooled_suspend_is_refused_before_anything_changes_when_the_profile_would_drop_the_mark() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("sus-bare", "sus-bare-id", pb::Tier::Pooled);
    let (admin_id, _) = provisioned(&idp, &double, &spec, SHARED_REALM).await?;
    // The operator declares the markers in the user profile and drops the
    // unmanaged-attribute policy: `landlordSuspendedBy` would be lost.
    let kc = idp.keycloak();
    let profile = json!({"attributes": [{"name": "username"}, {"name": "email"}, {"name": "tenantId"},
        {"name": "landlordSagaId"}, {"name": "role"}]});
    let url = kc.admin_url(&[SHARED_REALM, "users", "profile"], &[]);
    let reply =
        kc.send(reqwest::Method::PUT, url, Some(landlord_idp::keycloak::Body::Json(&profile)), "profile").await?;
    assert!(reply.status.is_success(), "{reply:?}");
    let error = run(&idp, "suspend", &step(&spec, "suspend", false)).await.err().context("not refused")?;
    assert!(!error.retryable && error.code == "refused", "{error}");
    assert!(error.message.contains("landlordSuspendedBy"), "{error}");
    let admin = double.users(SHARED_REALM).into_iter().find(|u| u["id"] == admin_id.as_str()).context("no admin")?;
    assert_eq!(admin["enabled"], true, "no user was disabled");
    assert_eq!(double.organizations(SHARED_REALM)[0]["enabled"], true, "nor the organization");
    Ok(())
}
