//! The stack's bus users (issue 28, docs/deploy.md): NATS runs
//! with deploy/nats/accounts.conf — its names moved to the stack's
//! namespace, its passwords generated per run
//! ([`NatsServer::user_password`]) — so every client must say who it is
//! and may do only what its user may. Each service binary connects as its
//! own user ([`Stack::service_env_for`]); the CLI and the tests' own
//! connections as the operator ([`Stack::connect`]), or as the platform
//! user where all they do is ask for tenants ([`Stack::connect_as`]).
//!
//! A stack on a cluster ([`Stack::use_cluster`]) keeps the bus users when
//! the cluster was started with them (`NatsCluster::start_with_accounts`,
//! as the cluster test and `just bench-cluster` start it); on one without,
//! everyone connects without credentials.

use anyhow::Result;
use landlord_runtime::Broker;
use landlord_runtime::nats_auth::{NatsAuth, NatsCredentials, PASSWORD_VAR, USER_VAR};
use landlord_testkit::NatsServer;

use crate::Stack;

/// The CLI's and the operators' bus user: every Landlord subject and
/// every JetStream call on the four streams, no key-value bucket.
pub const OPERATOR: &str = "operator";

/// The example platform service's user: may only ask for tenants
/// (`TenantRequested`) and read events.
pub const PLATFORM: &str = "platform";

impl Stack {
    /// Where clients reach NATS: the stack's server, or the cluster's
    /// nodes (comma-separated) after [`Self::use_cluster`].
    pub fn nats_url(&self) -> String {
        let cluster = self.overrides.iter().rev().find(|(k, _)| k == "LANDLORD_NATS_URL");
        cluster.map_or_else(|| self.nats.url(), |(_, url)| url.clone())
    }

    /// Whether clients must connect as a bus user (the accounts
    /// configuration is on).
    pub fn has_bus_users(&self) -> bool {
        self.accounts
    }

    /// The variables that make a Landlord process connect as bus user
    /// `user` (`LANDLORD_NATS_USER` and `LANDLORD_NATS_PASSWORD`; the
    /// runtime derives the inbox prefix `_INBOX_<user>` from them). None
    /// without accounts.
    pub fn nats_env(&self, user: &str) -> Vec<(String, String)> {
        if !self.accounts {
            return Vec::new();
        }
        vec![(USER_VAR.to_owned(), user.to_owned()), (PASSWORD_VAR.to_owned(), NatsServer::user_password(user))]
    }

    /// `user`'s credentials and inbox prefix, for a connection in process.
    pub fn nats_auth(&self, user: &str) -> NatsAuth {
        if !self.accounts {
            return NatsAuth::default();
        }
        NatsAuth {
            credentials: NatsCredentials::UserPassword {
                user: user.to_owned(),
                password: NatsServer::user_password(user),
            },
            inbox_prefix: format!("_INBOX_{user}"),
            tls: Default::default(),
        }
    }

    /// A broker as the operator, named `name` (in the server's connection
    /// list): what the tests use to publish requests and read the streams.
    pub async fn connect(&self, name: &str) -> Result<Broker> {
        self.connect_as(OPERATOR, name).await
    }

    /// A broker as bus user `user`, named `name`.
    pub async fn connect_as(&self, user: &str, name: &str) -> Result<Broker> {
        let auth = self.nats_auth(user);
        Ok(Broker::connect_with(&self.nats_url(), name, self.namespace.clone(), &auth).await?)
    }
}
