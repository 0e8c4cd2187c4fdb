//! A real istiod for a test environment: `pilot-discovery`, built by `e2e/istio/build.sh`
//! from the pinned `istio.io/istio` module, run as a child process of the test.
//!
//! A Helm install of the istio-discovery chart configures istiod through its Deployment's
//! env and two ConfigMaps (`istio`: the mesh config; `istio-sidecar-injector`: the injection
//! `config` and `values`). Here the same content goes to files in istiod's working directory,
//! where istiod looks before it looks for the ConfigMaps (`./etc/istio/config/mesh`,
//! `./var/lib/istio/inject/{config,values}`). So tests need neither Helm nor Go. The values
//! are merged as the chart's `zzz_profile.yaml` merges them. The injection templates are the
//! chart's files verbatim, because istiod itself evaluates them (Go text/template over
//! `.Values`) for each Pod. Only the chart's small wrappers around them are rendered here,
//! and any value they would render in a way this module does not model is an error.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;
use tracing::info;

use crate::{Error, FIELD_MANAGER, Result, process};

/// istiod's namespace, as the chart installs it.
pub const ISTIOD_NAMESPACE: &str = "istio-system";
/// The injector's MutatingWebhookConfiguration (istiod patches its `caBundle`).
pub const INJECTOR_WEBHOOK: &str = "istio-sidecar-injector";
/// The istio-discovery chart's ValidatingWebhookConfiguration (objects of revision `default`).
pub const REVISION_VALIDATOR: &str = "istio-validator-istio-system";
/// The base chart's ValidatingWebhookConfiguration (objects without a revision).
pub const DEFAULT_VALIDATOR: &str = "istiod-default-validator";

const REVISION: &str = "default";
/// A cold start needs a few seconds; a loaded machine running several environments, more.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The chart's injection templates: config name, file under `files/`.
const TEMPLATES: [(&str, &str); 8] = [
    ("sidecar", "injection-template.yaml"),
    ("gateway", "gateway-injection-template.yaml"),
    ("grpc-simple", "grpc-simple.yaml"),
    ("grpc-agent", "grpc-agent.yaml"),
    ("waypoint", "waypoint.yaml"),
    ("kube-gateway", "kube-gateway.yaml"),
    ("agentgateway", "agentgateway.yaml"),
    ("agentgateway-waypoint", "agentgateway-waypoint.yaml"),
];

/// How istiod is installed.
#[derive(Clone, Debug, Default)]
pub struct IstiodOptions {
    /// The chart's `ambient` profile: `PILOT_ENABLE_AMBIENT=true` for istiod, and
    /// `ISTIO_META_ENABLE_HBONE` (plus the `distroless` variant) for sidecars it injects.
    pub ambient: bool,
    /// Chart values merged last (as `helm install --set`), e.g.
    /// `json!({"meshConfig": {"accessLogFile": "/dev/stdout"}})`. `Null` for none.
    pub values: Value,
}

/// The loopback ports istiod listens on, all chosen free, so environments run in parallel.
#[derive(Clone, Copy, Debug)]
pub struct IstiodPorts {
    /// `--httpAddr` (chart: 8080): `/ready` and the `/debug/` endpoints.
    pub http: u16,
    /// `--httpsAddr` (chart: 15017): the `/inject` and `/validate` webhooks.
    pub https: u16,
    /// `--grpcAddr` (chart: 15010): plaintext xDS.
    pub grpc: u16,
    /// `--secureGRPCAddr` (chart: 15012): xDS and the CA over TLS.
    pub secure_grpc: u16,
    /// `--monitoringAddr` (chart: 15014): `/metrics`, `/version`.
    pub monitoring: u16,
    /// `--ctrlz_port` (default 9876): ControlZ.
    pub ctrlz: u16,
}

impl IstiodPorts {
    fn pick() -> Result<Self> {
        let context = "choosing free ports for istiod";
        // Hold every listener until all are chosen, so no two ports are the same.
        let listeners = (0..6)
            .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(context, e))?;
        let mut ports = [0u16; 6];
        for (port, listener) in ports.iter_mut().zip(&listeners) {
            *port = listener
                .local_addr()
                .map_err(|e| Error::io(context, e))?
                .port();
        }
        let [http, https, grpc, secure_grpc, monitoring, ctrlz] = ports;
        Ok(Self {
            http,
            https,
            grpc,
            secure_grpc,
            monitoring,
            ctrlz,
        })
    }
}

