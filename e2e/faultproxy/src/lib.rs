//! A fault-injecting proxy between a Kubernetes client (the operator under test) and the
//! API server, for reliability tests.
//!
//! It listens on `127.0.0.1` over plain HTTP and forwards to the API server named by a
//! kubeconfig (HTTPS, trusting that kubeconfig's CA). Clients use
//! [`FaultProxy::kubeconfig_path`]: the same kubeconfig with the server replaced by the
//! proxy, so the same user and bearer token; the `Authorization` header is passed through.
//! (Client-certificate users and protocol upgrades — exec, attach, port-forward — are not
//! supported.)
//!
//! With probability `rate` (changeable at runtime) a request that matches the [`Filter`]
//! gets one [`FaultKind`]: HTTP 500, HTTP 429 with `Retry-After: 1`, HTTP 409 `Conflict`
//! (writes only), all with a `Status` body as the API server writes it; a slow response; or
//! a connection closed without a response, before or after the request reached the API
//! server. Watch streams are cut: in each period of their life (5 s) with probability
//! `rate`. The choice is deterministic for a seed and a sequence of requests.
//!
//! It counts requests and injected faults ([`FaultProxy::stats`]) and records every write
//! request with the API server's answer and a hash of its body ([`FaultProxy::writes`]), so
//! a test can look for duplicate or lost writes.
//!
//! ```no_run
//! # async fn demo(kubeconfig: &std::path::Path) -> Result<(), meshmig_faultproxy::Error> {
//! use meshmig_faultproxy::{FaultConfig, FaultProxy, Filter};
//! let proxy = FaultProxy::start(kubeconfig, FaultConfig::rate(0.1, 42)).await?;
//! // run the client with KUBECONFIG=proxy.kubeconfig_path() …
//! proxy.set_filter(Filter::only("patch", "namespaces"));
//! proxy.set_rate(1.0);
//! println!("{}", proxy.stats().summary());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod fault;

pub use fault::{FaultKind, Filter, RequestInfo, Rng};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;
type Upstream = Arc<tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>>;

/// Errors starting the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream kubeconfig cannot be used.
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An I/O error.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS client configuration cannot be built.
    #[error("TLS: {0}")]
    Tls(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Fault settings.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Probability (0.0–1.0) that a matching request gets a fault.
    pub rate: f64,
    /// Seed of the fault choice.
    pub seed: u64,
    /// Which requests may get a fault.
    pub filter: Filter,
    /// Enabled kinds (empty: all).
    pub kinds: Vec<FaultKind>,
    /// Kinds never injected into the requests their filter matches, e.g. `(Conflict,
    /// create)`.
    pub exclude: Vec<(FaultKind, Filter)>,
    /// Delay range of [`FaultKind::Slow`].
    pub slow: (Duration, Duration),
    /// Watch streams are cut ([`FaultKind::WatchCut`]) with probability `rate` in each
    /// period of this length of their life (at least 0.5 s into the period): at rate 1 within
    /// 0.5–5 s by default, at rate 0.1 after 50 s on average.
    pub watch_period: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            seed: 1,
            filter: Filter::any(),
            kinds: Vec::new(),
            exclude: Vec::new(),
            slow: (Duration::from_millis(500), Duration::from_secs(2)),
            watch_period: Duration::from_secs(5),
        }
    }
}

impl FaultConfig {
    /// Every kind of fault on every request, at `rate`, with `seed`.
    pub fn rate(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            seed,
            ..Self::default()
        }
    }
}

/// Requests and faults of one call (`verb resource`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    pub requests: u64,
    /// Faults injected into them.
    pub faults: u64,
}

/// What went through the proxy.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Requests received.
    pub requests: u64,
    /// Faults injected, by kind (a watch cut counts when the stream is cut, not when its time
    /// is drawn: a stream that ends first is not cut).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Watch requests.
    pub watches: u64,
    /// By call, e.g. `patch namespaces`.
    pub calls: BTreeMap<String, CallStats>,
    /// Requests the API server could not be reached for (answered with 502).
    pub upstream_errors: u64,
}

impl Stats {
    /// Faults injected, all kinds.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Faults of one kind.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    /// Statistics of one call, e.g. `stats.call("patch namespaces")`.
    pub fn call(&self, call: &str) -> CallStats {
        self.calls.get(call).copied().unwrap_or_default()
    }

