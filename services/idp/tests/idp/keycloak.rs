//! Talking to Keycloak: conflicts, expired tokens, outages, TLS, the double
//! itself.

use landlord_idp::keycloak::Body;

use super::helpers::*;

#[tokio::test]
async fn an_object_carrying_another_tenants_id_is_a_permanent_conflict() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    provision(&idp, &tenant("taken", "55555555-eeee", pb::Tier::Bridge)).await?;
    // Another tenant (another id) with the same key: every object is foreign.
    let intruder = tenant("taken", "66666666-ffff", pb::Tier::Bridge);
    for (action, what) in [
        ("create_realm", "realm tenant-taken"),
        ("create_client", "client taken-app"),
        ("create_admin_user", "user ada@taken.test"),
    ] {
        let error = run(&idp, action, &command(&intruder, "x", false)).await.expect_err("foreign object");
        assert!(!error.retryable && error.code == "conflict", "{action}: {error}");
        assert!(error.message.contains(what) && error.message.contains("does not belong"), "{error}");
    }
    // Nor will its compensations delete them: they leave them, succeed
    // (a stuck compensation helps nobody) and say why.
    for (action, what) in [
        ("delete_admin_user", "user ada@taken.test in realm tenant-taken"),
        ("delete_client", "client taken-app in realm tenant-taken"),
        ("delete_realm", "realm tenant-taken"),
    ] {
        let ok = run(&idp, action, &command(&intruder, "x", true)).await?;
        assert_eq!(ok.outputs["fenced"], format!("{what} belongs to tenant 55555555-eeee"), "{action}");
    }
    assert!(double.realm_names().contains(&"tenant-taken".to_owned()));
    assert_eq!(double.users("tenant-taken").len(), 1);
    assert!(double.clients("tenant-taken").iter().any(|c| c["clientId"] == "taken-app"));
    // Pooled: the admin's address is taken in the shared realm by another tenant.
    let pooled = tenant("poolone", "77777777-aaaa", pb::Tier::Pooled);
    provision(&idp, &pooled).await?;
    let mut other = tenant("pooltwo", "88888888-bbbb", pb::Tier::Pooled);
    other.admin = pooled.admin.clone();
    run(&idp, "create_realm", &command(&other, "x", false)).await?;
    let error = run(&idp, "create_admin_user", &command(&other, "x", false)).await.expect_err("taken");
    assert!(!error.retryable && error.code == "conflict", "{error}");
    Ok(())
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_call_retried_once() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("expiry", "99999999-cccc", pb::Tier::Bridge);
    run(&idp, "create_realm", &command(&spec, "idp_realm", false)).await?;
    let tokens_before = double.requests_to("POST", "/protocol/openid-connect/token").len();
    assert_eq!(tokens_before, 1, "the token is cached between calls");
    double.expire_tokens();
    run(&idp, "create_client", &command(&spec, "idp_client", false)).await?;
    let requests = double.requests();
    let unauthorized: Vec<_> = requests.iter().filter(|r| r.status == 401).collect();
    assert_eq!(unauthorized.len(), 1, "one refused call");
    assert_eq!(double.requests_to("POST", "/protocol/openid-connect/token").len(), 2, "one new token");
    let retried = requests.iter().rposition(|r| r.status == 401).context("no 401")?;
    assert_eq!(requests[retried + 1].path, "/realms/master/protocol/openid-connect/token");
    assert_eq!(
        (requests[retried + 2].path.as_str(), requests[retried + 2].status),
        (requests[retried].path.as_str(), 201)
    );
    // A token that stays refused is retryable, not a reason to undo the tenant.
    double.fail_next(3, 401);
    let error = run(&idp, "create_admin_user", &command(&spec, "idp_admin_user", false)).await.expect_err("401");
    assert!(error.retryable, "{error}");
    Ok(())
}

#[tokio::test]
async fn keycloak_trouble_is_retryable_then_succeeds_and_a_refusal_is_permanent() -> Result<()> {
    let mut double = double().await?;
    let idp = idp(&double)?;
    let spec = tenant("flaky", "aaaaaaaa-dddd", pb::Tier::Bridge);
    let cmd = command(&spec, "idp_realm", false);
    for status in [500, 503, 429] {
        double.fail_next(1, status);
        let error = run(&idp, "create_realm", &cmd).await.expect_err("failure injected");
        assert!(error.retryable, "{status}: {error}");
        assert!(error.message.contains(&status.to_string()), "{error}");
    }
    double.fail_next(1, 403);
    let error = run(&idp, "create_realm", &cmd).await.expect_err("forbidden");
    assert!(!error.retryable && error.code == "keycloak_forbidden", "{error}");
    double.stop().await?;
    let error = run(&idp, "create_realm", &cmd).await.expect_err("stopped");
    assert!(error.retryable && error.code == "keycloak_unreachable", "{error}");
    double.restart().await?;
    let ok = run(&idp, "create_realm", &cmd).await?;
    assert_eq!(ok.outputs["idp.realm"], "tenant-flaky");
    Ok(())
}