/// The build: `bin/pilot-discovery`, the chart files, and istiod's version.
#[derive(Clone, Debug)]
struct Build {
    home: PathBuf,
    version: String,
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio/build.sh")
}

fn build_error(message: impl Into<String>) -> Error {
    Error::Build {
        script: build_script(),
        message: message.into(),
    }
}

async fn locate() -> Result<Build> {
    let home = match std::env::var_os("MESHMIG_ISTIO_HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home),
        None => {
            // Progress (a cold build takes minutes) goes straight to the terminal.
            let output = tokio::process::Command::new("bash")
                .arg(build_script())
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .await
                .map_err(|e| build_error(format!("cannot run it: {e}")))?;
            if !output.status.success() {
                return Err(build_error(format!(
                    "it exited with {} (its output is above)",
                    output.status
                )));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(
                stdout
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or(""),
            )
        }
    };
    let binary = home.join("bin/pilot-discovery");
    if !binary.is_file() || !home.join("istiod/chart/values.yaml").is_file() {
        return Err(build_error(format!(
            "{} has no bin/pilot-discovery or istiod/chart (an older build?); \
             unset MESHMIG_ISTIO_HOME to build",
            home.display()
        )));
    }
    let output = tokio::process::Command::new(&binary)
        .args(["version", "--output=json"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(format!("running {} version", binary.display()), e))?;
    let version = serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|v| Some(v.pointer("/clientVersion/version")?.as_str()?.to_string()))
        .filter(|v| output.status.success() && !v.is_empty())
        .ok_or_else(|| build_error(format!("{} version printed no version", binary.display())))?;
    Ok(Build { home, version })
}

static BUILD: OnceCell<std::result::Result<Build, String>> = OnceCell::const_new();

/// The istio build (`bin/pilot-discovery`, `bin/meshmig-istio`, `istiod/`):
/// `$MESHMIG_ISTIO_HOME` when set, else the output of `e2e/istio/build.sh` (cached on disk by
/// the script, and run at most once per test process).
pub async fn istio_home() -> Result<PathBuf> {
    build().await.map(|b| b.home)
}

async fn build() -> Result<Build> {
    BUILD
        .get_or_init(|| async { locate().await.map_err(|e| e.to_string()) })
        .await
        .clone()
        .map_err(build_error)
}

/// A running istiod (see [`crate::TestEnv::start_istiod`]). Dropping it stops istiod (SIGTERM,
/// then SIGKILL); its webhook configurations stay, so Pods that need injection are refused
/// until another istiod serves them.
pub struct Istiod {
    build: Build,
    client: Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
    ports: IstiodPorts,
    options: IstiodOptions,
    // `None` only while restarting and after `stop`.
    child: Option<Child>,
}

impl Istiod {
    /// Installs istiod into the environment whose admin client and kubeconfig are given, with
    /// its files under `dir`, and waits until it is ready (see [`Istiod::restart`]).
    pub(crate) async fn start(
        client: Client,
        kubeconfig: &Path,
        dir: PathBuf,
        options: IstiodOptions,
    ) -> Result<Self> {
        let started = Instant::now();
        let build = build().await?;
        // istiod runs in `dir`, so a relative path given here would not name the same file.
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|e| Error::io(format!("resolving {}", p.display()), e))
        };
        let (kubeconfig, dir) = (absolute(kubeconfig)?, absolute(&dir)?);
        if dir.exists() {
            return Err(start_error(format!(
                "{} exists: one istiod per environment",
                dir.display()
            )));
        }
        let ports = IstiodPorts::pick()?;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ISTIOD_NAMESPACE}});
        Api::<Namespace>::all(client.clone())
            .patch(ISTIOD_NAMESPACE, &pp, &Patch::Apply(&namespace))
            .await
            .map_err(|e| Error::kube(format!("creating namespace {ISTIOD_NAMESPACE}"), e))?;
        let base = format!("https://127.0.0.1:{}", ports.https);
        apply::<MutatingWebhookConfiguration>(&client, INJECTOR_WEBHOOK, &injector_webhooks(&base))
            .await?;
        for (name, webhooks) in validating_webhooks(&base) {
            apply::<ValidatingWebhookConfiguration>(&client, name, &webhooks).await?;
        }
        let mut istiod = Self {
            build,
            client,
            kubeconfig,
            dir,
            ports,
            options,
            child: None,
        };
        istiod.run().await?;
        info!(dir = %istiod.dir.display(), ambient = istiod.options.ambient,
            elapsed = ?started.elapsed(), "istiod ready");
        Ok(istiod)
    }

    /// Stops istiod and starts it again with the ambient profile on or off, as re-installing
    /// the chart with(out) `profile=ambient` and restarting istiod would: `PILOT_ENABLE_AMBIENT`
    /// (read once at start-up) and the injection values and mesh config change, so Pods
    /// injected from now on get the new sidecar while existing Pods keep theirs. Returns once
    /// the new process is ready: `/ready` answers 200 and every webhook has a `caBundle`
    /// (the validating ones fail-closed). The CA (Secret `istio-system/istio-ca-secret`) and
    /// the ports stay the same. The webhooks refuse Pods while istiod is down.
    pub async fn restart(&mut self, ambient: bool) -> Result<()> {
        let started = Instant::now();
        if let Some(mut child) = self.child.take() {
            process::terminate_async(&mut child, STOP_GRACE).await;
        }
        self.options.ambient = ambient;
        self.run().await?;
        info!(ambient, elapsed = ?started.elapsed(), "istiod restarted");
        Ok(())
    }

    /// Whether istiod runs with the ambient profile.
    pub fn ambient(&self) -> bool {
        self.options.ambient
    }

    /// istiod's version (`pilot-discovery version`), e.g. `1.31-dev`; also the tag of
    /// the images it injects.
    pub fn version(&self) -> &str {
        &self.build.version
    }

    /// Its log (stdout and stderr; a restart appends).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("istiod.log")
    }

    /// Its working directory, with the rendered `etc/istio/config/mesh` and
    /// `var/lib/istio/inject/{config,values}`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ports it listens on (127.0.0.1).
    pub fn ports(&self) -> IstiodPorts {
        self.ports
    }

    /// Its resident memory now, from `/proc` (the child is istiod itself: `setpriv` and `env`
    /// exec it).
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    }

    /// Stops istiod without blocking the runtime.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate_async(&mut child, STOP_GRACE).await;
        }
    }

    /// Renders the files, starts the process and waits until it is ready.
    async fn run(&mut self) -> Result<()> {
        let values = chart_values(&self.build, &self.options)?;
        let files = [
            ("etc/istio/config/mesh", mesh_config(&values)?),
            ("etc/istio/config/meshNetworks", mesh_networks(&values)),
            (
                "var/lib/istio/inject/config",
                injector_config(&self.build.home, &values)?,
            ),
            ("var/lib/istio/inject/values", injector_values(&values)),
        ];
        for (path, content) in files {
            let path = self.dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            }
            // JSON is YAML, and what istiod parses these files as.
            let text = serde_json::to_string_pretty(&content)
                .map_err(|e| render_error(&path.display().to_string(), e.to_string()))?;
            std::fs::write(&path, text)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }

        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        // `process::spawn` ties the child to this process but sets no working directory or
        // environment; `env` does both, and `-i` keeps the test's own environment (KUBECONFIG,
        // PILOT_* of a developer's shell) away from istiod.
        let mut args: Vec<OsString> = vec!["-i".into(), "-C".into(), self.dir.clone().into()];
        args.extend(
            istiod_env(&values)?
                .into_iter()
                .map(|(k, v)| format!("{k}={v}").into()),
        );
        args.push(self.build.home.join("bin/pilot-discovery").into());
        args.extend(self.flags(&values).into_iter().map(OsString::from));
        let child = process::spawn(Path::new("/usr/bin/env"), &args, log, log2)
            .map_err(|e| Error::io("starting pilot-discovery", e))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// The chart's container args, with every address on loopback at a free port.
    fn flags(&self, values: &Value) -> Vec<String> {
        let p = self.ports;
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let mut flags = vec![
            "discovery".to_string(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--httpAddr={}", addr(p.http)),
            format!("--httpsAddr={}", addr(p.https)),
            format!("--grpcAddr={}", addr(p.grpc)),
            format!("--secureGRPCAddr={}", addr(p.secure_grpc)),
            format!("--monitoringAddr={}", addr(p.monitoring)),
            format!("--ctrlz_port={}", p.ctrlz),
            "--ctrlz_address=127.0.0.1".into(),
            "--meshConfig=./etc/istio/config/mesh".into(),
            "--networksConfig=./etc/istio/config/meshNetworks".into(),
            format!("--domain={}", text(values, "/global/proxy/clusterDomain")),
            format!(
                "--keepaliveMaxServerConnectionAge={}",
                text(values, "/keepaliveMaxServerConnectionAge")
            ),
            // Nothing holds a connection open in a test; a restart need not wait 10 s for one.
            "--shutdownDuration=1s".into(),
        ];
        let level = text(values, "/global/logging/level");
        if !level.is_empty() {
            flags.push(format!("--log_output_level={level}"));
        }
        flags
    }

    /// Ready: `/ready` answers 200, istiod has patched its CA into every webhook, and its
    /// validation controller has switched the validating webhooks to fail-closed (it does so
    /// once a dry-run invalid Gateway is refused), so an invalid object is refused for sure.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                // Reported here, with its log; not again on drop.
                self.child = None;
                return Err(start_error(format!(
                    "it exited ({status}); its log ends with:\n{}",
                    process::tail(&self.log_path(), 6000)
                )));
            }
            let Err(last) = self.readiness().await else {
                return Ok(());
            };
            if Instant::now() > deadline {
                if let Some(mut child) = self.child.take() {
                    process::terminate_async(&mut child, STOP_GRACE).await;
                }
                return Err(start_error(format!(
                    "not ready within {READY_TIMEOUT:?}: {last}; its log ends with:\n{}",
                    process::tail(&self.log_path(), 6000)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn readiness(&self) -> std::result::Result<(), String> {
        let status = http_get_status(self.ports.http, "/ready")
            .await
            .map_err(|e| format!("GET /ready: {e}"))?;
        if status != 200 {
            return Err(format!("GET /ready: {status}"));
        }
        let mutating = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .get(INJECTOR_WEBHOOK)
            .await
            .map_err(|e| e.to_string())?;
        let unpatched = mutating
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .filter(|w| {
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_none_or(|b| b.0.is_empty())
            })
            .count();
        if unpatched > 0 {
            return Err(format!(
                "{unpatched} injector webhooks have no caBundle yet"
            ));
        }
        for name in [REVISION_VALIDATOR, DEFAULT_VALIDATOR] {
            let validating = Api::<ValidatingWebhookConfiguration>::all(self.client.clone())
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            for w in validating.webhooks.unwrap_or_default() {
                if w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_none_or(|b| b.0.is_empty())
                {
                    return Err(format!("{name}: {} has no caBundle yet", w.name));
                }
                if w.failure_policy.as_deref() != Some("Fail") {
                    return Err(format!("{name}: {} is not fail-closed yet", w.name));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Istiod {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                // It died under the test: say so, with what it said last.
                eprintln!(
                    "meshmig-e2e: istiod exited during the test ({status}); {} ends with:\n{}",
                    self.log_path().display(),
                    process::tail(&self.log_path(), 4000)
                );
            }
            process::terminate(&mut child, STOP_GRACE);
        }
    }
}

fn start_error(message: String) -> Error {
    Error::Start {
        what: "istiod (pilot-discovery)".into(),
        message,
    }
}

fn render_error(what: &str, message: impl Into<String>) -> Error {
    Error::Render {
        what: what.to_string(),
        message: message.into(),
    }
}

async fn apply<K>(client: &Client, name: &str, object: &Value) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| Error::kube(format!("applying {} {name}", K::kind(&())), e))?;
    Ok(())
}

/// `GET http://127.0.0.1:{port}{path}` → status code, without an HTTP client dependency.
async fn http_get_status(port: u16, path: &str) -> std::io::Result<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| std::io::Error::other("no answer within 2 s"))??;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}

// ---- Chart values ---------------------------------------------------------------------

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_saphyr::from_str::<Option<Value>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| render_error(&path.display().to_string(), e.to_string()))
}

