//! Which message goes where: the event name each lifecycle message is
//! published under, the CloudEvents `type` of every message, and the known
//! command actions with their compensations.

use crate::pb;

/// Lifecycle events, named as the last subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Requested,
    Accepted,
    Rejected,
    ProvisioningStarted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    CompensationStarted,
    StepCompensated,
    Activated,
    ProvisioningFailed,
    Cancelled,
    OperationStarted,
    OperationFailed,
    OperationRejected,
    Suspended,
    Resumed,
    Updated,
    DeletionScheduled,
    Restored,
    Exported,
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 22] = [
        EventKind::Requested,
        EventKind::Accepted,
        EventKind::Rejected,
        EventKind::ProvisioningStarted,
        EventKind::StepStarted,
        EventKind::StepSucceeded,
        EventKind::StepFailed,
        EventKind::CompensationStarted,
        EventKind::StepCompensated,
        EventKind::Activated,
        EventKind::ProvisioningFailed,
        EventKind::Cancelled,
        EventKind::OperationStarted,
        EventKind::OperationFailed,
        EventKind::OperationRejected,
        EventKind::Suspended,
        EventKind::Resumed,
        EventKind::Updated,
        EventKind::DeletionScheduled,
        EventKind::Restored,
        EventKind::Exported,
        EventKind::Deleted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Requested => "requested",
            EventKind::Accepted => "accepted",
            EventKind::Rejected => "rejected",
            EventKind::ProvisioningStarted => "provisioning_started",
            EventKind::StepStarted => "step_started",
            EventKind::StepSucceeded => "step_succeeded",
            EventKind::StepFailed => "step_failed",
            EventKind::CompensationStarted => "compensation_started",
            EventKind::StepCompensated => "step_compensated",
            EventKind::Activated => "activated",
            EventKind::ProvisioningFailed => "provisioning_failed",
            EventKind::Cancelled => "cancelled",
            EventKind::OperationStarted => "operation_started",
            EventKind::OperationFailed => "operation_failed",
            EventKind::OperationRejected => "operation_rejected",
            EventKind::Suspended => "suspended",
            EventKind::Resumed => "resumed",
            EventKind::Updated => "updated",
            EventKind::DeletionScheduled => "deletion_scheduled",
            EventKind::Restored => "restored",
            EventKind::Exported => "exported",
            EventKind::Deleted => "deleted",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The CloudEvents `type` of a message: `landlord.v1.<MessageName>`.
pub trait CeType: prost::Message + Default {
    const CE_TYPE: &'static str;
}

/// A lifecycle event and the subject token it is published under.
pub trait Event: CeType {
    const KIND: EventKind;
}

macro_rules! ce_types {
    ($($ty:ident),* $(,)?) => {
        $(impl CeType for pb::$ty {
            const CE_TYPE: &'static str = concat!("landlord.v1.", stringify!($ty));
        })*
    };
}

macro_rules! events {
    ($($ty:ident => $kind:ident),* $(,)?) => {
        $(impl Event for pb::$ty {
            const KIND: EventKind = EventKind::$kind;
        })*
    };
}

ce_types!(
    TenantRequested,
    TenantAccepted,
    TenantRejected,
    ProvisioningStarted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    CompensationStarted,
    StepCompensated,
    TenantActivated,
    ProvisioningFailed,
    TenantCancelled,
    StepCommand,
    StepResult,
    CancelSaga,
    ResolveCompensation,
    ClerkEvent,
    OperationRequested,
    OperationStarted,
    OperationFailed,
    OperationRejected,
    TenantSuspended,
    TenantResumed,
    TenantUpdated,
    TenantDeletionScheduled,
    TenantRestored,
    TenantExported,
    TenantDeleted,
    MemberCommand,
);

events!(
    TenantRequested => Requested,
    TenantAccepted => Accepted,
    TenantRejected => Rejected,
    ProvisioningStarted => ProvisioningStarted,
    StepStarted => StepStarted,
    StepSucceeded => StepSucceeded,
    StepFailed => StepFailed,
    CompensationStarted => CompensationStarted,
    StepCompensated => StepCompensated,
    TenantActivated => Activated,
    ProvisioningFailed => ProvisioningFailed,
    TenantCancelled => Cancelled,
    OperationStarted => OperationStarted,
    OperationFailed => OperationFailed,
    OperationRejected => OperationRejected,
    TenantSuspended => Suspended,
    TenantResumed => Resumed,
    TenantUpdated => Updated,
    TenantDeletionScheduled => DeletionScheduled,
    TenantRestored => Restored,
    TenantExported => Exported,
    TenantDeleted => Deleted,
);

/// A command action served by one of Landlord's services, with the action
/// that undoes it. Pipelines may also name actions outside this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub service: &'static str,
    pub name: &'static str,
    pub compensation: Option<&'static str>,
}

impl Action {
    pub const IDP_CREATE_REALM: Action = Action::new("idp", "create_realm", Some("delete_realm"));
    pub const IDP_CREATE_CLIENT: Action = Action::new("idp", "create_client", Some("delete_client"));
    pub const IDP_CREATE_ADMIN_USER: Action = Action::new("idp", "create_admin_user", Some("delete_admin_user"));
    pub const DATABASE_PROVISION: Action = Action::new("database", "provision", Some("deprovision"));
    pub const STORAGE_CREATE_BUCKET: Action = Action::new("storage", "create_bucket", Some("delete_bucket"));
    pub const NOTIFICATION_SEND_WELCOME: Action = Action::new("notification", "send_welcome", None);
    pub const NOTIFICATION_SEND_FAILURE: Action = Action::new("notification", "send_failure", None);

