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

    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } if matches!(**source, kube::Error::Api(ref s) if s.code == 409) => {
                "conflict"
            }
            Error::Kube { source, .. } if matches!(**source, kube::Error::Api(ref s) if s.code == 403) => {
                "forbidden"
            }
            Error::Kube { source, .. } if matches!(**source, kube::Error::Api(ref s) if s.code == 429) => {
                "throttled"
            }
            Error::Kube { source, .. } if matches!(**source, kube::Error::Api(ref s) if s.code >= 500) => {
                "server"
            }
            Error::Kube { .. } => "api",
            Error::Unsupported(_) => "unsupported",
            Error::Invalid(_) => "invalid",
            Error::Snapshot(_) => "snapshot",
            Error::Plan(_) => "plan",
        }
    }

    /// Whether retrying without a change can help.
    pub fn transient(&self) -> bool {
        // A 409 from optimistic concurrency ("the object has been modified") clears on retry;
        // a server-side apply conflict with another field manager needs someone to resolve it.
        if let Error::Kube { source, .. } = self
            && let kube::Error::Api(s) = source.as_ref()
            && s.code == 409
        {
            return s.message.contains("has been modified");
        }
        !matches!(
            self.reason(),
            "unsupported" | "invalid" | "forbidden" | "conflict" | "snapshot" | "plan"
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
}
