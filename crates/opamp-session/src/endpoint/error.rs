//! Why a [`crate::ServerEndpoint`] refused an input.

use opamp_proto::InstanceUid;

use super::ConnectionId;
use crate::SessionError;

/// Why the endpoint refused an input. A refused message changes no agent's state; where
/// the message needs an answer the endpoint queues an error response.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The connection was never opened with [`crate::ServerEndpoint::open_connection`]
    /// (or is already closed): a bug in the caller.
    #[error("{0} is not open")]
    UnknownConnection(ConnectionId),
    /// `AgentToServer.instance_uid` is not 16 bytes.
    #[error("instance_uid must be 16 bytes, got {len}")]
    InvalidInstanceUid {
        /// How many bytes it had.
        len: usize,
    },
    /// Another open WebSocket holds this uid. The first link keeps it until it closes or
    /// goes idle; a second connection claiming it is refused, so an agent impersonating
    /// another cannot take over or change its state.
    #[error("instance {uid} is connected on {holder}; refused on {connection}")]
    UidInUse {
        /// The claimed uid.
        uid: InstanceUid,
        /// The connection that holds it.
        holder: ConnectionId,
        /// The connection that claimed it.
        connection: ConnectionId,
    },
    /// The connection was limited to other uids ([`crate::ServerEndpoint::restrict_connection`]).
    #[error("{connection} may not speak for instance {uid}")]
    NotAuthorized {
        /// The claimed uid.
        uid: InstanceUid,
        /// The connection.
        connection: ConnectionId,
    },
    /// The agent's session refused the message (it answered with an error response).
    #[error(transparent)]
    Session(#[from] SessionError),
}
