//! The API client, with a layer that counts every request by verb and resource (for the
//! `meshmig_api_requests` metric and the API-cost benchmark).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Verb and resource of an API request path, e.g. `("list", "pods")`.
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/group/version/...
    let rest: &[&str] = match parts.first() {
        Some(&"api") => parts.get(2..).unwrap_or_default(),
        Some(&"apis") => parts.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
        &rest[2..]
    } else {
        rest
    };
    let resource = rest.first().copied().unwrap_or("other").to_string();
    let named = rest.len() >= 2;
    let subresource = rest.get(2).copied();
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    let resource = match subresource {
        Some(s) => format!("{resource}/{s}"),
        None => resource,
    };
    (verb, resource)
}

/// Tower layer counting requests.
#[derive(Clone)]
pub struct CountLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Service counting requests.
#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<Request<B>> for Count<S>
where
    S: Service<Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
        self.metrics.api_request(verb, &resource);
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let code = resp.status().as_u16();
            if code >= 400 {
                metrics.api_error(code);
            }
            Ok(resp)
        })
    }
}

/// A client for the inferred configuration (KUBECONFIG or in-cluster) that counts requests.
pub async fn counting_client(metrics: Arc<Metrics>) -> Result<Client, String> {
    let config = Config::infer().await.map_err(|e| e.to_string())?;
    let builder = ClientBuilder::try_from(config).map_err(|e| e.to_string())?;
    Ok(builder.with_layer(&CountLayer(metrics)).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified() {
        let m = http::Method::GET;
        assert_eq!(
            classify(&m, "/api/v1/pods", Some("watch=true&resourceVersion=1")),
            ("watch", "pods".into())
        );
        assert_eq!(
            classify(&m, "/api/v1/namespaces/a/pods", None),
            ("list", "pods".into())
        );
        assert_eq!(
            classify(&m, "/api/v1/namespaces/a/pods/p", None),
            ("get", "pods".into())
        );
        assert_eq!(
            classify(
                &http::Method::PATCH,
                "/apis/meshmig.io/v1alpha1/meshmigrations/x/status",
                None
            ),
            ("patch", "meshmigrations/status".into())
        );
        assert_eq!(
            classify(
                &http::Method::DELETE,
                "/apis/security.istio.io/v1/namespaces/b/authorizationpolicies/p",
                None
            ),
            ("delete", "authorizationpolicies".into())
        );
        assert_eq!(
            classify(&http::Method::GET, "/api/v1/namespaces/b", None),
            ("get", "namespaces".into())
        );
    }
}
