//! One test environment: a `testenv up` process with its own directory and ports.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use secrecy::SecretString;
use tempfile::TempDir;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::istiod::{Istiod, IstiodOptions, SharedIstiod};
use crate::process;
use crate::{Error, Result, SimConfig, SimHandle, apply};

/// `testenv up` gives itself 3 minutes; allow a little more for a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(200);
const STOP_GRACE: Duration = Duration::from_secs(15);

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testenv/build.sh")
}

fn has_binary(home: &Path) -> bool {
    home.join("bin/testenv").is_file()
}

async fn locate() -> Result<PathBuf> {
    let script = build_script();
    if let Some(home) = std::env::var_os("MESHMIG_TESTENV_HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        if !has_binary(&home) {
            return Err(Error::Build {
                script,
                message: format!(
                    "MESHMIG_TESTENV_HOME={} has no bin/testenv; unset it to build",
                    home.display()
                ),
            });
        }
        return Ok(home);
    }
    let started = Instant::now();
    // Progress (a cold build takes minutes) goes straight to the terminal.
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| Error::Build {
            script: script.clone(),
            message: format!("cannot run it: {e}"),
        })?;
    if !output.status.success() {
        return Err(Error::Build {
            script,
            message: format!("it exited with {} (its output is above)", output.status),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let home = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(PathBuf::from);
    match home {
        Some(home) if has_binary(&home) => {
            info!(home = %home.display(), elapsed = ?started.elapsed(), "testenv located");
            Ok(home)
        }
        _ => Err(Error::Build {
            script,
            message: format!("its last line names no testenv build: {stdout:?}"),
        }),
    }
}

static HOME: OnceCell<std::result::Result<PathBuf, String>> = OnceCell::const_new();

/// The testenv build (`<key>` with `bin/testenv` and `crds/`): `$MESHMIG_TESTENV_HOME` when
/// set, else the output of `e2e/testenv/build.sh` (cached on disk by the script, and run at
/// most once per test process).
pub async fn testenv_home() -> Result<PathBuf> {
    HOME.get_or_init(|| async { locate().await.map_err(|e| e.to_string()) })
        .await
        .clone()
        .map_err(|message| Error::Build {
            script: build_script(),
            message,
        })
}

/// Options of a [`TestEnv`].
#[derive(Clone, Debug)]
pub struct TestEnvBuilder {
    nodes: u32,
    crd_dirs: Vec<PathBuf>,
}

impl Default for TestEnvBuilder {
    fn default() -> Self {
        Self {
            nodes: 1,
            crd_dirs: Vec::new(),
        }
    }
}

impl TestEnvBuilder {
    /// Number of fake nodes (default 1).
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.nodes = nodes;
        self
    }

    /// Another directory of CRDs to install before the environment is ready.
    pub fn crd_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.crd_dirs.push(dir.into());
        self
    }

    /// Starts the environment: builds or locates testenv, writes the Sail CRDs, runs
    /// `testenv up` in a new temporary directory and waits for it to be ready.
    pub async fn start(self) -> Result<TestEnv> {
        let home = testenv_home().await?;
        let dir = tempfile::Builder::new()
            .prefix("meshmig-e2e-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let sail_crds = dir.path().join("sail-crds");
        meshmig_sim::sail::write_crds(&sail_crds)?;
        let state = dir.path().join("env");

        let mut args: Vec<OsString> = vec!["up".into(), "--dir".into(), state.clone().into()];
        args.extend(["--nodes".into(), self.nodes.to_string().into()]);
        for crds in [home.join("crds"), sail_crds].iter().chain(&self.crd_dirs) {
            args.extend([OsString::from("--crd-dir"), crds.clone().into()]);
        }
        let out = dir.path().join("testenv.out");
        let err = dir.path().join("testenv.err");
        let open = |p: &Path| {
            File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        let binary = home.join("bin/testenv");
        let started = Instant::now();
        let mut child = process::spawn(&binary, &args, open(&out)?, open(&err)?)
            .map_err(|e| Error::io(format!("starting {}", binary.display()), e))?;

        let what = format!("testenv in {}", state.display());
        let ready =
            match process::wait_for_line(&mut child, &out, &err, "READY ", &what, START_TIMEOUT)
                .await
            {
                Ok(line) => line,
                Err(e) => {
                    process::terminate(&mut child, STOP_GRACE);
                    // Keep the logs of an environment that did not start.
                    let kept = dir.keep();
                    return Err(Error::Start {
                        what,
                        message: format!("{e}\n(logs kept in {})", kept.display()),
                    });
                }
            };
        let kubeconfig = PathBuf::from(ready.trim_start_matches("READY ").trim());
        let (config, client) = match connect(&kubeconfig).await {
            Ok(connected) => connected,
            Err(e) => {
                process::terminate(&mut child, STOP_GRACE);
                return Err(e);
            }
        };
        let env = TestEnv {
            client,
            config,
            kubeconfig,
            dir: Some(dir),
            child: Some(child),
            keep: false,
        };
        info!(dir = %env.dir().display(), nodes = self.nodes, elapsed = ?started.elapsed(), "test environment ready");
        Ok(env)
    }
}

/// A running test environment. Dropping it stops the API server (SIGTERM, then SIGKILL) and
/// removes its directory, unless `MESHMIG_E2E_KEEP` is set or the thread is panicking (a
/// failed test), in which case the directory and its logs are kept and their path printed.
pub struct TestEnv {
    client: Client,
    config: kube::Config,
    kubeconfig: PathBuf,
    // `Option`s only so `Drop`/`stop` can take them; always set on a started environment.
    dir: Option<TempDir>,
    child: Option<Child>,
    keep: bool,
}

impl TestEnv {
    /// Starts an environment with one node; see [`TestEnv::builder`] for options.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// Options: node count, extra CRD directories.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default()
    }

    /// An admin client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An admin `Api` for a cluster-scoped kind, or for a namespaced kind across namespaces.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = ()>,
    {
        Api::all(self.client())
    }

    /// An admin `Api` for a namespaced kind in `namespace`.
    pub fn api_in<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client(), namespace)
    }

    /// The admin kubeconfig (a token for user `admin`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The environment's directory: `env/` holds testenv's state and component logs
    /// (`apiserver.log`, `controller-manager.log`, `scheduler.log`, `node.log`, `etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(TempDir::path)
            .unwrap_or(Path::new(""))
    }

    /// Server-side applies every document of a YAML stream (any kind, including custom
    /// resources), in order, with field manager `meshmig-e2e`. Returns the stored objects.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        apply::apply_yaml(&self.client(), yaml).await
    }

    /// [`TestEnv::apply_yaml`] of a file.
    pub async fn apply_file(&self, path: impl AsRef<Path>) -> Result<Vec<DynamicObject>> {
        let path = path.as_ref();
        let yaml = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        apply::apply_yaml(&self.client(), &yaml)
            .await
            .map_err(|e| match e {
                Error::Apply {
                    index,
                    object,
                    message,
                } => Error::Apply {
                    index,
                    object: format!("{object} in {}", path.display()),
                    message,
                },
                other => other,
            })
    }

    /// Runs kubectl (`$KUBECTL`, else `kubectl` on the PATH) against this environment and
    /// returns its standard output; a non-zero exit is an error carrying its stderr.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let kubectl = std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into());
        let output = tokio::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", kubectl.to_string_lossy()), e))?;
        if !output.status.success() {
            return Err(Error::Kubectl {
                args: shown,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// A token for ServiceAccount `namespace/service_account`, from the TokenRequest API
    /// (valid for an hour, default audience).
    pub async fn mint_token(&self, namespace: &str, service_account: &str) -> Result<String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let response = api
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::kube(
                    format!("TokenRequest for ServiceAccount {namespace}/{service_account}"),
                    e,
                )
            })?;
        response
            .status
            .map(|s| s.token)
            .ok_or_else(|| Error::Start {
                what: format!("TokenRequest for ServiceAccount {namespace}/{service_account}"),
                message: "the response has no status.token".into(),
            })
    }

    /// A client that authenticates with `token` only (e.g. from [`TestEnv::mint_token`]), to
    /// act as a restricted identity.
    pub fn client_with_token(&self, token: &str) -> Result<Client> {
        let mut config = self.config.clone();
        config.auth_info = AuthInfo {
            token: Some(SecretString::from(token.to_string())),
            ..AuthInfo::default()
        };
        Client::try_from(config).map_err(|e| client_error(&self.kubeconfig, e))
    }

    /// The mesh the operator is tested against (see [`Mesh::start`]), with istiod's files in
    /// `istiod/` of the environment's directory. Keep the handle (declared after the
    /// environment, so it is dropped first).
    pub async fn start_mesh(&self) -> Result<Mesh> {
        self.start_mesh_with(|config| config).await
    }

    /// [`TestEnv::start_mesh`] with the simulator's settings changed by `configure` (e.g.
    /// [`SimConfig::with_istio_code`]).
    pub async fn start_mesh_with(
        &self,
        configure: impl FnOnce(SimConfig) -> SimConfig,
    ) -> Result<Mesh> {
        Mesh::start_with(
            self.client(),
            &self.kubeconfig,
            self.dir().join("istiod"),
            configure,
        )
        .await
    }

    /// Starts a real istiod (`pilot-discovery` from `e2e/istio/build.sh`) against this
    /// environment, with its webhooks, and waits until it is ready; its files and log are in
    /// `istiod/` of the environment's directory. One per environment; keep the handle (declared
    /// after the environment, so it is dropped first).
    pub async fn start_istiod(&self, options: IstiodOptions) -> Result<Istiod> {
        Istiod::start(
            self.client(),
            &self.kubeconfig,
            self.dir().join("istiod"),
            options,
        )
        .await
    }

    /// Stops the environment without blocking the runtime, then removes its directory (or
    /// keeps it, as on drop).
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate_async(&mut child, STOP_GRACE).await;
        }
        self.cleanup();
    }

    fn cleanup(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let keep = std::env::var_os("MESHMIG_E2E_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        if keep || self.keep || std::thread::panicking() {
            let path = dir.keep();
            // Visible in a failing test's output: where to look.
            eprintln!(
                "meshmig-e2e: kept test environment directory {}",
                path.display()
            );
        } else if let Err(e) = dir.close() {
            warn!(error = %e, "could not remove the test environment directory");
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                // It died under the test: say so, and keep the logs that say why.
                let err = self.dir().join("testenv.err");
                eprintln!(
                    "meshmig-e2e: testenv exited during the test ({status}); its stderr ends with:\n{}",
                    process::tail(&err, 4000)
                );
                self.keep = true;
            }
            process::terminate(&mut child, STOP_GRACE);
        }
        self.cleanup();
    }
}