#[tokio::test]
async fn keycloak_over_https_is_reached_only_with_a_trusted_certificate() -> Result<()> {
    let double = double().await?;
    let https = TlsFront::start(&double.url()).await?;
    let mut env = env_for(&double);
    env.push(("LANDLORD_KEYCLOAK_URL".into(), https.url.clone()));
    let spec = tenant("secure", "aaaaaaaa-eeee", pb::Tier::Bridge);
    let cmd = command(&spec, "idp_realm", false);
    // The system's roots do not know the test CA: refused at the
    // handshake, retryable (an operator can fix the trust store), nothing
    // reached Keycloak.
    let untrusting = Idp::new(Settings::from_env(&Env::from_pairs(env.clone()))?, None)?;
    let error = run(&untrusting, "create_realm", &cmd).await.expect_err("unknown issuer");
    assert!(error.retryable && error.code == "keycloak_unreachable", "{error}");
    assert!(error.message.contains("certificate") && error.message.contains("UnknownIssuer"), "{error}");
    assert!(double.requests_to("POST", "/admin/realms").is_empty());
    env.push(("LANDLORD_TLS_CA_FILE".into(), tls::ca_file().display().to_string()));
    let trusting = Idp::new(Settings::from_env(&Env::from_pairs(env))?, None)?;
    let ok = run(&trusting, "create_realm", &cmd).await?;
    assert_eq!(ok.outputs["idp.realm"], "tenant-secure");
    assert_eq!(double.requests_to("POST", "/admin/realms").len(), 1);
    Ok(())
}

#[tokio::test]
async fn the_double_answers_501_to_what_it_does_not_implement() -> Result<()> {
    let double = double().await?;
    let idp = idp(&double)?;
    let kc = idp.keycloak();
    for (method, segments) in [
        (reqwest::Method::GET, vec![SHARED_REALM, "groups"]),
        (reqwest::Method::DELETE, vec![SHARED_REALM, "identity-provider", "instances", "x"]),
    ] {
        let reply = kc.send(method.clone(), kc.admin_url(&segments, &[]), None, "an unknown call").await?;
        assert_eq!(reply.status.as_u16(), 501, "{method} {segments:?}: {:?}", reply.body);
    }
    // A realm that does not exist is still Keycloak's 404, on the routes
    // the double knows; an unknown call under it is still 501.
    let reply = kc.send(reqwest::Method::GET, kc.admin_url(&["nowhere"], &[]), None, "a missing realm").await?;
    assert_eq!(reply.status.as_u16(), 404);
    for (method, segments, status) in [
        (reqwest::Method::PUT, vec!["nowhere"], 404),
        (reqwest::Method::POST, vec!["nowhere", "logout-all"], 404),
        (reqwest::Method::GET, vec!["nowhere", "organizations", "x", "members"], 404),
        (reqwest::Method::POST, vec!["nowhere", "users", "x", "logout"], 404),
        (reqwest::Method::GET, vec!["nowhere", "groups"], 501),
        (reqwest::Method::POST, vec!["nowhere", "partialImport"], 501),
    ] {
        let body = json!({});
        let reply = kc.send(method.clone(), kc.admin_url(&segments, &[]), Some(Body::Json(&body)), "a call").await?;
        assert_eq!(reply.status.as_u16(), status, "{method} {segments:?}: {:?}", reply.body);
    }
    Ok(())
}

#[tokio::test]
async fn the_doubles_token_endpoint_authenticates_clients_as_keycloak_does() -> Result<()> {
    let double = double().await?;
    let http = landlord_runtime::http::client_builder(&Default::default()).build()?;
    let token = |realm: &str, basic: Option<(&str, &str)>, form: &str| {
        let mut request = http
            .post(format!("{}/realms/{realm}/protocol/openid-connect/token", double.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send()
    };
    let (client, secret) = KEYCLOAK_DOUBLE_CLIENT;
    // client_secret_basic and client_secret_post.
    assert_eq!(token("master", Some((client, secret)), "grant_type=client_credentials").await?.status(), 200);
    let post = format!("grant_type=client_credentials&client_id={client}&client_secret={secret}");
    assert_eq!(token("master", None, &post).await?.status(), 200);
    let wrong = token("master", Some((client, "nope")), "grant_type=client_credentials").await?;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await?["error"], "unauthorized_client");
    let unknown = token("master", Some(("stranger", "x")), "grant_type=client_credentials").await?;
    assert_eq!(unknown.json::<Value>().await?["error"], "invalid_client");
    // A public client has no service account; the confidential one no direct grants.
    let public = token("master", None, "grant_type=client_credentials&client_id=admin-cli").await?;
    assert_eq!(public.status(), 401);
    let (admin, password) = KEYCLOAK_DOUBLE_ADMIN;
    let direct = format!("grant_type=password&username={admin}&password={password}");
    assert_eq!(token("master", Some((client, secret)), &direct).await?.status(), 400);
    let signed_in = token("master", None, &format!("{direct}&client_id=admin-cli")).await?;
    assert_eq!(signed_in.status(), 200);
    // The refresh token works while the session lives.
    let refresh = signed_in.json::<Value>().await?["refresh_token"].as_str().context("no refresh token")?.to_owned();
    let again = token("master", None, &format!("grant_type=refresh_token&client_id=admin-cli&refresh_token={refresh}"));
    assert_eq!(again.await?.status(), 200);
    // Master tokens only for the admin API: a missing realm is 404.
    let missing = token("nowhere", None, "grant_type=client_credentials&client_id=admin-cli").await?;
    assert_eq!(missing.status(), 404);
    // The new temporary password of a provisioned admin is not enough to sign in.
    let idp = idp(&double)?;
    let spec = tenant("temporary", "temporary-id", pb::Tier::Bridge);
    provision(&idp, &spec).await?;
    let form = "grant_type=password&client_id=admin-cli&username=ada@temporary.test&password=whatever";
    let refused = token("tenant-temporary", None, form).await?;
    assert_eq!(refused.status(), 401, "a wrong password");
    let temporary = posted_password(&double, "tenant-temporary")?;
    // Form-encoded: a generated password may hold `+`, `&` or `=`.
    let temporary: String = temporary
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect();
    let form = format!("grant_type=password&client_id=admin-cli&username=ada@temporary.test&password={temporary}");
    let refused = token("tenant-temporary", None, &form).await?;
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await?["error_description"], "Account is not fully set up");
    Ok(())
}