    /// One line: requests and faults by kind.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .map(|k| format!("{k}: {}", self.faults_of(*k)))
            .collect();
        format!(
            "{} requests ({} watches), {} faults injected ({}), upstream errors: {}",
            self.requests,
            self.watches,
            self.total_faults(),
            kinds.join(", "),
            self.upstream_errors
        )
    }
}

/// One write request (POST, PUT, PATCH, DELETE) as the proxy saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteRecord {
    /// Order of arrival (over all requests).
    pub seq: u64,
    /// When it arrived, since the proxy started.
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub verb: &'static str,
    /// Resource (with subresource).
    pub resource: String,
    pub namespace: Option<String>,
    /// Object name: from the path, or `metadata.name` of a POST body.
    pub name: Option<String>,
    /// SHA-256 (hex) of the body of a POST or PATCH.
    pub body_sha256: Option<String>,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// Whether the request was sent to the API server.
    pub forwarded: bool,
    /// The API server's status code (None when not forwarded or no answer came).
    pub status: Option<u16>,
}

impl WriteRecord {
    /// Whether the API server carried it out (forwarded and answered 2xx), whatever the
    /// client saw.
    pub fn succeeded(&self) -> bool {
        self.forwarded && self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

struct State {
    config: FaultConfig,
    rng: Rng,
    stats: Stats,
    writes: Vec<WriteRecord>,
    seq: u64,
}

struct Target {
    /// `host:port` for the Host header.
    authority: String,
    host: String,
    port: u16,
    /// Path prefix of the server URL (usually empty).
    base_path: String,
    tls: Option<Tls>,
}

/// How to reach an https API server.
struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

struct Shared {
    target: Target,
    state: Mutex<State>,
    started: Instant,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running proxy. Dropping it stops it (open connections are closed).
pub struct FaultProxy {
    addr: SocketAddr,
    kubeconfig: PathBuf,
    shared: Arc<Shared>,
    token: CancellationToken,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts a proxy for the API server of `upstream_kubeconfig` (its current context) on
    /// an ephemeral port of 127.0.0.1, and writes the kubeconfig for clients.
    pub async fn start(upstream_kubeconfig: &Path, config: FaultConfig) -> Result<Self, Error> {
        let mut upstream = UpstreamKubeconfig::read(upstream_kubeconfig)?;
        let target = upstream.target()?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(io("binding 127.0.0.1"))?;
        let addr = listener.local_addr().map_err(io("local address"))?;
        let client = upstream.write_for_clients(addr)?;
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State {
                rng: Rng::new(config.seed),
                config,
                stats: Stats::default(),
                writes: Vec::new(),
                seq: 0,
            }),
            started: Instant::now(),
        });
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shared.clone(), token.clone()));
        debug!(%addr, "fault proxy listening");
        Ok(FaultProxy {
            addr,
            kubeconfig: client.path,
            shared,
            token,
            task,
            _dir: client.dir,
        })
    }

    /// A kubeconfig for clients: the upstream one with the server replaced by the proxy.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the fault rate (clamped to 0.0–1.0).
    pub fn set_rate(&self, rate: f64) {
        self.shared.state().config.rate = rate.clamp(0.0, 1.0);
    }

    /// The current fault rate.
    pub fn rate(&self) -> f64 {
        self.shared.state().config.rate
    }

    /// Changes which requests may get a fault.
    pub fn set_filter(&self, filter: Filter) {
        self.shared.state().config.filter = filter;
    }

    /// Changes the enabled kinds (empty: all).
    pub fn set_kinds(&self, kinds: Vec<FaultKind>) {
        self.shared.state().config.kinds = kinds;
    }

    /// Changes the exclusions: kinds never injected into the requests their filter matches.
    pub fn set_exclusions(&self, exclude: Vec<(FaultKind, Filter)>) {
        self.shared.state().config.exclude = exclude;
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.shared.state().stats.clone()
    }

    /// Every write request so far, in order of completion.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.state().writes.clone()
    }

    /// Time since the proxy started (the clock of [`WriteRecord::at`]).
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.token.cancel();
        self.task.abort();
    }
}

/// The kubeconfig the proxy forwards to, parsed.
struct UpstreamKubeconfig<'a> {
    path: &'a Path,
    kubeconfig: Value,
    /// Index in `clusters` of the cluster of its current context.
    cluster: usize,
}

