//! The daemon's one error type: a stable [`Code`] and a message naming what
//! was wrong. Every stage's failure (answer, listen, store, image, camera)
//! becomes one here, once; the socket writes it as `error {code, message}`
//! and D-Bus as `org.seer.Assistant1.Error.<Code>`, so the two front ends can
//! never disagree about what a failure is called.

use crate::protocol::{Code, Event};
use seer_pipelines::answer::AnswerError;
use seer_pipelines::listen::ListenError;
use seer_platform::frames::ImageError;

/// A failure as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    /// The stable code (`bad_request`, `model_missing`, …).
    pub code: Code,
    /// What was wrong, naming the field, file or value.
    pub message: String,
}

impl ServiceError {
    /// An error with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Code::BadRequest, message)
    }

    /// `unsupported`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Code::Unsupported, message)
    }

    /// `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
}

impl From<AnswerError> for ServiceError {
    fn from(e: AnswerError) -> Self {
        let code = match e {
            AnswerError::Busy(_) => Code::Busy,
            AnswerError::ModelMissing(_) => Code::ModelMissing,
            AnswerError::BadRequest(_) => Code::BadRequest,
            AnswerError::Unsupported(_) => Code::Unsupported,
            AnswerError::Internal(_) => Code::Internal,
            AnswerError::Offload(_) => Code::OffloadFailed,
        };
        Self::new(code, e.to_string())
    }
}

impl From<ListenError> for ServiceError {
    fn from(e: ListenError) -> Self {
        let code = match e {
            ListenError::Muted | ListenError::Device(_) => Code::DeviceUnavailable,
            ListenError::Busy(_) => Code::Busy,
            ListenError::Model(_) => Code::ModelMissing,
            ListenError::Speech(_) | ListenError::Stopped => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<seer_store::StoreError> for ServiceError {
    fn from(e: seer_store::StoreError) -> Self {
        use seer_store::StoreError as E;
        let code = match e {
            E::UnknownModel { .. } | E::Invalid(_) => Code::BadRequest,
            E::NotInstalled { .. } | E::Corrupt { .. } => Code::ModelMissing,
            E::Http { .. } | E::Transfer { .. } | E::SizeMismatch { .. } => Code::DownloadFailed,
            E::ChecksumMismatch { .. } => Code::ChecksumMismatch,
            E::NoSpace { .. } | E::DiskFull { .. } => Code::NoSpace,
            E::Locked { .. } => Code::Busy,
            E::Io { .. } | E::Catalog { .. } | E::Cancelled(_) => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<ImageError> for ServiceError {
    fn from(e: ImageError) -> Self {
        let code = match e {
            ImageError::TooLarge { .. } => Code::TooLarge,
            _ => Code::BadRequest,
        };
        Self::new(code, format!("ask.image: {e}"))
    }
}

impl From<ServiceError> for Event {
    fn from(e: ServiceError) -> Self {
        Event::error(e.code, e.message)
    }
}
