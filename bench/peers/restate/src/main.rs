//! Issue 27 item 3: Landlord's provisioning pipeline as a Restate service,
//! measured next to Landlord's full stack and the floor (`just
//! bench-peers`, README.md).
//!
//! `restate-peer serve` runs the Restate service endpoint (the bench starts
//! it, with the services' settings and `RESTATE_PEER_ADDR`); `restate-peer`
//! alone runs the bench.

mod bench;
mod cpu;
mod pipeline;
mod service;
mod steps;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use landlord_runtime::Env;

#[tokio::main]
async fn main() -> Result<()> {
    landlord_runtime::http::install_crypto_provider();
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let addr = std::env::var("RESTATE_PEER_ADDR").context("RESTATE_PEER_ADDR")?;
        let steps = Arc::new(steps::Steps::new(&Env::process(), "restate-peer").await?);
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        service::serve(steps, listener).await;
        return Ok(());
    }
    bench::main().await
}
