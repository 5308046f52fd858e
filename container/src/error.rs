//! Errors of the container: lifecycle errors ([`ContainerError`]) and call errors ([`CallError`]).
//!
//! Each variant carries what an operator needs to act: the artifact, the file, the symbol, the
//! expected and found ABI version, the state, the timeout.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::InstanceId;
use vocab::{Artifact, ParseError, SliceState};

/// A lifecycle step failed.
#[derive(Debug)]
pub enum ContainerError {
    BadArtifact(ParseError),
    NotInRepository {
        artifact: Artifact,
        path: PathBuf,
    },
    Io {
        artifact: Artifact,
        path: PathBuf,
        action: &'static str,
        error: std::io::Error,
    },
    /// The dynamic loader refused the file (not a shared library, missing dependency, ...).
    NotALibrary {
        artifact: Artifact,
        path: PathBuf,
        reason: String,
    },
    MissingSymbol {
        artifact: Artifact,
        path: PathBuf,
        symbol: &'static str,
    },
    AbiMismatch {
        artifact: Artifact,
        path: PathBuf,
        expected: u32,
        found: u32,
    },
    BadDescriptor {
        artifact: Artifact,
        path: PathBuf,
        reason: String,
    },
    StepTimedOut {
        artifact: Artifact,
        step: &'static str,
        timeout: Duration,
    },
    StepFailed {
        artifact: Artifact,
        step: &'static str,
        reason: String,
    },
    WrongState {
        artifact: Artifact,
        step: &'static str,
        state: SliceState,
    },
    NoSuchInstance {
        id: InstanceId,
    },
    WorkDir {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl fmt::Display for ContainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ContainerError::*;
        match self {
            BadArtifact(e) => write!(f, "{e}"),
            NotInRepository { artifact, path } => write!(f, "{artifact}: not in the repository (no file {})", path.display()),
            Io { artifact, path, action, error } => write!(f, "{artifact}: cannot {action} {}: {error}", path.display()),
            NotALibrary { artifact, path, reason } => {
                write!(f, "{artifact}: {} is not a loadable slice library: {reason}", path.display())
            }
            MissingSymbol { artifact, path, symbol } => {
                write!(f, "{artifact}: {} is not a slice: it does not export `{symbol}`", path.display())
            }
            AbiMismatch { artifact, path, expected, found } => write!(
                f,
                "{artifact}: {} was built for slice ABI version {found}, this node speaks version {expected}; rebuild the slice against this SDK",
                path.display()
            ),
            BadDescriptor { artifact, path, reason } => {
                write!(f, "{artifact}: bad slice descriptor in {}: {reason}", path.display())
            }
            StepTimedOut { artifact, step, timeout } => write!(f, "{artifact}: {step} did not finish within {timeout:?}"),
            StepFailed { artifact, step, reason } => write!(f, "{artifact}: {step} failed: {reason}"),
            WrongState { artifact, step, state } => write!(f, "{artifact}: cannot {step} in state {state}"),
            NoSuchInstance { id } => write!(f, "no slice instance {id}"),
            WorkDir { path, error } => write!(f, "cannot create the slice work folder {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for ContainerError {}

/// A call did not produce a slice's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No active instance of the artifact on this node.
    NoInstance { artifact: String },
    /// The instance exists but is not serving.
    NotActive { artifact: String, state: SliceState },
    /// The slice panicked while answering; the node and the slice go on.
    Panicked { artifact: String, method: String, message: String },
    /// No answer before the deadline.
    DeadlineExceeded { artifact: String, method: String, deadline: Duration },
    /// Every worker is busy and the queue is full.
    Overloaded { queue_max: usize },
    /// Slice-to-slice calls nested deeper than the limit (likely a cycle).
    TooDeep { depth_max: u32 },
    /// The slice answered with a status code this node does not know.
    BadResponse { artifact: String, status: u32 },
    /// The request could not be encoded or the method name was not text.
    BadRequest { detail: String },
    /// The node is shutting down.
    ShuttingDown,
}

impl CallError {
    /// The HTTP status a client sees for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            CallError::NoInstance { .. } | CallError::NotActive { .. } => 503,
            CallError::Overloaded { .. } | CallError::ShuttingDown => 503,
            CallError::DeadlineExceeded { .. } => 504,
            CallError::BadRequest { .. } => 400,
            CallError::Panicked { .. } | CallError::TooDeep { .. } | CallError::BadResponse { .. } => 500,
        }
    }

    /// Short name for the `error` field of a JSON error body.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::NoInstance { .. } => "no instance",
            CallError::NotActive { .. } => "slice not active",
            CallError::Panicked { .. } => "slice panicked",
            CallError::DeadlineExceeded { .. } => "deadline exceeded",
            CallError::Overloaded { .. } => "overloaded",
            CallError::TooDeep { .. } => "call depth exceeded",
            CallError::BadResponse { .. } => "bad slice response",
            CallError::BadRequest { .. } => "bad request",
            CallError::ShuttingDown => "shutting down",
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CallError::*;
        match self {
            NoInstance { artifact } => write!(f, "no active instance of {artifact} on this node"),
            NotActive { artifact, state } => write!(f, "{artifact} is {state}, not ACTIVE"),
            Panicked { artifact, method, message } => write!(f, "{artifact} panicked in `{method}`: {message}"),
            DeadlineExceeded { artifact, method, deadline } => {
                write!(f, "{artifact} did not answer `{method}` within {deadline:?}")
            }
            Overloaded { queue_max } => write!(f, "all slice workers are busy and {queue_max} calls are queued"),
            TooDeep { depth_max } => write!(f, "slice calls nested deeper than {depth_max}"),
            BadResponse { artifact, status } => write!(f, "{artifact} answered with unknown status {status}"),
            BadRequest { detail } => write!(f, "{detail}"),
            ShuttingDown => write!(f, "the node is shutting down"),
        }
    }
}

impl std::error::Error for CallError {}
