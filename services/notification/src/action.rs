//! The notification worker's actions, decoded once from the command subject
//! (`landlord.v1.cmd.notification.<action>`), and the one match that runs
//! them.

use std::str::FromStr;

use landlord_contract::pb;
use landlord_runtime::{DeliveryInfo, StepFailure, StepService, UnknownAction};

use crate::{Kind, Notifier, SERVICE, mail_id};

/// What a notification command asks for: which mail to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `send_welcome`: the pipeline's last step.
    SendWelcome,
    /// `send_failure`: sent when a tenant could not be set up.
    SendFailure,
    /// `send_suspended`: the suspend operation's last step.
    SendSuspended,
    /// `send_resumed`: the resume (and restore) operation's last step.
    SendResumed,
    /// `send_deletion_scheduled`: the offboard operation's last step.
    SendDeletionScheduled,
    /// `send_deleted`: the purge's last step.
    SendDeleted,
    /// `send_signup_verification`: a sign-up's link, asked by the gateway
    /// outside any saga (docs/signup.md).
    SendSignupVerification,
}

impl Action {
    /// The template the action sends.
    pub fn kind(self) -> Kind {
        match self {
            Self::SendWelcome => Kind::Welcome,
            Self::SendFailure => Kind::ProvisioningFailed,
            Self::SendSuspended => Kind::Suspended,
            Self::SendResumed => Kind::Resumed,
            Self::SendDeletionScheduled => Kind::DeletionScheduled,
            Self::SendDeleted => Kind::Deleted,
            Self::SendSignupVerification => Kind::SignupVerification,
        }
    }
}

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "send_welcome" => Ok(Self::SendWelcome),
            "send_failure" => Ok(Self::SendFailure),
            "send_suspended" => Ok(Self::SendSuspended),
            "send_resumed" => Ok(Self::SendResumed),
            "send_deletion_scheduled" => Ok(Self::SendDeletionScheduled),
            "send_deleted" => Ok(Self::SendDeleted),
            "send_signup_verification" => Ok(Self::SendSignupVerification),
            other => Err(UnknownAction::new(SERVICE, other)),
        }
    }
}

impl StepService for Notifier {
    type Action = Action;

    async fn execute(
        &self,
        action: Action,
        tenant: &pb::TenantSpec,
        command: &pb::StepCommand,
        delivery: &DeliveryInfo,
    ) -> Result<pb::StepOk, StepFailure> {
        if command.compensate {
            // A sent mail cannot be taken back; there is nothing to undo.
            return Ok(pb::StepOk::default());
        }
        let kind = action.kind();
        tracing::debug!(template = kind.name(), "sending");
        self.send(kind, tenant, command, &mail_id(command, delivery)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decode_by_name() {
        assert_eq!("send_welcome".parse::<Action>().map(Action::kind), Ok(Kind::Welcome));
        assert_eq!("send_failure".parse::<Action>().map(Action::kind), Ok(Kind::ProvisioningFailed));
        assert!("send_fax".parse::<Action>().is_err());
        for (action, kind) in [
            (landlord_contract::Action::NOTIFICATION_SEND_SUSPENDED, Kind::Suspended),
            (landlord_contract::Action::NOTIFICATION_SEND_RESUMED, Kind::Resumed),
            (landlord_contract::Action::NOTIFICATION_SEND_DELETION_SCHEDULED, Kind::DeletionScheduled),
            (landlord_contract::Action::NOTIFICATION_SEND_DELETED, Kind::Deleted),
            (landlord_contract::Action::NOTIFICATION_SEND_SIGNUP_VERIFICATION, Kind::SignupVerification),
        ] {
            assert_eq!(action.name.parse::<Action>().map(Action::kind), Ok(kind));
        }
    }
}
