//! The three steps and their compensations: idempotent, tiered, the password
//! delivered once.

use super::helpers::*;

#[tokio::test]
async fn creating_twice_is_creating_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("twice", "22222222-bbbb", pb::Tier::Silo);
    let first = provision(&idp, &spec).await?;
    let second = provision(&idp, &spec).await?;
    assert_eq!(first, second, "a repeat reports the same resources and outputs");
    assert_eq!(double.realm_names().iter().filter(|r| *r == "tenant-twice").count(), 1);
    let realm = double.realm("tenant-twice").context("no realm")?;
    assert_eq!(realm["displayName"], "twice Inc.");
    assert_eq!(realm["loginTheme"], "landlord");
    assert_eq!(realm["accessTokenLifespan"], 300);
    assert_eq!(realm["smtpServer"]["host"], "mail.test");
    assert_eq!(realm["smtpServer"]["starttls"], "true");
    assert_eq!(owner(&realm), Some("22222222-bbbb"));
    let clients: Vec<Value> =
        double.clients("tenant-twice").into_iter().filter(|c| c["clientId"] == "twice-app").collect();
    assert_eq!(clients.len(), 1);
    let users = double.users("tenant-twice");
    assert_eq!(users.len(), 1);
    let user = &users[0];
    assert_eq!(user["username"], "ada@twice.test");
    assert_eq!(user["firstName"], "Ada");
    assert_eq!(user["emailVerified"], false);
    assert_eq!(user["attributes"]["tenantId"], json!(["22222222-bbbb"]), "the realm keeps admin attributes");
    assert_eq!(user["attributes"]["role"], json!(["tenant-admin"]));
    assert_eq!(user["requiredActions"], json!(["UPDATE_PASSWORD"]));
    let management = double.clients("tenant-twice").into_iter().find(|c| c["clientId"] == "realm-management");
    let management = management.context("no realm-management")?;
    let roles = double.client_roles_of(
        "tenant-twice",
        user["id"].as_str().unwrap_or_default(),
        management["id"].as_str().unwrap_or_default(),
    );
    assert_eq!(roles, ["realm-admin"]);
    assert_eq!(double.actions_emails().len(), 1, "the password mail goes out once");
    // The repeat met 409s and looked the objects up.
    assert_eq!(double.requests_to("POST", "/admin/realms").iter().filter(|r| r.status == 409).count(), 1);
    assert_eq!(double.requests_to("POST", "/tenant-twice/clients").iter().filter(|r| r.status == 409).count(), 1);
    assert_eq!(double.requests_to("POST", "/tenant-twice/users").iter().filter(|r| r.status == 409).count(), 1);
    Ok(())
}

#[tokio::test]
async fn the_welcome_mail_delivery_seals_the_password_once_and_compensation_purges_it() -> Result<()> {
    let double = double().await?;
    let key = SecretsKey::generate()?;
    let (idp, secrets) = welcome_email_idp(&double, &key).await?;
    let spec = tenant("sealed", "cccccccc-1111", pb::Tier::Bridge);
    let first = provision(&idp, &spec).await?;
    let password = posted_password(&double, "tenant-sealed")?;
    let reference = SecretRef::parse(&first[2].outputs["idp.admin_password_ref"]).context("no reference")?;
    assert_eq!(reference.as_str(), "landlord-secret:idp/cccccccc-1111/admin-password");
    assert_eq!(secrets.get(&reference).await?.as_deref(), Some(password.as_str()));
    for ok in &first {
        assert!(!format!("{ok:?}").contains(&password), "the password is in a step result");
    }
    let user = &double.users("tenant-sealed")[0];
    assert_eq!(user["requiredActions"], json!([]), "the temporary credential is what forces a new password");
    assert!(double.actions_emails().is_empty(), "no Keycloak mail");
    // A redelivered command (a new worker, same store) keeps the first password.
    let again = Idp::new(welcome_email_settings(&double, &key)?, Some(secrets.clone()))?;
    assert_eq!(provision(&again, &spec).await?, first);
    assert_eq!(secrets.get(&reference).await?.as_deref(), Some(password.as_str()));
    // Compensation deletes the user and purges the password, twice = once.
    for _ in 0..2 {
        let mut cmd = command(&spec, "idp_admin_user", true);
        cmd.resources = first[2].resources.clone();
        run(&idp, "delete_admin_user", &cmd).await?;
    }
    assert!(secrets.get(&reference).await?.is_none());
    assert!(double.users("tenant-sealed").is_empty());
    Ok(())
}