/// The kubeconfig written for clients, in a directory that lives as long as the proxy.
struct ClientKubeconfig {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl<'a> UpstreamKubeconfig<'a> {
    fn bad(&self, message: String) -> Error {
        Error::Kubeconfig {
            path: self.path.to_path_buf(),
            message,
        }
    }

    fn read(path: &'a Path) -> Result<Self, Error> {
        let bad = |message: String| Error::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let text =
            std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        let kubeconfig: Value =
            serde_saphyr::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
        let cluster = cluster_index(&kubeconfig).map_err(bad)?;
        Ok(Self {
            path,
            kubeconfig,
            cluster,
        })
    }

    fn target(&self) -> Result<Target, Error> {
        let cluster = &self.kubeconfig["clusters"][self.cluster]["cluster"];
        target(cluster, self.path).map_err(|e| match e {
            Error::Kubeconfig { message, .. } => self.bad(message),
            other => other,
        })
    }

    /// The same kubeconfig with the server replaced by the proxy at `addr`.
    fn write_for_clients(&mut self, addr: SocketAddr) -> Result<ClientKubeconfig, Error> {
        self.kubeconfig["clusters"][self.cluster]["cluster"] =
            json!({"server": format!("http://{addr}")});
        let dir = tempfile::Builder::new()
            .prefix("meshmig-faultproxy-")
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        let path = dir.path().join("kubeconfig");
        let body = serde_json::to_string_pretty(&self.kubeconfig)
            .map_err(|e| self.bad(format!("re-encoding: {e}")))?;
        std::fs::write(&path, body).map_err(io(format!("writing {}", path.display())))?;
        Ok(ClientKubeconfig { dir, path })
    }
}

/// Index in `clusters` of the current context's cluster (or the only cluster).
fn cluster_index(kubeconfig: &Value) -> Result<usize, String> {
    let clusters = kubeconfig["clusters"]
        .as_array()
        .ok_or("no clusters".to_string())?;
    let name = kubeconfig["current-context"]
        .as_str()
        .filter(|c| !c.is_empty())
        .and_then(|current| {
            kubeconfig["contexts"]
                .as_array()?
                .iter()
                .find(|c| c["name"].as_str() == Some(current))?["context"]["cluster"]
                .as_str()
        });
    match name {
        Some(n) => clusters
            .iter()
            .position(|c| c["name"].as_str() == Some(n))
            .ok_or(format!("cluster {n} of the current context is missing")),
        None if clusters.len() == 1 => Ok(0),
        None => Err("no current context, and more than one cluster".into()),
    }
}

fn target(cluster: &Value, kubeconfig: &Path) -> Result<Target, Error> {
    let bad = |message: String| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        message,
    };
    let server = cluster["server"]
        .as_str()
        .ok_or_else(|| bad("the cluster has no server".into()))?;
    let uri: http::Uri = server
        .parse()
        .map_err(|e| bad(format!("server {server}: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad(format!("server {server}: not http(s)"))),
    };
    let host = uri
        .host()
        .ok_or_else(|| bad(format!("server {server}: no host")))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_else(|| format!("{host}:{port}"));
    let base_path = uri.path().trim_end_matches('/').to_string();
    let tls = if https {
        Some(tls(cluster, kubeconfig, &host)?)
    } else {
        None
    };
    Ok(Target {
        authority,
        host,
        port,
        base_path,
        tls,
    })
}

/// The client TLS configuration trusting the cluster's CA.
fn tls(cluster: &Value, kubeconfig: &Path, host: &str) -> Result<Tls, Error> {
    let bad = |message: String| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        message,
    };
    let pem = ca_pem(cluster, kubeconfig)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = cluster["tls-server-name"]
        .as_str()
        .unwrap_or(host)
        .to_string();
    let server_name =
        ServerName::try_from(name.clone()).map_err(|e| bad(format!("server name {name}: {e}")))?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

/// The cluster's CA certificates (PEM), inline or from a file beside the kubeconfig.
fn ca_pem(cluster: &Value, kubeconfig: &Path) -> Result<Vec<u8>, Error> {
    let bad = |message: String| Error::Kubeconfig {
        path: kubeconfig.to_path_buf(),
        message,
    };
    match (
        cluster["certificate-authority-data"].as_str(),
        cluster["certificate-authority"].as_str(),
    ) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| bad(format!("certificate-authority-data: {e}"))),
        (None, Some(file)) => {
            let file = kubeconfig
                .parent()
                .map_or_else(|| PathBuf::from(file), |d| d.join(file));
            std::fs::read(&file).map_err(io(format!("reading {}", file.display())))
        }
        (None, None) => Err(bad("https server without a CA".into())),
    }
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, BoxError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        Some(tls) => {
            let stream = tls.connector.connect(tls.server_name.clone(), tcp).await?;
            handshake(stream).await
        }
        None => handshake(tcp).await,
    }
}