/// Helm's `mergeOverwrite` on plain values: maps merge key by key, and anything else in
/// `src` replaces what `dst` has.
fn merge(dst: &mut Value, src: &Value) {
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, v) in s {
                match d.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        // No values at all (`IstiodOptions::values` left `Null`) change nothing.
        (dst, Value::Null) if dst.is_object() => {}
        (dst, src) => *dst = src.clone(),
    }
}

/// `.Values` as the chart's templates see them: the chart's defaults, then the ambient
/// profile, then the test install's values (istiod's version as the tag, `istiod/values.yaml`,
/// the options), then `pilot.*` also at the top level (`zzy_descope_legacy.yaml`).
fn chart_values(build: &Build, options: &IstiodOptions) -> Result<Value> {
    let chart = build.home.join("istiod/chart");
    let defaults = read_yaml(&chart.join("values.yaml"))?;
    let mut values = defaults
        .get("_internal_defaults_do_not_set")
        .cloned()
        .ok_or_else(|| render_error("values.yaml", "no _internal_defaults_do_not_set"))?;
    if options.ambient {
        merge(
            &mut values,
            &read_yaml(&chart.join("files/profile-ambient.yaml"))?,
        );
    }
    merge(&mut values, &json!({"global": {"tag": build.version}}));
    merge(
        &mut values,
        &read_yaml(&build.home.join("istiod/values.yaml"))?,
    );
    merge(&mut values, &options.values);
    if let Some(pilot) = values.get("pilot").cloned() {
        merge(&mut values, &pilot);
    }
    Ok(values)
}

