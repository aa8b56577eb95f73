//! `landlord-gateway`: see the crate docs.
//!
//! `landlord-gateway openapi` prints the OpenAPI document (the committed
//! `services/gateway/openapi.json` is its output).
//!
//! `landlord-gateway mint-token [--scope SCOPES] [--ttl DURATION] [--subject NAME] [--tenant ID]`
//! prints a bearer token signed with `LANDLORD_JWT_SECRET` — how a fresh
//! install gets its first admin token. Scopes are comma- or space-separated
//! (default `tenants:read,tenants:write`; `tenants:purge`, an offboarding
//! without grace period, only when named), the TTL a duration such as `1h`
//! or `30d` (default `1h`), the subject defaults to `admin`. `--tenant`
//! takes a tenant id (the `id` of `GET /v1/tenants/{key}`) and scopes the
//! token to that tenant alone (claim `landlord_tenant`; docs/auth.md).

use std::time::Duration;

use anyhow::Context as _;
use landlord_gateway::{GatewayConfig, Tokens, attach, auth, jwt_secret};
use landlord_runtime::{Config, Env, Service, Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let env = Env::process();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mint-token") => return mint_token(&env, &args[1..]),
        Some("openapi") => {
            print!("{}", landlord_gateway::openapi::pretty());
            return Ok(());
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; usage: landlord-gateway [mint-token ... | openapi]"),
        None => {}
    }
    let config = Config::from(landlord_gateway::SERVICE, &env)?;
    config.require_database()?;
    let gateway = GatewayConfig::from_env(&env)?;
    let telemetry = Telemetry::init(landlord_gateway::SERVICE, config.otlp_endpoint.as_deref())?;
    let mut service = Service::build(config).await?;
    attach(&mut service, gateway).await?;
    let outcome = service.run().await;
    telemetry.shutdown();
    Ok(outcome?)
}

fn mint_token(env: &Env, args: &[String]) -> anyhow::Result<()> {
    // tenants:purge only when asked for by name.
    let mut scopes: Vec<String> = [auth::READ, auth::WRITE].iter().map(|s| (*s).to_owned()).collect();
    let mut ttl = Duration::from_secs(3600);
    let mut subject = "admin".to_owned();
    let mut tenant = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--scope" => {
                scopes = value()?.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                if let Some(unknown) = scopes.iter().find(|s| !auth::SCOPES.contains(&s.as_str())) {
                    anyhow::bail!("unknown scope {unknown:?}; known: {}", auth::SCOPES.join(", "));
                }
            }
            "--ttl" => ttl = humantime_duration(value()?)?,
            "--subject" => subject = value()?.clone(),
            "--tenant" => {
                let raw = value()?;
                // An id, not a key: a key can name another tenant after a purge.
                let id = uuid::Uuid::parse_str(raw).with_context(|| {
                    format!("--tenant takes a tenant id (a UUID, the id of GET /v1/tenants/{{key}}), not {raw:?}")
                })?;
                tenant = Some(id.to_string());
            }
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: landlord-gateway mint-token [--scope S] [--ttl D] [--subject N] \
                 [--tenant ID]"
            ),
        }
    }
    let tokens = Tokens::new(
        &jwt_secret(env)?,
        &env.string("LANDLORD_JWT_AUDIENCE", "landlord"),
        &env.string("LANDLORD_JWT_ISSUER", "landlord"),
    );
    match tenant {
        None => println!("{}", tokens.mint(&subject, &scopes, ttl)),
        Some(tenant) => println!("{}", tokens.mint_scoped(&subject, &scopes, ttl, &tenant)),
    }
    Ok(())
}

fn humantime_duration(raw: &str) -> anyhow::Result<Duration> {
    Env::from_pairs([("TTL", raw)]).duration("TTL", Duration::ZERO).map_err(anyhow::Error::from)
}
