use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong in the harness; every message names the object or command involved.
///
/// `Debug` prints the message and its causes, not the structure: a test returning
/// `Result<(), Box<dyn Error>>` reports a failure through `Debug`.
#[derive(thiserror::Error)]
pub enum Error {
    /// `e2e/testenv/build.sh` (or `e2e/istio/build.sh`, for istiod) failed or printed no
    /// usable directory.
    #[error("building with {script} failed: {message}")]
    Build {
        /// The build script.
        script: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `testenv up` (or istiod) did not come up.
    #[error("starting {what} failed: {message}")]
    Start {
        /// `testenv in DIR`, `istiod (pilot-discovery)`.
        what: String,
        /// What went wrong, with the tail of its output.
        message: String,
    },
    /// [`crate::wait_for`] ran out of time.
    #[error("timed out after {timeout:?} waiting for {what}; last observed: {last}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        timeout: Duration,
        /// The last reason the condition did not hold.
        last: String,
    },
    /// A YAML document could not be applied.
    #[error("applying document {index} ({object}): {message}")]
    Apply {
        /// 0-based index of the document in the YAML stream.
        index: usize,
        /// `Kind namespace/name` as far as known.
        object: String,
        /// What went wrong.
        message: String,
    },
    /// An API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was attempted, naming the object.
        action: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The kube client could not be configured.
    #[error("client for {kubeconfig}: {message}")]
    Client {
        /// The kubeconfig used.
        kubeconfig: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// kubectl failed.
    #[error("kubectl {args} failed ({status}): {stderr}")]
    Kubectl {
        /// The arguments (after `--kubeconfig`).
        args: String,
        /// Exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// istiod's configuration could not be rendered from the istio-discovery chart's values.
    #[error("rendering {what} from the istio-discovery chart: {message}")]
    Render {
        /// The file or value being rendered.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The simulator's part failed (writing the Sail CRDs).
    #[error("mesh simulator: {0}")]
    Sim(#[from] meshmig_sim::Error),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    pub(crate) fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
