//! Operator errors. Each variant maps to a metric label.

use thiserror::Error;

/// An error of a reconcile.
#[derive(Debug, Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{context}: {}", describe(source))]
    Kube {
        /// What was being done.
        context: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An object meshmig cannot act on.
    #[error("unsupported object {0}")]
    Unsupported(String),
    /// Invalid data (a manifest or patch that does not decode).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A snapshot is missing or corrupt.
    #[error("{0}")]
    Snapshot(String),
    /// The frozen inventory is missing or corrupt.
    #[error("frozen plan: {0}")]
    Plan(String),
}

/// A kube error in one line for a condition message: an API answer as its message, code and
/// reason (its `Debug` form, which kube's `Display` appends, is noise to a reader of status).
fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() {
                ""
            } else {
                s.reason.as_str()
            };
            format!("{} (HTTP {} {reason})", s.message, s.code).replace(" )", ")")
        }
        other => other.to_string(),
    }
}

impl Error {
    /// Wraps a kube error with context.
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// What went wrong, as far as retrying and the metric label care.
    pub fn cause(&self) -> Reason {
        match self {
            Error::Kube { source, .. } => match source.as_ref() {
                // Optimistic concurrency ("the object has been modified") clears on retry; a
                // server-side apply conflict with another field manager needs someone to
                // resolve it.
                kube::Error::Api(s) if s.code == 409 && s.message.contains("has been modified") => {
                    Reason::Modified
                }
                kube::Error::Api(s) if s.code == 409 => Reason::Conflict,
                kube::Error::Api(s) if s.code == 403 => Reason::Forbidden,
                kube::Error::Api(s) if s.code == 429 => Reason::Throttled,
                kube::Error::Api(s) if s.code >= 500 => Reason::Server,
                _ => Reason::Api,
            },
            Error::Unsupported(_) => Reason::Unsupported,
            Error::Invalid(_) => Reason::Invalid,
            Error::Snapshot(_) => Reason::Snapshot,
            Error::Plan(_) => Reason::Plan,
        }
    }

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        self.cause().label()
    }

    /// Whether retrying without a change can help.
    pub fn transient(&self) -> bool {
        self.cause().transient()
    }
}

/// The cause of an [`Error`]: decides whether it is transient and its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A write lost an optimistic-concurrency race (HTTP 409, "has been modified").
    Modified,
    /// Any other HTTP 409: a server-side apply conflict with another field manager.
    Conflict,
    /// HTTP 403.
    Forbidden,
    /// HTTP 429.
    Throttled,
    /// HTTP 5xx.
    Server,
    /// Any other API or transport failure.
    Api,
    /// See [`Error::Unsupported`].
    Unsupported,
    /// See [`Error::Invalid`].
    Invalid,
    /// See [`Error::Snapshot`].
    Snapshot,
    /// See [`Error::Plan`].
    Plan,
}

impl Reason {
    /// Every cause.
    pub const ALL: [Reason; 10] = [
        Reason::Modified,
        Reason::Conflict,
        Reason::Forbidden,
        Reason::Throttled,
        Reason::Server,
        Reason::Api,
        Reason::Unsupported,
        Reason::Invalid,
        Reason::Snapshot,
        Reason::Plan,
    ];

    /// The metric label (a lost race counts as a conflict).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Modified | Reason::Conflict => "conflict",
            Reason::Forbidden => "forbidden",
            Reason::Throttled => "throttled",
            Reason::Server => "server",
            Reason::Api => "api",
            Reason::Unsupported => "unsupported",
            Reason::Invalid => "invalid",
            Reason::Snapshot => "snapshot",
            Reason::Plan => "plan",
        }
    }

    /// Whether retrying without a change can help.
    pub fn transient(self) -> bool {
        matches!(
            self,
            Reason::Modified | Reason::Throttled | Reason::Server | Reason::Api
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_reads_as_one_line_without_debug_output() {
        let e = Error::kube(
            "patch Namespace//bookinfo",
            kube::Error::Api(
                kube::core::Status::failure("Internal error occurred: boom", "InternalError")
                    .with_code(500)
                    .boxed(),
            ),
        );
        assert_eq!(
            e.to_string(),
            "patch Namespace//bookinfo: Internal error occurred: boom (HTTP 500 InternalError)"
        );
        assert!(e.transient());
    }

    fn api(code: u16, message: &str) -> Error {
        Error::kube(
            "apply x",
            kube::Error::Api(
                kube::core::Status::failure(message, "")
                    .with_code(code)
                    .boxed(),
            ),
        )
    }

    #[test]
    fn the_cause_decides_label_and_retry() {
        let modified = api(
            409,
            "the object has been modified; please apply your changes",
        );
        assert_eq!(
            (modified.reason(), modified.transient()),
            ("conflict", true)
        );
        let conflict = api(409, "Apply failed with 1 conflict");
        assert_eq!(
            (conflict.reason(), conflict.transient()),
            ("conflict", false)
        );
        assert_eq!(
            (api(403, "no").reason(), api(403, "no").transient()),
            ("forbidden", false)
        );
        assert_eq!(
            (api(429, "slow").reason(), api(429, "slow").transient()),
            ("throttled", true)
        );
        assert_eq!(
            (api(503, "down").reason(), api(503, "down").transient()),
            ("server", true)
        );
        assert_eq!(
            (api(404, "gone").reason(), api(404, "gone").transient()),
            ("api", true)
        );
        for (e, label) in [
            (Error::Unsupported("x".into()), "unsupported"),
            (Error::Invalid("x".into()), "invalid"),
            (Error::Snapshot("x".into()), "snapshot"),
            (Error::Plan("x".into()), "plan"),
        ] {
            assert_eq!(e.reason(), label);
            assert!(!e.transient());
        }
    }
}
