//! The one error type every layer returns: a machine-readable code, the offending field,
//! what went wrong and how to fix it. It crosses process boundaries as JSON unchanged.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Broad class of a failure; clients branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// An argument is missing, has the wrong type or an unacceptable value.
    InvalidArgument,
    /// The named run, checkpoint or template does not exist.
    NotFound,
    /// The caller's `expected_version` is stale: someone else changed the run first.
    Conflict,
    /// The request is valid but the run is not in a state that allows it.
    InvalidState,
    /// A payload exceeds a documented size limit.
    TooLarge,
    /// The database could not be opened, read or written.
    Storage,
    /// The owning process of the database could not be reached.
    Unavailable,
    /// A bug: something that should not happen.
    Internal,
}

/// A structured, user-facing error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BatonError {
    pub code: ErrorCode,
    /// The argument (JSON path) at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// What the caller should do instead.
    pub fix: String,
}

pub type BatonResult<T> = Result<T, BatonError>;

impl BatonError {
    pub fn new(code: ErrorCode, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { code, field: None, message: message.into(), fix: fix.into() }
    }

    /// An invalid-argument error about `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message, fix).with_field(field)
    }

    pub fn not_found(field: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message, fix).with_field(field)
    }

    pub fn invalid_state(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidState, message, fix)
    }

    pub fn storage(message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(ErrorCode::Storage, message, fix)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message, "This is a bug in baton; retry, and report it with the server log if it persists.")
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Storage => "storage",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for BatonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.as_str();
        match &self.field {
            Some(field) => write!(f, "{code} (field `{field}`): {} Fix: {}", self.message, self.fix),
            None => write!(f, "{code}: {} Fix: {}", self.message, self.fix),
        }
    }
}

impl std::error::Error for BatonError {}

impl From<serde_json::Error> for BatonError {
    fn from(err: serde_json::Error) -> Self {
        BatonError::internal(format!("stored record could not be decoded: {err}"))
    }
}
