//! A CONTRACT DOUBLE of the Keycloak Admin REST API — not Keycloak.
//!
//! Keycloak cannot be installed on these machines, so the local stack runs
//! this double in its place (unless `KEYCLOAK_URL` points at a real
//! Keycloak): `landlord_testkit::KeycloakDouble` on a fixed port, with the
//! pooled tier's shared realm set up as an operator would. State lives in
//! memory and is gone when it stops.
//!
//! `keycloak-double [--port PORT] [--shared-realm NAME]` (defaults 18080,
//! `landlord`). It signs in admin `admin`/`admin` (password grant through
//! `admin-cli`) and the client `landlord-idp`/`landlord-idp-secret` (client
//! credentials).

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use landlord_testkit::{KEYCLOAK_DOUBLE_ADMIN, KEYCLOAK_DOUBLE_CLIENT, KeycloakDouble};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<()> {
    let mut port = 18080u16;
    let mut shared_realm = "landlord".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().context("--port needs a value")?.parse().context("--port")?,
            "--shared-realm" => shared_realm = args.next().context("--shared-realm needs a value")?,
            other => anyhow::bail!("unknown argument {other:?}; usage: keycloak-double [--port P] [--shared-realm R]"),
        }
    }
    let double = KeycloakDouble::start_on(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    double.add_realm(json!({"realm": shared_realm, "enabled": true, "organizationsEnabled": true}));
    double.set_unmanaged_attribute_policy(&shared_realm, "ADMIN_EDIT");
    println!(
        "keycloak-double: a CONTRACT DOUBLE of the Keycloak Admin REST API (not Keycloak) on {}; \
         admin {}/{}, client {}/{}, shared realm {shared_realm}",
        double.url(),
        KEYCLOAK_DOUBLE_ADMIN.0,
        KEYCLOAK_DOUBLE_ADMIN.1,
        KEYCLOAK_DOUBLE_CLIENT.0,
        KEYCLOAK_DOUBLE_CLIENT.1,
    );
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