/// A client for `kubeconfig`, e.g. one that [`TestEnv::kubeconfig`]'s server was replaced in
/// (a proxy in front of the API server).
pub async fn client_for(kubeconfig: &Path) -> Result<Client> {
    connect(kubeconfig).await.map(|(_, client)| client)
}

async fn connect(kubeconfig: &Path) -> Result<(kube::Config, Client)> {
    let parsed = Kubeconfig::read_from(kubeconfig).map_err(|e| client_error(kubeconfig, e))?;
    let config = kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .map_err(|e| client_error(kubeconfig, e))?;
    let client = Client::try_from(config.clone()).map_err(|e| client_error(kubeconfig, e))?;
    Ok((config, client))
}

fn client_error(kubeconfig: &Path, e: impl std::fmt::Display) -> Error {
    Error::Client {
        kubeconfig: kubeconfig.to_path_buf(),
        message: e.to_string(),
    }
}

/// The real istiod and the simulator beside it (see [`Mesh::start`]). Dropping it stops both
/// (the simulator's tasks at once, istiod with SIGTERM); [`Mesh::stop`] does it in order
/// without blocking.
pub struct Mesh {
    /// istiod, shared with the simulator's Sail.
    pub istiod: Arc<SharedIstiod>,
    /// The simulator.
    pub sim: SimHandle,
}

