//! What a handler returns, and what the bus can refuse.

use std::fmt;

/// Why a handler did not handle a message. The host maps it to the broker: `Retry` redelivers
/// the message later, `Reject` sends it to the error queue at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// A transient failure (a dependency is down, a lock is held): try again later.
    Retry(String),
    /// A permanent failure (the message is invalid, a rule forbids it): do not try again.
    Reject(String),
}

impl HandleError {
    /// A transient failure with its reason.
    pub fn retry(reason: impl Into<String>) -> Self {
        HandleError::Retry(reason.into())
    }

    /// A permanent failure with its reason.
    pub fn reject(reason: impl Into<String>) -> Self {
        HandleError::Reject(reason.into())
    }
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::Retry(reason) => write!(f, "retry: {reason}"),
            HandleError::Reject(reason) => write!(f, "reject: {reason}"),
        }
    }
}

impl std::error::Error for HandleError {}

/// What every handler returns.
pub type HandlerResult = Result<(), HandleError>;

/// Why the host refused a publish, send or reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The plugin may not do this (for instance it passed its publish limit).
    Denied(String),
    /// The message is malformed (for instance its body is over the size limit).
    Invalid(String),
    /// The bus cannot take the message now.
    Unavailable(String),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Denied(reason) => write!(f, "denied: {reason}"),
            BusError::Invalid(reason) => write!(f, "invalid: {reason}"),
            BusError::Unavailable(reason) => write!(f, "unavailable: {reason}"),
        }
    }
}

impl std::error::Error for BusError {}

/// `?` on a publish inside a handler: an unavailable bus is worth a retry, a refused or
/// malformed message is not.
impl From<BusError> for HandleError {
    fn from(error: BusError) -> Self {
        match error {
            BusError::Unavailable(_) => HandleError::Retry(error.to_string()),
            BusError::Denied(_) | BusError::Invalid(_) => HandleError::Reject(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_bus_is_retried() {
        assert!(matches!(
            HandleError::from(BusError::Unavailable("down".into())),
            HandleError::Retry(_)
        ));
        assert!(matches!(
            HandleError::from(BusError::Denied("limit".into())),
            HandleError::Reject(_)
        ));
        assert!(matches!(
            HandleError::from(BusError::Invalid("size".into())),
            HandleError::Reject(_)
        ));
    }
}
