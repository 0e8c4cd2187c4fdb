//! What a probe Pod asks for and how its script judges the answer.
//!
//! meshmig's probe Pods (`crates/operator/src/probes.rs`) run one container with env `URL`
//! and `EXPECT_STATUS` or `EXPECT_DENIED`, and arguments `<script> probe -X <METHOD>
//! [-H "<name>: <value>"]...` that the script passes to curl. The script treats HTTP 403, HTTP
//! `000` (no response) or a failing curl as "denied"; otherwise the status must equal
//! `EXPECT_STATUS`. This module reads the same things and judges the same way.

use k8s_openapi::api::core::v1::{Container, Pod};
use meshmig_api::names::istio as n;

/// curl's default port for `http://`.
const HTTP_PORT: u16 = 80;

/// The request a probe Pod's curl sends, and what it expects back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRequest {
    /// The URL.
    pub url: Url,
    /// `-X`, default GET.
    pub method: String,
    /// `-H` headers, in order.
    pub headers: Vec<(String, String)>,
    /// What the script expects.
    pub expect: Expectation,
}

/// An `http://` URL, split as curl sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name, lower case.
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// The `Host` header curl sends: host, and `:port` when the URL names one.
    pub authority: String,
    /// Path and query (`/` when the URL has none).
    pub path: String,
}

/// The script's expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// `EXPECT_STATUS`: this HTTP status.
    Status(u16),
    /// `EXPECT_DENIED`: 403, no response, or a failed connection.
    Denied,
}

/// What curl gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// An HTTP response with this status (curl exits 0).
    Status(u16),
    /// No HTTP response: curl prints `000` and exits with `curl_exit`.
    NoResponse {
        /// curl's exit code (6: could not resolve host, 7: could not connect, 56: the
        /// connection was reset).
        curl_exit: u8,
        /// What happened, for the message.
        why: String,
    },
}

impl Response {
    /// Connection reset by the peer (curl exit 56).
    pub fn reset(why: impl Into<String>) -> Self {
        Self::NoResponse {
            curl_exit: 56,
            why: why.into(),
        }
    }

    /// The connection could not be made (curl exit 7).
    pub fn refused(why: impl Into<String>) -> Self {
        Self::NoResponse {
            curl_exit: 7,
            why: why.into(),
        }
    }

    /// The host name does not resolve (curl exit 6).
    pub fn unresolved(why: impl Into<String>) -> Self {
        Self::NoResponse {
            curl_exit: 6,
            why: why.into(),
        }
    }

    /// `(http_code, curl exit)` as the script sees them.
    fn code_and_exit(&self) -> (String, u8) {
        match self {
            Response::Status(code) => (format!("{code:03}"), 0),
            Response::NoResponse { curl_exit, .. } => ("000".to_string(), *curl_exit),
        }
    }
}

impl Expectation {
    /// The script's verdict on `response`, with the message it writes to the termination log.
    pub fn judge(self, response: &Response) -> (bool, String) {
        let (code, rc) = response.code_and_exit();
        match self {
            Expectation::Denied if code == "403" || code == "000" || rc != 0 => (
                true,
                format!("denied as expected (HTTP {code}, curl exit {rc})"),
            ),
            Expectation::Denied => (
                false,
                format!("expected the request to be denied, got HTTP {code}"),
            ),
            Expectation::Status(want) if code == format!("{want:03}") => {
                (true, format!("HTTP {code} as expected"))
            }
            Expectation::Status(want) => (
                false,
                format!("expected HTTP {want}, got HTTP {code} (curl exit {rc})"),
            ),
        }
    }

    /// Whether `response` meets the expectation.
    pub fn met_by(self, response: &Response) -> bool {
        self.judge(response).0
    }
}

impl ProbeRequest {
    /// Reads the probe container (the one with env `URL`) of a probe Pod.
    pub fn from_pod(pod: &Pod) -> Result<Self, String> {
        let container = probe_container(pod)
            .ok_or("no container with env URL: not a meshmig probe Pod (see crates/operator/src/probes.rs)")?;
        let url = env(container, "URL").ok_or("env URL is empty")?;
        let expect = if env(container, "EXPECT_DENIED").is_some() {
            Expectation::Denied
        } else {
            let status = env(container, "EXPECT_STATUS")
                .ok_or("neither EXPECT_DENIED nor EXPECT_STATUS is set")?;
            Expectation::Status(
                status
                    .parse()
                    .map_err(|_| format!("EXPECT_STATUS {status:?} is not a status code"))?,
            )
        };
        let (method, headers) = curl_arguments(container.args.as_deref().unwrap_or_default())?;
        Ok(Self {
            url: Url::parse(&url)?,
            method,
            headers,
            expect,
        })
    }
}

fn probe_container(pod: &Pod) -> Option<&Container> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name != n::PROXY_CONTAINER)
        .find(|c| env(c, "URL").is_some())
}

/// A non-empty literal env value (the script tests `-n "$EXPECT_DENIED"`).
fn env(container: &Container, name: &str) -> Option<String> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
        .filter(|v| !v.is_empty())
}

