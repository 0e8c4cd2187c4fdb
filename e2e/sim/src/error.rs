use std::fmt::Display;

/// Everything that can go wrong in the simulator; each variant names the object involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What was attempted (`apply`, `get`, `patch status of`, …).
        action: &'static str,
        /// `Kind namespace/name` of the object.
        object: String,
        /// The client error (boxed: it is large, and errors are the rare path).
        #[source]
        source: Box<kube::Error>,
    },
    /// An object could not be (de)serialised.
    #[error("encode {object}: {source}")]
    Json {
        /// What was being encoded.
        object: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The real istiod could not be restarted.
    #[error("{0}")]
    Istiod(String),
    /// A file could not be written (the Sail CRDs).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An object lacks something the simulator needs.
    #[error("{object}: {message}")]
    Invalid {
        /// `Kind namespace/name`.
        object: String,
        /// What is missing or wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn kube(
        action: &'static str,
        object: impl Into<String>,
        source: kube::Error,
    ) -> Self {
        Self::Kube {
            action,
            object: object.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn json(object: impl Display, source: serde_json::Error) -> Self {
        Self::Json {
            object: object.to_string(),
            source,
        }
    }

    pub(crate) fn invalid(object: impl Display, message: impl Into<String>) -> Self {
        Self::Invalid {
            object: object.to_string(),
            message: message.into(),
        }
    }
}

/// `true` when the API answered 404.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_not_found())
}

/// `true` when the API answered 409 (stale resourceVersion).
pub(crate) fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_conflict())
}
