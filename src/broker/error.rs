//! Broker errors, mapped to gRPC status codes at the front door.

use super::link::LinkError;
use crate::wire::messages::ErrorCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl BrokerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Self::InvalidArgument(_) | Self::AlreadyExists(_) => ErrorCode::InvalidArgument,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Self::Link(e) => e.code(),
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// An actor that should be running was not (the broker is stopping).
    pub fn mailbox(e: actix::MailboxError) -> Self {
        Self::Unavailable(format!("the broker is shutting down ({e})"))
    }
}
