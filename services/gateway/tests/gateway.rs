//! The gateway against a real nats-server and PostgreSQL, with the real
//! orchestrator (in-process, as its own tests run it) and a scripted worker
//! (a test double for the real workers) serving the plans' steps. Each test
//! has its own namespace and database.
//!
//! One test binary: this file declares the modules in tests/gateway/ —
//! [`helpers`] (the harness and what every test shares) and one module per
//! area — and brings the helpers and the common imports into scope for
//! them (`use super::*` in each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use landlord_contract::{StreamKind, pb};
use landlord_gateway::auth::{Audience, Claims, READ, WRITE};
use landlord_gateway::clerk::SigningSecret;
use landlord_gateway::jwks::JwksSettings;
use landlord_gateway::{Tokens, limits::Limits};
use landlord_runtime::http::ExtraRoots;
use landlord_testkit::eventually;
use landlord_testkit::tls::{self, TlsFront};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;

// The crate root is tests/gateway.rs, so its modules are found beside it
// unless told; they live in tests/gateway/ (one test binary).
#[path = "gateway/auth.rs"]
mod auth;
#[path = "gateway/clerk.rs"]
mod clerk;
#[path = "gateway/clerk_members.rs"]
mod clerk_members;
#[path = "gateway/console.rs"]
mod console;
#[path = "gateway/events.rs"]
mod events;
#[path = "gateway/hardening.rs"]
mod hardening;
#[path = "gateway/helpers.rs"]
mod helpers;
#[path = "gateway/lifecycle.rs"]
mod lifecycle;
#[path = "gateway/limits.rs"]
mod limits;
#[path = "gateway/openapi.rs"]
mod openapi;
#[path = "gateway/outbound.rs"]
mod outbound;
#[path = "gateway/properties.rs"]
mod properties;
#[path = "gateway/scoped.rs"]
mod scoped;
#[path = "gateway/signup.rs"]
mod signup;
#[path = "gateway/tenants.rs"]
mod tenants;

use helpers::*;
