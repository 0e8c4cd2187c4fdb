//! The sidecar injector as a real mutating admission webhook: HTTPS on a loopback port with a
//! freshly generated CA, registered with the API server by URL.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use meshmig_api::names;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::controller::apply;
use crate::error::is_not_found;
use crate::inject::{self, Decision, Sidecar};
use crate::{Ctx, Error, MANAGED_BY, Result, SIM_NAMESPACE, WEBHOOK_CONFIGURATION, mesh};

/// Name of the webhook inside the configuration.
pub const WEBHOOK_NAME: &str = "sidecar-injector.meshmig-sim.meshmig.io";
/// Namespaces the webhook is never called for.
pub const EXCLUDED_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// A serving certificate for `ip`, signed by a new CA; returns the rustls config and the CA's
/// PEM for the webhook's `caBundle`.
pub fn tls(ip: IpAddr) -> Result<(rustls::ServerConfig, String)> {
    let err = |what: &str, e: rcgen::Error| Error::Tls(format!("{what}: {e}"));
    let ca_key = KeyPair::generate().map_err(|e| err("generate CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA parameters", e))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meshmig-sim injector CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| err("self-sign CA", e))?;

    let key = KeyPair::generate().map_err(|e| err("generate serving key", e))?;
    let mut params = CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])
        .map_err(|e| err("serving certificate parameters", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "meshmig-sim injector");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|e| err("sign serving certificate", e))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![
        CertificateDer::from(cert.der().to_vec()),
        CertificateDer::from(ca.der().to_vec()),
    ];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| Error::Tls(format!("serving certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, ca.pem()))
}

/// The running HTTPS server.
pub(crate) struct WebhookServer {
    addr: SocketAddr,
    ca_pem: String,
    task: JoinHandle<()>,
}

impl WebhookServer {
    /// Listens on an ephemeral port of `config.webhook_addr` and serves until `token` fires.
    pub(crate) async fn start(ctx: Arc<Ctx>, token: CancellationToken) -> Result<Self> {
        let listener = TcpListener::bind((ctx.config.webhook_addr, 0)).await?;
        let addr = listener.local_addr()?;
        let (config, ca_pem) = tls(addr.ip())?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let task = tokio::spawn(serve(listener, acceptor, ctx, token));
        info!(%addr, "injection webhook listening");
        Ok(Self { addr, ca_pem, task })
    }

    pub(crate) fn url(&self) -> String {
        format!("https://{}/inject", self.addr)
    }

    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(crate) fn into_task(self) -> JoinHandle<()> {
        self.task
    }
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: Arc<Ctx>,
    token: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let acceptor = acceptor.clone();
                    let ctx = ctx.clone();
                    connections.spawn(async move {
                        let tls = match acceptor.accept(stream).await {
                            Ok(tls) => tls,
                            Err(e) => return debug!(%peer, error = %e, "TLS handshake failed"),
                        };
                        let service = service_fn(move |req| handle(req, ctx.clone()));
                        if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(tls), service).await {
                            debug!(%peer, error = %e, "webhook connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    connections.abort_all();
    debug!("injection webhook stopped");
}

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || !req.uri().path().starts_with("/inject") {
        return Ok(respond(
            StatusCode::NOT_FOUND,
            "meshmig-sim serves POST /inject only\n",
        ));
    }
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                format!("reading body: {e}\n"),
            ));
        }
    };
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview of a Pod: {e}\n"),
            ));
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(e) => {
            return Ok(respond(
                StatusCode::BAD_REQUEST,
                format!("AdmissionReview without request: {e}\n"),
            ));
        }
    };
    let review = admit(&ctx, &request).await.into_review();
    Ok(match serde_json::to_vec(&review) {
        Ok(json) => {
            let mut response = respond(StatusCode::OK, json);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding response: {e}\n"),
        ),
    })
}

