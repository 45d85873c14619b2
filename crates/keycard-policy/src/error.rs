/// A policy that cannot be loaded or compiled.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    #[error("{file}:{line}: invalid METADATA annotation: {message}")]
    Metadata {
        file: String,
        line: usize,
        message: String,
    },
    #[error("unknown pack {0:?} (see `keycard policy list`)")]
    UnknownPack(String),
    #[error("{0}")]
    Compile(String),
    #[error("{file}: {message}")]
    Params { file: String, message: String },
}

/// An evaluation that could not complete: the object is reported, not
/// silently passed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("policy {policy}: {message}")]
pub struct EvalError {
    pub policy: String,
    pub message: String,
}