/// An HTTP/1.1 client connection over `stream`, driven by a task of its own.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        let _ = stream.set_nodelay(true);
                        // One upstream connection per client connection, opened on demand.
                        let upstream: Upstream = Arc::default();
                        let service = service_fn(move |req| handle(req, shared.clone(), upstream.clone()));
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            debug!(error = %e, "client connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.abort_all();
}

/// The connection is closed without a response.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by meshmig-faultproxy")
    }
}

impl std::error::Error for Dropped {}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if HOP_BY_HOP.contains(&k.as_str()) || k == header::HOST || k == header::CONTENT_LENGTH {
            continue;
        }
        to.append(k.clone(), v.clone());
    }
}

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn status_response(
    code: u16,
    reason: &str,
    message: &str,
    info: &RequestInfo,
) -> Response<ProxyBody> {
    let body =
        serde_json::to_vec(&fault::status_body(code, reason, message, info)).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if code == 429 {
        resp.headers_mut().insert(
            HeaderName::from_static("retry-after"),
            HeaderValue::from_static("1"),
        );
    }
    resp
}

fn body_name(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .pointer("/metadata/name")?
        .as_str()
        .map(str::to_string)
}

/// What was decided for a request.
struct Decision {
    seq: u64,
    fault: Option<FaultKind>,
    /// Delay of a slow response.
    delay: Duration,
    /// When to cut a watch stream.
    cut: Option<Duration>,
}

fn decide(shared: &Shared, info: &RequestInfo) -> Decision {
    let mut st = shared.state();
    let st = &mut *st;
    st.seq += 1;
    st.stats.requests += 1;
    if info.watch {
        st.stats.watches += 1;
    }
    let c = &st.config;
    let fault = fault::choose(&mut st.rng, c.rate, &c.filter, &c.kinds, &c.exclude, info);
    let delay = match fault {
        Some(FaultKind::Slow) => {
            let (lo, hi) = c.slow;
            Duration::from_millis(
                st.rng
                    .millis_between(lo.as_millis() as u64, hi.as_millis() as u64),
            )
        }
        _ => Duration::ZERO,
    };
    let cut = fault::watch_cut_after(
        &mut st.rng,
        c.rate,
        &c.filter,
        &c.kinds,
        &c.exclude,
        info,
        c.watch_period,
    );
    let call = st.stats.calls.entry(info.call()).or_default();
    call.requests += 1;
    if let Some(k) = fault {
        call.faults += 1;
        *st.stats.faults.entry(k).or_default() += 1;
    }
    Decision {
        seq: st.seq,
        fault,
        delay,
        cut,
    }
}