/// Go template truthiness: false, 0, "", null and empty lists and maps are false.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// A scalar as `{{ . }}` prints it ("" when absent).
fn text(values: &Value, pointer: &str) -> String {
    scalar(values.pointer(pointer).unwrap_or(&Value::Null))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        // Helm parses numbers as float64, and Go prints 1.0 as "1".
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// ConfigMap `istio`, key `mesh` (`templates/configmap.yaml`): the chart's base mesh config
/// merged with `.Values.meshConfig`.
fn mesh_config(v: &Value) -> Result<Value> {
    let has = |p: &str| truthy(v.pointer(p));
    let revision = text(v, "/revision");
    if has("/global/remotePilotAddress") {
        return Err(render_error(
            "mesh config",
            "global.remotePilotAddress is not modelled",
        ));
    }
    let tracer = text(v, "/global/proxy/tracer");
    if tracer != "none" {
        return Err(render_error(
            "mesh config",
            format!("tracer {tracer:?} is not modelled"),
        ));
    }
    let telemetry = !has("/meshConfig/defaultProviders")
        && has("/telemetry/enabled")
        && has("/telemetry/v2/enabled");
    let prometheus = telemetry && has("/telemetry/v2/prometheus/enabled");
    let stackdriver = telemetry && has("/telemetry/v2/stackdriver/enabled");

    let mut default_config = Map::new();
    if has("/global/meshID") {
        default_config.insert("meshId".into(), json!(text(v, "/global/meshID")));
    }
    let variant = match text(v, "/global/proxy/variant") {
        s if s.is_empty() => text(v, "/global/variant"),
        s => s,
    };
    if !variant.is_empty() {
        default_config.insert("image".into(), json!({"imageType": variant}));
    }
    let istiod = if revision.is_empty() {
        "istiod".to_string()
    } else {
        format!("istiod-{revision}")
    };
    default_config.insert(
        "discoveryAddress".into(),
        json!(format!("{istiod}.{ISTIOD_NAMESPACE}.svc:15012")),
    );

    let root = match text(v, "/meshConfig/rootNamespace") {
        s if s.is_empty() => text(v, "/global/istioNamespace"),
        s => s,
    };
    let mut mesh = json!({
        "trustDomain": "cluster.local",
        "rootNamespace": root,
        "defaultConfig": default_config,
    });
    if prometheus || stackdriver {
        let metrics: Vec<&str> = [(prometheus, "prometheus"), (stackdriver, "stackdriver")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        mesh["defaultProviders"] = json!({"metrics": metrics});
        if stackdriver {
            mesh["defaultProviders"]["accessLogging"] = json!(["stackdriver"]);
        }
    }
    merge(&mut mesh, v.get("meshConfig").unwrap_or(&Value::Null));
    Ok(mesh)
}

/// ConfigMap `istio`, key `meshNetworks`.
fn mesh_networks(v: &Value) -> Value {
    match v.pointer("/global/meshNetworks") {
        Some(n) if truthy(Some(n)) => json!({"networks": n}),
        _ => json!({"networks": {}}),
    }
}

/// ConfigMap `istio-sidecar-injector`, key `config` (`templates/istiod-injector-configmap.yaml`):
/// the injection policy and the templates, which are the chart's files as they are.
fn injector_config(home: &Path, v: &Value) -> Result<Value> {
    let webhook = v.get("sidecarInjectorWebhook").cloned().unwrap_or_default();
    let field = |k: &str| webhook.get(k).cloned().unwrap_or_default();
    let mut templates = Map::new();
    let overrides = webhook.get("templates").and_then(Value::as_object);
    for (name, file) in TEMPLATES {
        if overrides.is_some_and(|o| o.contains_key(name)) {
            continue;
        }
        let path = home.join("istiod/chart/files").join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        // `trim | indent` under a `|` block: trimmed, with one final newline.
        templates.insert(name.into(), json!(format!("{}\n", text.trim())));
    }
    for (name, template) in overrides.into_iter().flatten() {
        templates.insert(name.clone(), template.clone());
    }
    let default_templates = match field("defaultTemplates") {
        t if truthy(Some(&t)) => t,
        _ => json!(["sidecar"]),
    };
    let annotations: Map<String, Value> = field("injectedAnnotations")
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, val)| (k.clone(), json!(scalar(val))))
        .collect();
    let selector = |k: &str| match field(k) {
        Value::Null => json!([]),
        s => s,
    };
    Ok(json!({
        "defaultTemplates": default_templates,
        "policy": text(v, "/global/proxy/autoInject"),
        "alwaysInjectSelector": selector("alwaysInjectSelector"),
        "neverInjectSelector": selector("neverInjectSelector"),
        "injectedAnnotations": annotations,
        "templates": templates,
    }))
}

