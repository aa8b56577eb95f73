//! The service runtime every Landlord service is built on.
//!
//! A service's `main` is: [`Config::from_env`] → [`Telemetry::init`] →
//! [`Service::build`] → [`Service::consume`] with its handlers →
//! [`Service::run`] until SIGTERM/SIGINT → [`Telemetry::shutdown`].
//! Handlers are small async functions over decoded messages; ack, retry and
//! dead-lettering are decided once, in [`consume`].

pub mod broker;
pub mod config;
pub mod consume;
pub mod dead_letters;
pub mod error;
pub mod fence;
pub mod health;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod nats_auth;
pub mod publish;
pub mod secrets;
pub mod service;
pub mod step;
pub mod telemetry;

pub use broker::Broker;
pub use config::{Config, ConfigError, Env};
pub use consume::{Delivery, DeliveryInfo, Handler};
pub use error::{Disposition, ErrorKind, HandlerError};
pub use fence::Fences;
pub use metrics::Metrics;
pub use publish::{Envelope, Publisher};
pub use secrets::{KvSecrets, SecretRef, SecretsKey};
pub use service::Service;
pub use step::{StepFailure, StepService, StepWorker, UnknownAction};
pub use telemetry::Telemetry;