fn record(shared: &Shared, rec: Option<WriteRecord>) {
    if let Some(rec) = rec {
        shared.state().writes.push(rec);
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: Upstream,
) -> Result<Response<ProxyBody>, BoxError> {
    let at = shared.started.elapsed();
    let (parts, body) = req.into_parts();
    let info = RequestInfo::parse(&parts.method, parts.uri.path(), parts.uri.query());
    let body = body.collect().await?.to_bytes();
    let d = decide(&shared, &info);
    let mut rec = info
        .is_write()
        .then(|| write_record(&parts, &info, &body, &d, at));
    if let Some(kind) = d.fault
        && let Some(early) = fault_before_forwarding(kind, &info, &d).await
    {
        record(&shared, rec);
        return early;
    }
    let resp = match forward(&shared.target, &upstream, &parts, body).await {
        Ok(resp) => resp,
        Err(e) => {
            debug!(error = %e, call = %info.call(), "upstream request failed");
            shared.state().stats.upstream_errors += 1;
            if let Some(r) = rec.as_mut() {
                // It may or may not have reached the API server.
                r.forwarded = true;
            }
            record(&shared, rec);
            return Ok(status_response(
                502,
                "InternalError",
                &format!("meshmig-faultproxy: the API server could not be reached: {e}"),
                &info,
            ));
        }
    };
    if let Some(r) = rec.as_mut() {
        r.forwarded = true;
        r.status = Some(resp.status().as_u16());
    }
    let answered = Answered {
        shared: &shared,
        info: &info,
        decision: &d,
        rec,
    };
    answered.respond(resp).await
}

fn write_record(
    parts: &http::request::Parts,
    info: &RequestInfo,
    body: &Bytes,
    d: &Decision,
    at: Duration,
) -> WriteRecord {
    WriteRecord {
        seq: d.seq,
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        verb: info.verb,
        resource: info.resource.clone(),
        namespace: info.namespace.clone(),
        name: info.name.clone().or_else(|| body_name(body)),
        body_sha256: matches!(parts.method, http::Method::POST | http::Method::PATCH)
            .then(|| format!("{:x}", Sha256::digest(body))),
        fault: d.fault,
        forwarded: false,
        status: None,
    }
}

/// The outcome of a fault that keeps the request from the API server (an error response,
/// or a dropped connection); `None` when it is still forwarded (after the delay of a slow
/// one).
async fn fault_before_forwarding(
    kind: FaultKind,
    info: &RequestInfo,
    d: &Decision,
) -> Option<Result<Response<ProxyBody>, BoxError>> {
    if let Some((code, reason, message)) = fault::injected_error(kind, info) {
        return Some(Ok(status_response(code, reason, &message, info)));
    }
    match kind {
        FaultKind::DropBefore => Some(Err(Dropped.into())),
        FaultKind::Slow => {
            tokio::time::sleep(d.delay).await;
            None
        }
        _ => None,
    }
}

/// A request the API server answered, on its way back to the client.
struct Answered<'a> {
    shared: &'a Arc<Shared>,
    info: &'a RequestInfo,
    decision: &'a Decision,
    rec: Option<WriteRecord>,
}

impl Answered<'_> {
    async fn respond(self, resp: Response<Incoming>) -> Result<Response<ProxyBody>, BoxError> {
        let (rparts, rbody) = resp.into_parts();
        let mut out = Response::builder()
            .status(rparts.status)
            .version(http::Version::HTTP_11);
        if let Some(h) = out.headers_mut() {
            copy_headers(&rparts.headers, h);
        }
        if self.info.watch && rparts.status.is_success() {
            let body = self.watch_body(rbody);
            return Ok(out.body(body)?);
        }
        let bytes = match rbody.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                record(self.shared, self.rec);
                return Err(e.into());
            }
        };
        record(self.shared, self.rec);
        if self.decision.fault == Some(FaultKind::DropAfter) {
            return Err(Dropped.into());
        }
        Ok(out.body(full(bytes))?)
    }

    /// A watch stream, streamed through (and cut when its time was drawn).
    fn watch_body(self, rbody: Incoming) -> ProxyBody {
        record(self.shared, self.rec);
        match self.decision.cut {
            Some(after) => CutBody {
                inner: rbody,
                deadline: Box::pin(tokio::time::sleep(after)),
                shared: self.shared.clone(),
                call: self.info.call(),
                done: false,
            }
            .boxed(),
            None => rbody.map_err(BoxError::from).boxed(),
        }
    }
}

async fn forward(
    target: &Target,
    upstream: &Upstream,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response<Incoming>, BoxError> {
    let mut guard = upstream.lock().await;
    let ready = match guard.as_mut() {
        Some(sender) => sender.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        *guard = Some(connect(target).await?);
    }
    let sender = guard.as_mut().ok_or("no upstream connection")?;
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(format!("{}{path}", target.base_path));
    if let Some(h) = req.headers_mut() {
        copy_headers(&parts.headers, h);
        h.insert(header::HOST, HeaderValue::from_str(&target.authority)?);
    }
    let req = req.body(Full::new(body))?;
    Ok(sender.send_request(req).await?)
}

/// A watch response body that ends with an error (the connection is cut) at `deadline`.
struct CutBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    shared: Arc<Shared>,
    call: String,
    done: bool,
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.done = true;
            let mut st = this.shared.state();
            *st.stats.faults.entry(FaultKind::WatchCut).or_default() += 1;
            st.stats.calls.entry(this.call.clone()).or_default().faults += 1;
            return Poll::Ready(Some(Err("watch stream cut by meshmig-faultproxy".into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(BoxError::from))),
            Poll::Pending => Poll::Pending,
        }
    }
}
