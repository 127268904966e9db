//! Why a command failed, with the exit code scripts rely on.

use std::{fmt, process::ExitCode};

use eventcore::{StoreError, archive::ImportError};
use eventcore_postgres::{ConnectError, InitializeError};

/// The kinds of failure, each with its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything else: 1.
    Failed,
    /// Bad usage or input: 2 (clap uses it for bad arguments too).
    Input,
    /// A stream or projection that does not exist: 3.
    NotFound,
    /// The database cannot be reached: 4.
    Unreachable,
    /// The schema is not initialized or not at this tool's migration: 5.
    Schema,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Self::Failed => 1,
            Self::Input => 2,
            Self::NotFound => 3,
            Self::Unreachable => 4,
            Self::Schema => 5,
        }
    }
}

/// A failed command: what to print and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(kind: Kind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            error: anyhow::anyhow!("{message}"),
        }
    }

    pub fn other(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: Kind::Failed,
            error: error.into(),
        }
    }

    pub fn input(message: impl fmt::Display) -> Self {
        Self::new(Kind::Input, message)
    }
}

/// The kind of a store failure: an unreachable database is told apart.
fn store_kind(error: &StoreError) -> Kind {
    match error {
        StoreError::Unavailable { .. } => Kind::Unreachable,
        _ => Kind::Failed,
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self {
            kind: store_kind(&error),
            error: error.into(),
        }
    }
}

impl From<ConnectError> for Failure {
    fn from(error: ConnectError) -> Self {
        let kind = match error {
            ConnectError::Config(_) => Kind::Input,
            _ => Kind::Unreachable,
        };
        Self {
            kind,
            error: error.into(),
        }
    }
}

impl From<InitializeError> for Failure {
    fn from(error: InitializeError) -> Self {
        let kind = match &error {
            InitializeError::TooNew { .. } => Kind::Schema,
            _ => Kind::Failed,
        };
        Self {
            kind,
            error: error.into(),
        }
    }
}

impl From<ImportError> for Failure {
    fn from(error: ImportError) -> Self {
        let kind = match &error {
            ImportError::Store(store) => store_kind(store),
            ImportError::Archive(_)
            | ImportError::Refused { .. }
            | ImportError::NotEmpty { .. } => Kind::Input,
        };
        Self {
            kind,
            error: error.into(),
        }
    }
}

/// Prints the failure on stderr (each cause once) and returns its exit code.
pub fn report(failure: &Failure, json: bool) -> ExitCode {
    let causes: Vec<String> = failure.error.chain().map(ToString::to_string).collect();
    if json {
        let text = serde_json::json!({
            "error": causes.first(),
            "causes": causes.get(1..).unwrap_or_default(),
            "exit_code": failure.kind.code(),
        });
        eprintln!("{text}");
    } else {
        let mut causes = causes.iter();
        if let Some(first) = causes.next() {
            eprintln!("error: {first}");
        }
        for cause in causes {
            eprintln!("  caused by: {cause}");
        }
    }
    ExitCode::from(failure.kind.code())
}