/// The admission decision for one Pod CREATE. Failing to read the cluster refuses the Pod
/// (like failurePolicy Fail would); its controller retries.
async fn admit(ctx: &Ctx, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(pod) = request.object.as_ref() else {
        return response;
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let pod_name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_default();

    let ns = match Api::<Namespace>::all(ctx.client.clone())
        .get(&namespace)
        .await
    {
        Ok(ns) => ns,
        Err(e) => {
            return response.deny(format!(
                "meshmig-sim injector: cannot read Namespace {namespace}: {e}"
            ));
        }
    };
    let revision = match inject::decide(&ns.metadata.labels.unwrap_or_default(), pod) {
        Decision::Skip(why) => {
            debug!(pod = %format!("{namespace}/{pod_name}"), why, "not injecting");
            return response;
        }
        Decision::Inject { revision } => revision,
    };
    let control_plane = match mesh::observe(&ctx.client, &ctx.config.default_version).await {
        Ok(cp) => cp,
        Err(e) => return response.deny(format!("meshmig-sim injector: {e}")),
    };
    let sidecar = Sidecar {
        version: control_plane.version.clone(),
        hbone: control_plane.ambient,
        revision,
        istiod_namespace: control_plane.namespace.clone(),
    };
    let patch: json_patch::Patch =
        match serde_json::from_value(Value::Array(inject::patch(pod, &sidecar))) {
            Ok(patch) => patch,
            Err(e) => {
                return response.deny(format!(
                    "meshmig-sim injector: building patch for {namespace}/{pod_name}: {e}"
                ));
            }
        };
    match response.clone().with_patch(patch) {
        Ok(patched) => {
            info!(pod = %format!("{namespace}/{pod_name}"), hbone = sidecar.hbone, version = %sidecar.version,
                reason = %control_plane.reason, dry_run = request.dry_run, "injected sidecar");
            patched
        }
        Err(e) => response.deny(format!(
            "meshmig-sim injector: encoding patch for {namespace}/{pod_name}: {e}"
        )),
    }
}

/// The MutatingWebhookConfiguration pointing the API server at `url`.
pub fn configuration(url: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": WEBHOOK_CONFIGURATION,
            "labels": {names::LABEL_MANAGED_BY: MANAGED_BY},
        },
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": {
                "url": url,
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "rules": [{
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXCLUDED_NAMESPACES,
            }]},
            // Pods that opt out are never even sent; the handler re-checks everything else.
            "objectSelector": {"matchExpressions": [{
                "key": names::istio::SIDECAR_INJECT, "operator": "NotIn", "values": ["false"],
            }]},
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        }],
    })
}

/// Registers (or re-points) the webhook.
pub(crate) async fn register(client: &Client, url: &str, ca_pem: &str) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}");
    apply(
        &api,
        WEBHOOK_CONFIGURATION,
        &configuration(url, ca_pem),
        what,
    )
    .await?;
    info!(url, "injection webhook registered");
    Ok(())
}

/// Removes the webhook registration; absent is fine.
pub(crate) async fn unregister(client: &Client) -> Result<()> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match api
        .delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(Error::kube(
            "delete",
            format!("MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"),
            e,
        )),
    }
}

/// Waits until the API server actually calls the webhook: it loads webhook configurations
/// asynchronously, and nothing can be watched for that, so a dry-run Pod that asks for
/// injection is created until it comes back injected.
pub(crate) async fn wait_until_called(client: &Client, timeout: Duration) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), SIM_NAMESPACE);
    let canary: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "meshmig-sim-canary", "labels": {names::istio::SIDECAR_INJECT: "true"}},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "canary", "image": "registry.k8s.io/pause:3.10"}],
        },
    }))
    .map_err(|e| Error::json("canary Pod", e))?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let last = match api.create(&params, &canary).await {
            Ok(pod) if inject::has_sidecar(&pod) => return Ok(()),
            Ok(_) => "a dry-run Pod was admitted without a sidecar".to_string(),
            Err(e) => format!("dry-run Pod creation failed: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(Error::WebhookNotCalled {
                seconds: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_excludes_system_namespaces_and_fails_closed() {
        let cfg = configuration("https://127.0.0.1:1234/inject", "PEM");
        let hook = &cfg["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["clientConfig"]["caBundle"], "UEVN");
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"][0],
            "kube-system"
        );
        let parsed: MutatingWebhookConfiguration = serde_json::from_value(cfg).unwrap();
        assert_eq!(
            parsed.webhooks.unwrap()[0].client_config.url.as_deref(),
            Some("https://127.0.0.1:1234/inject")
        );
    }

    #[test]
    fn certificates_are_generated_for_the_listen_address() {
        let (config, ca) = tls(IpAddr::from([127, 0, 0, 1])).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
