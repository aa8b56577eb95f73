//! What the idp tests share: the Keycloak double, settings, tenants, commands
//! and the steps run as the orchestrator would.

#[allow(unused_imports)]
pub(crate) use std::collections::HashMap;
#[allow(unused_imports)]
pub(crate) use std::time::Duration;

#[allow(unused_imports)]
pub(crate) use anyhow::{Context as _, Result};
#[allow(unused_imports)]
pub(crate) use futures_util::StreamExt as _;
#[allow(unused_imports)]
pub(crate) use landlord_contract::pb;
#[allow(unused_imports)]
pub(crate) use landlord_idp::{Idp, Settings};
#[allow(unused_imports)]
pub(crate) use landlord_runtime::{
    Config, DeliveryInfo, Env, Envelope, KvSecrets, Publisher, SecretRef, SecretsKey, Service, StepFailure, StepService,
};
#[allow(unused_imports)]
pub(crate) use landlord_testkit::tls::{self, TlsFront};
#[allow(unused_imports)]
pub(crate) use landlord_testkit::{
    KEYCLOAK_DOUBLE_ADMIN, KEYCLOAK_DOUBLE_CLIENT, KeycloakDouble, NatsServer, Process, scratch_dir, unique_namespace,
    workspace_binary,
};
#[allow(unused_imports)]
pub(crate) use prost::Message as _;
#[allow(unused_imports)]
pub(crate) use serde_json::{Value, json};

pub(crate) const WAIT: Duration = Duration::from_secs(20);
pub(crate) const SHARED_REALM: &str = "shared";

pub(crate) fn tenant(key: &str, id: &str, tier: pb::Tier) -> pb::TenantSpec {
    pb::TenantSpec {
        tenant_id: id.into(),
        key: key.into(),
        display_name: format!("{key} Inc."),
        plan: "standard".into(),
        tier: tier as i32,
        admin: Some(pb::AdminContact {
            email: format!("Ada@{key}.test"),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
        }),
        domains: vec![format!("{key}.example.com"), format!("app.{key}.io")],
        labels: HashMap::new(),
    }
}

pub(crate) fn command(spec: &pb::TenantSpec, step: &str, compensate: bool) -> pb::StepCommand {
    pb::StepCommand {
        saga_id: format!("saga-{}", spec.key),
        step: step.into(),
        compensate,
        attempt: 1,
        tenant: Some(spec.clone()),
        ..Default::default()
    }
}

pub(crate) fn delivery() -> DeliveryInfo {
    DeliveryInfo::direct(1)
}

