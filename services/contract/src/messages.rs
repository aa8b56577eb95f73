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
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
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
    ClerkEvent,
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
    /// Served by the orchestrator: cancel a running saga.
    pub const ORCHESTRATOR_CANCEL: Action = Action::new("orchestrator", "cancel", None);

    pub const fn new(service: &'static str, name: &'static str, compensation: Option<&'static str>) -> Self {
        Self { service, name, compensation }
    }
}