impl Mesh {
    /// Starts the real istiod (injection, waypoints, every status it writes) without the
    /// ambient profile, its files under `dir`, and beside it the simulator for what cannot
    /// run here: Sail (which restarts istiod when the profile changes), istio-cni, ztunnel
    /// and the data plane behind the probes. Returns once istiod is ready (its webhooks
    /// answer), so a Pod created afterwards is injected.
    pub async fn start(client: Client, kubeconfig: &Path, dir: PathBuf) -> Result<Self> {
        Self::start_with(client, kubeconfig, dir, |config| config).await
    }

    /// [`Mesh::start`] with the simulator's settings changed by `configure`.
    pub async fn start_with(
        client: Client,
        kubeconfig: &Path,
        dir: PathBuf,
        configure: impl FnOnce(SimConfig) -> SimConfig,
    ) -> Result<Self> {
        let istiod =
            Istiod::start(client.clone(), kubeconfig, dir, IstiodOptions::default()).await?;
        let istiod = Arc::new(SharedIstiod::new(istiod));
        let sim = meshmig_sim::Simulator::start(client, configure(SimConfig::new(istiod.clone())));
        Ok(Self { istiod, sim })
    }

    /// Stops the simulator, then istiod: its Sail must not restart istiod while istiod stops.
    pub async fn stop(self) {
        let Self { istiod, sim } = self;
        sim.shutdown().await;
        // The simulator held the only other reference, and its tasks have ended.
        match Arc::try_unwrap(istiod) {
            Ok(istiod) => istiod.stop().await,
            Err(shared) => warn!(
                references = Arc::strong_count(&shared),
                "istiod is still shared; it stops when the last reference goes"
            ),
        }
    }
}
