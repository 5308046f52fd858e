//! Errors of the container: lifecycle errors ([`ContainerError`]) and call errors ([`CallError`]).
//!
//! Each variant carries what an operator needs to act: the artifact, the symbol, the expected and
//! found ABI version, the integrity check that failed, the state, the timeout.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::integrity::IntegrityError;
use crate::InstanceId;
use vocab::{Artifact, ParseError, SliceState};

/// A lifecycle step failed.
///
/// The text of every variant reaches HTTP answers and slice records, so it names the library by its
/// artifact and its repository-relative file, never by an absolute path of this node.
#[derive(Debug)]
pub enum ContainerError {
    BadArtifact(ParseError),
    NotInRepository {
        artifact: Artifact,
    },
    Io {
        artifact: Artifact,
        action: &'static str,
        error: std::io::Error,
    },
    /// The library failed its integrity check (checksum, signature) and was not loaded.
    Integrity {
        artifact: Artifact,
        error: Box<IntegrityError>,
    },
    /// The dynamic loader refused the file (not a shared library, missing dependency, ...).
    NotALibrary {
        artifact: Artifact,
        reason: String,
    },
    MissingSymbol {
        artifact: Artifact,
        symbol: &'static str,
    },
    AbiMismatch {
        artifact: Artifact,
        expected: u32,
        found: u32,
    },
    BadDescriptor {
        artifact: Artifact,
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
    /// The folder for private copies is missing, unsafe, or cannot be created (a start-up error).
    WorkDir {
        path: PathBuf,
        reason: String,
    },
}

impl fmt::Display for ContainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ContainerError::*;
        match self {
            BadArtifact(e) => write!(f, "{e}"),
            NotInRepository { artifact } => {
                write!(f, "{artifact}: not in the repository (no file {})", artifact.repository_path().display())
            }
            Io { artifact, action, error } => write!(f, "{artifact}: cannot {action}: {error}"),
            Integrity { artifact, error } => write!(f, "{artifact}: refused before loading: {error}"),
            NotALibrary { artifact, reason } => {
                write!(f, "{artifact}: {} is not a loadable slice library: {reason}", file(artifact))
            }
            MissingSymbol { artifact, symbol } => {
                write!(f, "{artifact}: {} is not a slice: it does not export `{symbol}`", file(artifact))
            }
            AbiMismatch { artifact, expected, found } => write!(
                f,
                "{artifact}: {} was built for slice ABI version {found}, this node speaks version {expected}: rebuild against aether-sdk {}",
                file(artifact),
                aether_sdk::abi::SDK_VERSION
            ),
            BadDescriptor { artifact, reason } => {
                write!(f, "{artifact}: bad slice descriptor in {}: {reason}", file(artifact))
            }
            StepTimedOut { artifact, step, timeout } => write!(f, "{artifact}: {step} did not finish within {timeout:?}"),
            StepFailed { artifact, step, reason } => write!(f, "{artifact}: {step} failed: {reason}"),
            WrongState { artifact, step, state } => write!(f, "{artifact}: cannot {step} in state {state}"),
            NoSuchInstance { id } => write!(f, "no slice instance {id}"),
            WorkDir { path, reason } => write!(f, "slice copy folder {}: {reason}", path.display()),
        }
    }
}

/// The library's file name, as the repository names it.
fn file(artifact: &Artifact) -> String {
    format!("{}-{}.so", artifact.id(), artifact.version())
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
    /// The slice's answer could not be taken (not an HTTP status, malformed or refused header fields).
    BadResponse { artifact: String, reason: String },
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
            BadResponse { artifact, reason } => write!(f, "{artifact} answered a response that is refused: {reason}"),
            BadRequest { detail } => write!(f, "{detail}"),
            ShuttingDown => write!(f, "the node is shutting down"),
        }
    }
}

impl std::error::Error for CallError {}