#[tokio::test]
async fn the_client_is_public_with_pkce_redirect_uris_and_web_origins() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pkce", "33333333-cccc", pb::Tier::Bridge);
    provision(&idp, &spec).await?;
    let posted = double.requests_to("POST", "/admin/realms/tenant-pkce/clients");
    let client: Value = serde_json::from_str(&posted.first().context("no client creation")?.body)?;
    assert_eq!(client["clientId"], "pkce-app");
    assert_eq!(client["publicClient"], true);
    assert_eq!(client["standardFlowEnabled"], true);
    assert_eq!(client["implicitFlowEnabled"], false);
    assert_eq!(client["directAccessGrantsEnabled"], false);
    assert_eq!(client["attributes"]["pkce.code.challenge.method"], "S256");
    assert_eq!(client["attributes"]["tenantId"], "33333333-cccc");
    assert_eq!(client["redirectUris"], json!(["https://pkce.example.com/*", "https://app.pkce.io/*"]));
    assert_eq!(client["webOrigins"], json!(["https://pkce.example.com", "https://app.pkce.io"]));
    // The password link returns the admin to the application.
    let email = double.requests_to("PUT", "/execute-actions-email");
    let query = &email.first().context("no password mail")?.query;
    assert!(
        query.contains("client_id=pkce-app") && query.contains("redirect_uri=https%3A%2F%2Fpkce.example.com%2F"),
        "{query}"
    );
    Ok(())
}

#[tokio::test]
async fn compensating_twice_is_compensating_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("undo", "44444444-dddd", pb::Tier::Bridge);
    let created = provision(&idp, &spec).await?;
    for _ in 0..2 {
        for ((action, step), ok) in
            [("delete_admin_user", "idp_admin_user"), ("delete_client", "idp_client"), ("delete_realm", "idp_realm")]
                .into_iter()
                .zip(created.iter().rev())
        {
            let mut cmd = command(&spec, step, true);
            cmd.resources = ok.resources.clone();
            run(&idp, action, &cmd).await?;
        }
    }
    assert!(!double.realm_names().contains(&"tenant-undo".to_owned()));
    let deletes = double.requests().into_iter().filter(|r| r.method == "DELETE").collect::<Vec<_>>();
    let summary: Vec<(String, u16)> = deletes.iter().map(|r| (r.path.clone(), r.status)).collect();
    assert_eq!(deletes.len(), 3, "one delete each, the repeat found them gone: {summary:?}");
    assert!(deletes.iter().all(|r| r.status == 204), "{summary:?}");
    Ok(())
}

#[tokio::test]
async fn a_pooled_tenant_is_an_organization_in_the_shared_realm_with_its_admin_as_member() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("pooled", "bbbbbbbb-eeee", pb::Tier::Pooled);
    let first = provision(&idp, &spec).await?;
    assert_eq!(provision(&idp, &spec).await?, first, "twice is once");
    assert!(!double.realm_names().contains(&"tenant-pooled".to_owned()), "no realm of its own");
    let orgs = double.organizations(SHARED_REALM);
    assert_eq!(orgs.len(), 1);
    let org = &orgs[0];
    assert_eq!((org["name"].as_str(), org["alias"].as_str()), (Some("pooled"), Some("pooled")));
    assert_eq!(org["attributes"]["tenantId"], json!(["bbbbbbbb-eeee"]));
    assert_eq!(org["domains"][0]["name"], "pooled.example.com");
    assert_eq!(first[0].outputs["idp.organization_id"], org["id"].as_str().unwrap_or_default());
    assert_eq!(first[1].outputs["idp.client_mode"], "shared");
    assert!(first[1].resources.is_empty(), "no client was created");
    let users = double.users(SHARED_REALM);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["attributes"]["tenantId"], json!(["bbbbbbbb-eeee"]));
    let members = double.members(SHARED_REALM, org["id"].as_str().unwrap_or_default());
    assert_eq!(members, [users[0]["id"].as_str().unwrap_or_default()]);
    // The member body is the bare user id, as Keycloak reads it.
    let added = double.requests_to("POST", "/members");
    assert_eq!(added[0].body, users[0]["id"].as_str().unwrap_or_default());
    assert_eq!(double.actions_emails().len(), 1);
    // Compensation removes the user and the organization, twice = once.
    for _ in 0..2 {
        let mut cmd = command(&spec, "idp_admin_user", true);
        cmd.resources = first[2].resources.clone();
        run(&idp, "delete_admin_user", &cmd).await?;
        run(&idp, "delete_client", &command(&spec, "idp_client", true)).await?;
        let mut cmd = command(&spec, "idp_realm", true);
        cmd.resources = first[0].resources.clone();
        run(&idp, "delete_realm", &cmd).await?;
    }
    assert!(double.organizations(SHARED_REALM).is_empty());
    assert!(double.users(SHARED_REALM).is_empty());
    assert!(double.realm_names().contains(&SHARED_REALM.to_owned()), "the shared realm stays");
    Ok(())
}