/// ConfigMap `istio-sidecar-injector`, key `values`: the `.Values` the templates see at
/// injection time, cut down to what they use, as the chart cuts them.
fn injector_values(v: &Value) -> Value {
    let pick = |from: Option<&Value>, keys: &[&str]| -> Value {
        let from = from.and_then(Value::as_object);
        Value::Object(
            keys.iter()
                .filter_map(|k| Some(((*k).to_string(), from?.get(*k)?.clone())))
                .collect(),
        )
    };
    let mut values = pick(Some(v), &["global", "sidecarInjectorWebhook", "revision"]);
    values["pilot"] = pick(Some(v), &["cni", "env"]);
    values["gateways"] = pick(v.get("gateways"), &["securityContext", "seccompProfile"]);
    values
}

/// The chart's container env (`templates/deployment.yaml`), with Pod fields filled in as a
/// Deployment `istiod` in `istio-system` would have them.
fn istiod_env(v: &Value) -> Result<Vec<(String, String)>> {
    let revision = match text(v, "/revision") {
        r if r.is_empty() => REVISION.to_string(),
        r => r,
    };
    let mut env = vec![
        ("REVISION".to_string(), revision),
        (
            "PILOT_CERT_PROVIDER".into(),
            text(v, "/global/pilotCertProvider"),
        ),
        // Also the leader-election identity: the same across restarts, so a restarted istiod
        // takes its leases back at once instead of waiting for them to expire.
        ("POD_NAME".into(), "istiod".into()),
        ("POD_NAMESPACE".into(), ISTIOD_NAMESPACE.into()),
        ("SERVICE_ACCOUNT".into(), "istiod".into()),
    ];
    let chart_env = v.get("env").and_then(Value::as_object);
    if !chart_env.is_some_and(|e| e.contains_key("CA_TRUSTED_NODE_ACCOUNTS")) {
        let ns = match text(v, "/trustedZtunnelNamespace") {
            s if s.is_empty() => ISTIOD_NAMESPACE.to_string(),
            s => s,
        };
        let name = match text(v, "/trustedZtunnelName") {
            s if s.is_empty() => "ztunnel".to_string(),
            s => s,
        };
        env.push(("CA_TRUSTED_NODE_ACCOUNTS".into(), format!("{ns}/{name}")));
    }
    for (k, val) in chart_env.into_iter().flatten() {
        env.push((k.clone(), scalar(val)));
    }
    if truthy(v.get("traceSampling")) {
        env.push(("PILOT_TRACE_SAMPLING".into(), text(v, "/traceSampling")));
    }
    if truthy(v.pointer("/taint/enabled")) || truthy(v.pointer("/global/externalIstiod")) {
        return Err(render_error(
            "istiod env",
            "taint and externalIstiod are not modelled",
        ));
    }
    env.push((
        "PILOT_ENABLE_ANALYSIS".into(),
        text(v, "/global/istiod/enableAnalysis"),
    ));
    let cluster = match text(v, "/global/multiCluster/clusterName") {
        s if s.is_empty() => "Kubernetes".to_string(),
        s => s,
    };
    env.push(("CLUSTER_ID".into(), cluster));
    // Not the chart's: the webhooks call https://127.0.0.1:PORT, so istiod's serving
    // certificate needs that IP among its names (an IP here becomes an IP SAN).
    env.push(("ISTIOD_CUSTOM_HOST".into(), "127.0.0.1".into()));
    Ok(env)
}