    // Lifecycle actions (docs/lifecycle.md). Each takes the tenant as it is
    // (for `update`, as it will be; its compensation gets it as it was).
    pub const IDP_SUSPEND: Action = Action::new("idp", "suspend", Some("resume"));
    pub const IDP_RESUME: Action = Action::new("idp", "resume", Some("suspend"));
    pub const IDP_UPDATE: Action = Action::new("idp", "update", Some("update"));
    pub const IDP_PURGE: Action = Action::new("idp", "purge", None);
    pub const DATABASE_SUSPEND: Action = Action::new("database", "suspend", Some("resume"));
    pub const DATABASE_RESUME: Action = Action::new("database", "resume", Some("suspend"));
    pub const DATABASE_EXPORT: Action = Action::new("database", "export", None);
    pub const DATABASE_PURGE: Action = Action::new("database", "purge", None);
    pub const STORAGE_SUSPEND: Action = Action::new("storage", "suspend", Some("resume"));
    pub const STORAGE_RESUME: Action = Action::new("storage", "resume", Some("suspend"));
    pub const STORAGE_EXPORT: Action = Action::new("storage", "export", None);
    pub const STORAGE_PURGE: Action = Action::new("storage", "purge", None);
    pub const NOTIFICATION_SEND_SUSPENDED: Action = Action::new("notification", "send_suspended", None);
    pub const NOTIFICATION_SEND_RESUMED: Action = Action::new("notification", "send_resumed", None);
    pub const NOTIFICATION_SEND_DELETION_SCHEDULED: Action =
        Action::new("notification", "send_deletion_scheduled", None);
    pub const NOTIFICATION_SEND_DELETED: Action = Action::new("notification", "send_deleted", None);
    /// A sign-up's verification mail (issue 29); outside any saga.
    pub const NOTIFICATION_SEND_SIGNUP_VERIFICATION: Action =
        Action::new("notification", "send_signup_verification", None);
    /// Served by the orchestrator: start a lifecycle saga (OperationRequested).
    pub const ORCHESTRATOR_OPERATE: Action = Action::new("orchestrator", "operate", None);
    /// Served by the orchestrator: cancel a running saga.
    pub const ORCHESTRATOR_CANCEL: Action = Action::new("orchestrator", "cancel", None);
    /// Served by the orchestrator: retry or skip a stuck compensation.
    pub const ORCHESTRATOR_RESOLVE: Action = Action::new("orchestrator", "resolve", None);

    pub const fn new(service: &'static str, name: &'static str, compensation: Option<&'static str>) -> Self {
        Self { service, name, compensation }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    /// Decodes `bytes` as every message a consumer decodes; never panics.
    macro_rules! decode_all {
        ($bytes:expr, $($ty:ident),* $(,)?) => {{
            $(
                if let Ok(message) = pb::$ty::decode($bytes) {
                    // What decoded re-encodes and decodes to the same value.
                    let again = pb::$ty::decode(message.encode_to_vec().as_slice());
                    prop_assert_eq!(again.ok(), Some(message));
                }
            )*
        }};
    }

    fn requested() -> impl Strategy<Value = pb::TenantRequested> {
        let admin = (any::<String>(), any::<String>(), any::<String>())
            .prop_map(|(email, first_name, last_name)| pb::AdminContact { email, first_name, last_name });
        (
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<i32>(),
            proptest::option::of(admin),
            proptest::collection::vec(any::<String>(), 0..4),
            proptest::collection::hash_map(any::<String>(), any::<String>(), 0..4),
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(idempotency_id, key, display_name, plan, tier, admin, domains, labels, retry_of)| {
                pb::TenantRequested {
                    idempotency_id,
                    key,
                    display_name,
                    plan,
                    tier,
                    admin,
                    domains,
                    source: String::new(),
                    labels,
                    retry_of,
                }
            })
    }

    proptest! {
        /// Arbitrary bytes on any subject a consumer reads: decoding fails
        /// or succeeds, and never panics.
        #[test]
        fn prop_decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode_all!(
                bytes.as_slice(),
                TenantRequested,
                TenantAccepted,
                TenantRejected,
                ProvisioningStarted,
                StepStarted,
                StepSucceeded,
                StepFailed,
                CompensationStarted,
                StepCompensated,
                TenantActivated,
                ProvisioningFailed,
                TenantCancelled,
                StepCommand,
                StepResult,
                CancelSaga,
                ClerkEvent,
                MemberCommand,
            );
        }

        /// A request with any field values survives the wire unchanged.
        #[test]
        fn prop_requests_round_trip(request in requested()) {
            let bytes = request.encode_to_vec();
            prop_assert_eq!(pb::TenantRequested::decode(bytes.as_slice()).ok(), Some(request));
        }

        /// CloudEvents attributes from arbitrary headers: read or refused
        /// with the header named, never a panic.
        #[test]
        fn prop_cloudevent_headers_never_panic(
            headers in proptest::collection::hash_map("[a-z-]{1,16}|ce-(id|type|source|time|subject|specversion)", any::<String>(), 0..10)
        ) {
            match crate::CloudEvent::from_headers(|name| headers.get(name).map(String::as_str)) {
                Ok(event) => prop_assert_eq!(Some(&event.ty), headers.get(crate::header::TYPE)),
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }
    }

    #[test]
    fn every_message_type_names_itself() {
        assert_eq!(pb::TenantRequested::CE_TYPE, "landlord.v1.TenantRequested");
        assert_eq!(pb::TenantRejected::KIND, EventKind::Rejected);
    }
}
