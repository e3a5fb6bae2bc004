//! What the admin API (and the dashboard) ask the server's driver task, over a channel: the
//! driver owns every rollout, so these are the only way to change one.

use tokio::sync::oneshot;

use super::agents::{RestartReport, RestartRequest};
use super::types::{RolloutRequest, RolloutView};
use crate::FleetError;
use crate::rollout::RolloutId;

/// An operator action on an existing rollout.
pub(crate) use opamp_rollout::fleet::Operation;

type Reply<T> = oneshot::Sender<Result<T, FleetError>>;

/// What the admin API asks the driver.
#[derive(Debug)]
pub(crate) enum Request {
    Create {
        request: RolloutRequest,
        by: String,
        reply: Reply<RolloutView>,
    },
    Operate {
        id: RolloutId,
        operation: Operation,
        by: String,
        reply: Reply<RolloutView>,
    },
    Restart {
        request: RestartRequest,
        by: String,
        reply: Reply<RestartReport>,
    },
}