// ---- Webhook configurations -------------------------------------------------------------

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// `templates/mutatingwebhook.yaml` for the default revision: which Pods reach the injector
/// (istiod then applies the injection policy to those that do).
fn injector_webhooks(base: &str) -> Value {
    let rev = "istio.io/rev";
    let injection = "istio-injection";
    let inject = "sidecar.istio.io/inject";
    let hook = |prefix: &str, namespace: Vec<Value>, object: Vec<Value>| {
        json!({
            "name": format!("{prefix}sidecar-injector.istio.io"),
            "clientConfig": {"url": format!("{base}/inject")},
            "sideEffects": "None",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"]}],
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": namespace},
            "objectSelector": {"matchExpressions": object},
        })
    };
    let not_disabled = || expr(inject, "NotIn", &["false"]);
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": INJECTOR_WEBHOOK,
                     "labels": {rev: REVISION, "app": "sidecar-injector"}},
        "webhooks": [
            // Namespace of this revision (unless it also has the legacy label).
            hook("rev.namespace.",
                vec![expr(rev, "In", &[REVISION]), expr(injection, "DoesNotExist", &[])],
                vec![not_disabled()]),
            // Pod of this revision in an unlabelled namespace.
            hook("rev.object.",
                vec![expr(rev, "DoesNotExist", &[]), expr(injection, "DoesNotExist", &[])],
                vec![not_disabled(), expr(rev, "In", &[REVISION])]),
            // Legacy namespace label.
            hook("namespace.",
                vec![expr(injection, "In", &["enabled"])],
                vec![not_disabled()]),
            // Pod asking for injection in an unlabelled namespace.
            hook("object.",
                vec![expr(injection, "DoesNotExist", &[]), expr(rev, "DoesNotExist", &[])],
                vec![expr(inject, "In", &["true"]), expr(rev, "DoesNotExist", &[])]),
        ],
    })
}