/// `-X METHOD` and `-H "name: value"` from `sh -c <script> probe <args>...`: the first two
/// arguments are the script and its `$0`.
fn curl_arguments(args: &[String]) -> Result<(String, Vec<(String, String)>), String> {
    let mut method = "GET".to_string();
    let mut headers = Vec::new();
    let mut rest = args.iter().skip(2);
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .ok_or_else(|| format!("curl argument {arg} has no value"))
        };
        match arg.as_str() {
            "-X" => method = value()?.clone(),
            "-H" => {
                let header = value()?;
                let (name, v) = header
                    .split_once(':')
                    .ok_or_else(|| format!("header {header:?} has no `:`"))?;
                headers.push((name.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            other => return Err(format!("curl argument {other:?} is not modelled")),
        }
    }
    Ok((method, headers))
}

impl Url {
    /// An `http://host[:port][/path][?query]` URL. Other schemes, user info and IP literals
    /// are refused: nothing here models TLS to the application or addressing Pods directly.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("URL {url:?}: only http:// is modelled"))?;
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.contains(['@', '[']) {
            return Err(format!(
                "URL {url:?}: user info and IPv6 literals are not modelled"
            ));
        }
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("URL {url:?}: bad port {port:?}"))?,
            ),
            None => (authority, HTTP_PORT),
        };
        if host.is_empty() {
            return Err(format!("URL {url:?} has no host"));
        }
        let tail = tail.split('#').next().unwrap_or_default();
        let path = match tail {
            "" => "/".to_string(),
            t if t.starts_with('?') => format!("/{t}"),
            t => t.to_string(),
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            authority: authority.to_ascii_lowercase(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe_pod(env: serde_json::Value, args: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "bookinfo"},
            "spec": {"containers": [
                {"name": "istio-proxy", "image": "proxyv2"},
                {"name": "probe", "image": "curl", "env": env, "args": args},
            ]},
        }))
        .unwrap()
    }

    #[test]
    fn reads_the_operators_probe_pod() {
        let pod = probe_pod(
            json!([{"name": "URL", "value": "http://reviews.bookinfo:9080/reviews/0?x=1"}, {"name": "EXPECT_STATUS", "value": "200"}]),
            json!([
                "script",
                "probe",
                "-X",
                "POST",
                "-H",
                "End-User: jason",
                "-H",
                "x-a: b: c"
            ]),
        );
        let r = ProbeRequest::from_pod(&pod).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.headers,
            vec![
                ("end-user".to_string(), "jason".to_string()),
                ("x-a".into(), "b: c".into())
            ]
        );
        assert_eq!(r.expect, Expectation::Status(200));
        assert_eq!(
            r.url,
            Url {
                host: "reviews.bookinfo".into(),
                port: 9080,
                authority: "reviews.bookinfo:9080".into(),
                path: "/reviews/0?x=1".into(),
            }
        );
        let denied = probe_pod(
            json!([{"name": "URL", "value": "http://ratings"}, {"name": "EXPECT_DENIED", "value": "1"}]),
            json!(["script", "probe", "-X", "GET"]),
        );
        let r = ProbeRequest::from_pod(&denied).unwrap();
        assert_eq!(
            (r.expect, r.url.port, r.url.path.as_str()),
            (Expectation::Denied, 80, "/")
        );
    }

    #[test]
    fn refuses_what_it_cannot_model() {
        let no_url = probe_pod(json!([]), json!([]));
        assert!(ProbeRequest::from_pod(&no_url).unwrap_err().contains("URL"));
        for url in [
            "https://a.b/",
            "http://u@a.b/",
            "http://[::1]/",
            "http://a:x/",
            "a.b",
        ] {
            assert!(Url::parse(url).is_err(), "{url}");
        }
        let unknown_arg = probe_pod(
            json!([{"name": "URL", "value": "http://a.b/"}, {"name": "EXPECT_STATUS", "value": "200"}]),
            json!(["script", "probe", "--insecure"]),
        );
        assert!(ProbeRequest::from_pod(&unknown_arg).is_err());
    }

    #[test]
    fn judges_as_the_script_does() {
        let denied = Expectation::Denied;
        assert!(denied.met_by(&Response::Status(403)));
        assert!(denied.met_by(&Response::reset("x")));
        assert!(!denied.met_by(&Response::Status(503)));
        assert!(!denied.met_by(&Response::Status(200)));
        assert_eq!(
            denied.judge(&Response::reset("x")).1,
            "denied as expected (HTTP 000, curl exit 56)"
        );
        let ok = Expectation::Status(200);
        assert_eq!(
            ok.judge(&Response::Status(200)),
            (true, "HTTP 200 as expected".into())
        );
        assert_eq!(
            ok.judge(&Response::Status(403)),
            (
                false,
                "expected HTTP 200, got HTTP 403 (curl exit 0)".into()
            )
        );
        assert!(!ok.met_by(&Response::refused("x")));
    }
}