/// Settings for the double; password delivery through Keycloak's own mail
/// unless a test asks for the welcome mail.
pub(crate) fn env_for(double: &KeycloakDouble) -> Vec<(String, String)> {
    [
        ("LANDLORD_IDP_PASSWORD_DELIVERY", "keycloak-email".to_owned()),
        ("LANDLORD_KEYCLOAK_URL", double.url()),
        ("LANDLORD_KEYCLOAK_CLIENT_ID", KEYCLOAK_DOUBLE_CLIENT.0.to_owned()),
        ("LANDLORD_KEYCLOAK_CLIENT_SECRET", KEYCLOAK_DOUBLE_CLIENT.1.to_owned()),
        ("LANDLORD_KEYCLOAK_SHARED_REALM", SHARED_REALM.to_owned()),
        ("LANDLORD_KEYCLOAK_TIMEOUT", "5s".to_owned()),
        ("LANDLORD_KEYCLOAK_PUBLIC_URL", "https://sso.test".to_owned()),
        ("LANDLORD_IDP_SMTP_URL", "smtp://mailer:secret@mail.test:2525?tls=starttls".to_owned()),
        ("LANDLORD_IDP_LOGIN_THEME", "landlord".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub(crate) async fn double() -> Result<KeycloakDouble> {
    let double = KeycloakDouble::start().await?;
    // The pooled tier's realm, as an operator sets it up.
    double.add_realm(json!({"realm": SHARED_REALM, "enabled": true, "organizationsEnabled": true,
        "smtpServer": {"host": "mail.test", "port": "25", "from": "noreply@shared.test"}}));
    double.set_unmanaged_attribute_policy(SHARED_REALM, "ADMIN_EDIT");
    Ok(double)
}

pub(crate) fn idp(double: &KeycloakDouble) -> Result<Idp> {
    Ok(Idp::new(Settings::from_env(&Env::from_pairs(env_for(double)))?, None)?)
}

/// The default delivery: the password sealed for the welcome mail.
pub(crate) fn welcome_email_settings(double: &KeycloakDouble, key: &SecretsKey) -> Result<Settings> {
    let mut env = env_for(double);
    env.retain(|(k, _)| k != "LANDLORD_IDP_PASSWORD_DELIVERY");
    env.push(("LANDLORD_SECRETS_KEY".into(), key.to_base64()));
    Ok(Settings::from_env(&Env::from_pairs(env))?)
}

pub(crate) async fn welcome_email_idp(double: &KeycloakDouble, key: &SecretsKey) -> Result<(Idp, KvSecrets)> {
    let settings = welcome_email_settings(double, key)?;
    let client = async_nats::connect(NatsServer::shared().await.url()).await?;
    let jetstream = async_nats::jetstream::new(client);
    let namespace = unique_namespace();
    let secrets = Idp::open_secrets(&settings, &jetstream, namespace.root(), 1).await?.context("no secret store")?;
    Ok((Idp::new(settings, Some(secrets.clone()))?, secrets))
}

/// The temporary password the worker chose, as Keycloak received it.
pub(crate) fn posted_password(double: &KeycloakDouble, realm: &str) -> Result<String> {
    let created = double.requests_to("POST", &format!("/admin/realms/{realm}/users"));
    let body: Value = serde_json::from_str(&created.first().context("no user creation")?.body)?;
    assert_eq!(body["credentials"][0]["temporary"], json!(true));
    Ok(body["credentials"][0]["value"].as_str().context("no password")?.to_owned())
}

/// Runs one action as the runtime would.
pub(crate) async fn run(idp: &Idp, action: &str, command: &pb::StepCommand) -> Result<pb::StepOk, StepFailure> {
    idp.run(action, command, &delivery()).await
}

/// Runs the three forward steps, feeding outputs forward like the orchestrator.
pub(crate) async fn provision(idp: &Idp, spec: &pb::TenantSpec) -> Result<Vec<pb::StepOk>> {
    let mut inputs = HashMap::new();
    let mut results = Vec::new();
    for (action, step) in
        [("create_realm", "idp_realm"), ("create_client", "idp_client"), ("create_admin_user", "idp_admin_user")]
    {
        let mut cmd = command(spec, step, false);
        cmd.inputs = inputs.clone();
        let ok = run(idp, action, &cmd).await?;
        inputs.extend(ok.outputs.clone());
        results.push(ok);
    }
    Ok(results)
}

pub(crate) fn owner(value: &Value) -> Option<&str> {
    match &value["attributes"]["tenantId"] {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}

/// `command` in another saga (a retry of the same tenant).
pub(crate) fn command_in(spec: &pb::TenantSpec, saga: &str, step: &str, compensate: bool) -> pb::StepCommand {
    pb::StepCommand { saga_id: saga.into(), ..command(spec, step, compensate) }
}

/// Runs the three forward steps in `saga`.
pub(crate) async fn provision_in(idp: &Idp, spec: &pb::TenantSpec, saga: &str) -> Result<Vec<pb::StepOk>> {
    let mut inputs = HashMap::new();
    let mut results = Vec::new();
    for (action, step) in
        [("create_realm", "idp_realm"), ("create_client", "idp_client"), ("create_admin_user", "idp_admin_user")]
    {
        let mut cmd = command_in(spec, saga, step, false);
        cmd.inputs = inputs.clone();
        let ok = run(idp, action, &cmd).await?;
        inputs.extend(ok.outputs.clone());
        results.push(ok);
    }
    Ok(results)
}

/// Runs the three compensations of `saga` in reverse, each with what its
/// forward step reported; returns their outputs.
pub(crate) async fn compensate_in(
    idp: &Idp,
    spec: &pb::TenantSpec,
    saga: &str,
    created: &[pb::StepOk],
) -> Result<Vec<HashMap<String, String>>> {
    let mut outputs = Vec::new();
    for ((action, step), ok) in
        [("delete_admin_user", "idp_admin_user"), ("delete_client", "idp_client"), ("delete_realm", "idp_realm")]
            .into_iter()
            .zip(created.iter().rev())
    {
        let mut cmd = command_in(spec, saga, step, true);
        cmd.resources = ok.resources.clone();
        outputs.push(run(idp, action, &cmd).await?.outputs);
    }
    Ok(outputs)
}

/// The saga marker of a representation (a string or a list of one).
pub(crate) fn saga_of(value: &Value) -> Option<&str> {
    match &value["attributes"]["landlordSagaId"] {
        Value::String(s) => Some(s),
        Value::Array(a) => a.first().and_then(Value::as_str),
        _ => None,
    }
}