/// The istio-discovery chart's validator (objects labelled with this revision) and the base
/// chart's default validator (everything else). Both start fail-open, as Helm installs them;
/// istiod's validation controller patches their CA and switches them to fail-closed.
fn validating_webhooks(base: &str) -> [(&'static str, Value); 2] {
    let config = |name: &str, hook: &str, object_selector: Option<Value>| {
        let mut webhook = json!({
            "name": hook,
            "clientConfig": {"url": format!("{base}/validate")},
            "rules": [{"operations": ["CREATE", "UPDATE"],
                       "apiGroups": ["security.istio.io", "networking.istio.io",
                                     "telemetry.istio.io", "extensions.istio.io"],
                       "apiVersions": ["*"], "resources": ["*"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        });
        if let Some(selector) = object_selector {
            webhook["objectSelector"] = selector;
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name,
                         "labels": {"istio.io/rev": REVISION, "app": "istiod", "istio": "istiod"}},
            "webhooks": [webhook],
        })
    };
    let revision = json!({"matchExpressions": [expr("istio.io/rev", "In", &[REVISION])]});
    [
        (
            REVISION_VALIDATOR,
            config(
                REVISION_VALIDATOR,
                "rev.validation.istio.io",
                Some(revision),
            ),
        ),
        (
            DEFAULT_VALIDATOR,
            config(DEFAULT_VALIDATOR, "validation.istio.io", None),
        ),
    ]
}

/// An istiod the simulator can restart (its Sail plays the operator that manages istiod).
pub struct SharedIstiod {
    istiod: tokio::sync::Mutex<Istiod>,
    ambient: std::sync::atomic::AtomicBool,
    version: String,
}

impl SharedIstiod {
    /// Shares a running istiod.
    pub fn new(istiod: Istiod) -> Self {
        Self {
            ambient: std::sync::atomic::AtomicBool::new(istiod.ambient()),
            version: istiod.version().to_string(),
            istiod: tokio::sync::Mutex::new(istiod),
        }
    }

    /// Its log.
    pub async fn log_path(&self) -> PathBuf {
        self.istiod.lock().await.log_path()
    }

    /// Its resident memory now.
    pub async fn rss_bytes(&self) -> Option<u64> {
        self.istiod.lock().await.rss_bytes()
    }

    /// Stops istiod without blocking the runtime (see [`Istiod::stop`]).
    pub async fn stop(self) {
        self.istiod.into_inner().stop().await;
    }
}

impl std::fmt::Debug for SharedIstiod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedIstiod")
            .field("ambient", &self.ambient)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl meshmig_sim::Istiod for SharedIstiod {
    fn restart(
        &self,
        ambient: bool,
    ) -> futures::future::BoxFuture<'_, std::result::Result<(), String>> {
        Box::pin(async move {
            let mut istiod = self.istiod.lock().await;
            istiod.restart(ambient).await.map_err(|e| e.to_string())?;
            self.ambient
                .store(ambient, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
    }

    fn ambient(&self) -> bool {
        self.ambient.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn version(&self) -> String {
        self.version.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_helm_merge_overwrite() {
        let mut dst = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        merge(&mut dst, &json!({"a": {"c": [3], "e": true}, "d": "y"}));
        assert_eq!(dst, json!({"a": {"b": 1, "c": [3], "e": true}, "d": "y"}));
    }

    #[test]
    fn values_it_does_not_render_are_errors() {
        let v = json!({"global": {"proxy": {"tracer": "zipkin"}}});
        let err = mesh_config(&v).unwrap_err().to_string();
        assert!(err.contains("tracer \"zipkin\" is not modelled"), "{err}");
    }

    #[test]
    fn scalars_print_as_go_templates_do() {
        assert_eq!(scalar(&json!(1.0)), "1");
        assert_eq!(scalar(&json!(0.5)), "0.5");
        assert_eq!(scalar(&json!(true)), "true");
        assert_eq!(scalar(&json!("s")), "s");
    }

    #[test]
    fn the_ambient_profile_reaches_the_mesh_config_the_injector_and_istiod() {
        let mut v = json!({
            "revision": "", "env": {}, "cni": {"enabled": false},
            "telemetry": {"enabled": true, "v2": {"enabled": true, "prometheus": {"enabled": true},
                          "stackdriver": {"enabled": false}}},
            "meshConfig": {"enablePrometheusMerge": true},
            "global": {"istioNamespace": "istio-system", "variant": "", "meshID": "",
                       "pilotCertProvider": "istiod", "istiod": {"enableAnalysis": false},
                       "multiCluster": {"clusterName": ""}, "remotePilotAddress": "",
                       "proxy": {"tracer": "none", "autoInject": "enabled"}},
        });
        merge(
            &mut v,
            &json!({
                "meshConfig": {"defaultConfig": {"proxyMetadata": {"ISTIO_META_ENABLE_HBONE": "true"}}},
                "global": {"variant": "distroless"},
                "pilot": {"env": {"PILOT_ENABLE_AMBIENT": "true"}},
            }),
        );
        let pilot = v["pilot"].clone();
        merge(&mut v, &pilot);
        let mesh = mesh_config(&v).unwrap();
        assert_eq!(
            mesh["defaultConfig"]["proxyMetadata"]["ISTIO_META_ENABLE_HBONE"],
            "true"
        );
        assert_eq!(mesh["defaultConfig"]["image"]["imageType"], "distroless");
        assert_eq!(
            mesh["defaultConfig"]["discoveryAddress"],
            "istiod.istio-system.svc:15012"
        );
        assert_eq!(mesh["defaultProviders"], json!({"metrics": ["prometheus"]}));
        assert_eq!(mesh["enablePrometheusMerge"], true);
        assert_eq!(
            injector_values(&v)["pilot"]["env"]["PILOT_ENABLE_AMBIENT"],
            "true"
        );
        let env = istiod_env(&v).unwrap();
        assert!(env.contains(&("PILOT_ENABLE_AMBIENT".into(), "true".into())));
        assert!(env.contains(&("REVISION".into(), "default".into())));
    }
}
