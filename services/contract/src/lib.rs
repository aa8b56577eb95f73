//! Landlord's wire contract, in one place.
//!
//! Services share nothing at run time but the broker and this crate: the
//! protobuf messages generated from `proto/landlord/v1`, the subjects and
//! stream names they travel on ([`Namespace`]), the CloudEvents NATS binding
//! ([`CloudEvent`]), the tenant key rule ([`TenantKey`]) and the rule for
//! human-readable text ([`text`]). No service spells
//! a subject, stream or header by hand.

mod cloudevents;
mod messages;
mod namespace;
pub mod tenant_key;
pub mod text;

pub use cloudevents::{CloudEvent, HeaderError, header};
pub use messages::{Action, CeType, Event, EventKind};
pub use namespace::{MEMBER_SERVICE, Namespace, NamespaceError, StreamKind};
pub use tenant_key::{BackendNames, KeyError, TenantKey};
pub use text::TextError;

/// The key every worker's resource metadata names the tenant id under
/// (`Resource.metadata`), one spelling across backends.
pub const RESOURCE_TENANT_ID: &str = "tenant_id";

/// Messages generated from `proto/landlord/v1/*.proto`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/landlord.v1.rs"));
}
