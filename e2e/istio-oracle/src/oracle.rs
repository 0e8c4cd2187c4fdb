//! Runs the `meshmig-istio` binary that `e2e/istio/build.sh` builds from the pinned
//! `istio.io/istio` module, so that tests can ask Istio's own code for its verdict.
//!
//! Each call is one process with every object on stdin (a JSON array) and one JSON
//! document on stdout; thousands of objects per call are fine. The JSON shapes are
//! documented in `e2e/istio/README.md`: `validate`, `ztunnel`, `rbac` and `routes`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const BINARY: &str = "bin/meshmig-istio";
/// Names the build to use instead of running `build.sh` (`make test` sets it).
pub const HOME_ENV: &str = "MESHMIG_ISTIO_HOME";

/// What can go wrong; every message names the command and, for a failed run, its stderr.
///
/// `Debug` prints the message, not the structure, so that a test returning
/// `Result<(), Box<dyn Error>>` shows it readably.
#[derive(thiserror::Error)]
pub enum Error {
    /// `$MESHMIG_ISTIO_HOME` names no build, or `e2e/istio/build.sh` failed.
    #[error("locating meshmig-istio: {0}")]
    Locate(String),
    /// The objects could not be encoded as JSON.
    #[error("encoding the input of `meshmig-istio {command}`: {source}")]
    Input {
        /// The subcommand.
        command: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The process could not be started or fed.
    #[error("running {binary} {command}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The subcommand.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It exited unsuccessfully (bad input, a flag it does not know, an Istio error).
    #[error("`meshmig-istio {command}` exited with {status}: {stderr}")]
    Failed {
        /// The subcommand and its flags.
        command: String,
        /// The exit status.
        status: String,
        /// Everything it printed on stderr.
        stderr: String,
    },
    /// Its stdout is not the JSON this crate expects.
    #[error(
        "`meshmig-istio {command}` printed unexpected output ({source}); it starts with: {head}"
    )]
    Output {
        /// The subcommand.
        command: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
        /// The first 500 characters of stdout.
        head: String,
    },
    /// It answered for a different number of objects than it was given.
    #[error("`meshmig-istio {command}` returned {got} entries for {sent} objects")]
    Count {
        /// The subcommand.
        command: String,
        /// Objects sent.
        sent: usize,
        /// Entries returned.
        got: usize,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Istio's verdict on one object, from `validate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `apiVersion` of the input object.
    pub api_version: String,
    /// `kind` of the input object.
    pub kind: String,
    /// `metadata.namespace` as given (Istio validated an empty one as `default`).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// What Istio said.
    pub outcome: Outcome,
}

/// The result of validating one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Istio validated it: `valid` is true when `errors` is empty.
    Checked {
        /// Whether istiod's webhook would admit it.
        valid: bool,
        /// One message per problem, as Istio words it.
        errors: Vec<String>,
        /// Warnings (the webhook returns them to kubectl; they do not reject).
        warnings: Vec<String>,
    },
    /// Istio has no validation for this kind (a core kind, or Gateway API).
    Skipped {
        /// Why, naming the kind.
        reason: String,
    },
}

impl Verdict {
    /// `Some(valid)` when Istio checked the object, `None` when it skipped it.
    pub fn valid(&self) -> Option<bool> {
        match self.outcome {
            Outcome::Checked { valid, .. } => Some(valid),
            Outcome::Skipped { .. } => None,
        }
    }

    /// The errors (empty when valid or skipped).
    pub fn errors(&self) -> &[String] {
        match &self.outcome {
            Outcome::Checked { errors, .. } => errors,
            Outcome::Skipped { .. } => &[],
        }
    }
}

/// The wire form of a [`Verdict`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawVerdict {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    valid: Option<bool>,
    errors: Option<Vec<String>>,
    warnings: Option<Vec<String>>,
    #[serde(default)]
    skipped: bool,
    reason: Option<String>,
}

impl From<RawVerdict> for Verdict {
    fn from(raw: RawVerdict) -> Self {
        let outcome = if raw.skipped {
            Outcome::Skipped {
                reason: raw.reason.unwrap_or_default(),
            }
        } else {
            let errors = raw.errors.unwrap_or_default();
            Outcome::Checked {
                valid: raw.valid.unwrap_or(errors.is_empty()),
                errors,
                warnings: raw.warnings.unwrap_or_default(),
            }
        };
        Verdict {
            api_version: raw.api_version,
            kind: raw.kind,
            namespace: raw.namespace,
            name: raw.name,
            outcome,
        }
    }
}

/// istiod's settings for the ztunnel conversion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZtunnelOptions {
    /// MeshConfig `rootNamespace`: its selector-less policies are mesh-wide (default `istio-system`).
    pub root_namespace: String,
    /// MeshConfig `trustDomain` (default `cluster.local`).
    pub trust_domain: String,
    /// `AMBIENT_ENABLE_DRY_RUN_AUTHORIZATION_POLICY` (default false, Istio's default): when
    /// false istiod sends no Authorization for an `istio.io/dry-run: "true"` policy.
    pub enable_dry_run: bool,
}

impl Default for ZtunnelOptions {
    fn default() -> Self {
        Self {
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            enable_dry_run: false,
        }
    }
}

impl ZtunnelOptions {
    fn args(&self) -> Vec<String> {
        vec![
            format!("--root-namespace={}", self.root_namespace),
            format!("--trust-domain={}", self.trust_domain),
            // Always explicit, so the test process's environment cannot change it.
            format!(
                "--enable-dry-run-authorization-policy={}",
                self.enable_dry_run
            ),
        ]
    }
}

/// What istiod does with one AuthorizationPolicy for ztunnel, from `ztunnel`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZtunnelConversion {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// The `istio.security.Authorization` sent to ztunnel, as protojson (proto field names,
    /// enums by name, zero values omitted: no `action` means ALLOW, no `scope` GLOBAL), or
    /// `None` when istiod sends none (targetRefs policies, CUSTOM/AUDIT, dry-run when off).
    pub authorization: Option<Value>,
    /// The `ZtunnelAccepted` condition istiod writes on the policy, `None` when it writes
    /// none (targetRefs policies: those get `WaypointAccepted` from the waypoint side).
    pub status: Option<Status>,
}

/// A `ZtunnelAccepted` status condition.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The condition type: always `ZtunnelAccepted`.
    #[serde(rename = "type")]
    pub condition: String,
    /// `"True"` when the policy is bound to ztunnel, else `"False"`.
    pub status: String,
    /// `Accepted` or `UnsupportedValue`.
    pub reason: String,
    /// Istio's message.
    pub message: String,
}

impl Status {
    /// Whether the condition is True (istiod sends the policy to ztunnel).
    pub fn accepted(&self) -> bool {
        self.status == "True"
    }
}

/// The proxy whose RBAC `rbac` builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// A sidecar's inbound chains: selector and namespace-wide policies apply.
    Sidecar {
        /// The workload's namespace.
        namespace: String,
        /// The workload's labels (selectors match against them).
        labels: BTreeMap<String, String>,
    },
    /// A waypoint's chain for one Service: targetRefs policies apply.
    Waypoint {
        /// The waypoint's namespace.
        namespace: String,
        /// Its Gateway's name.
        gateway: String,
        /// The Service being served, `name` or `namespace/name`, if any.
        service: Option<String>,
    },
}

/// istiod's settings for `rbac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacOptions {
    /// The proxy.
    pub proxy: Proxy,
    /// MeshConfig `rootNamespace` (default `istio-system`).
    pub root_namespace: String,
    /// MeshConfig `trustDomain` (default `cluster.local`).
    pub trust_domain: String,
    /// MeshConfig `trustDomainAliases`.
    pub trust_domain_aliases: Vec<String>,
}

impl RbacOptions {
    /// Defaults for everything but the proxy.
    pub fn new(proxy: Proxy) -> Self {
        Self {
            proxy,
            root_namespace: "istio-system".into(),
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = match &self.proxy {
            Proxy::Sidecar { namespace, labels } => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    "--for=sidecar".to_string(),
                    format!("--namespace={namespace}"),
                    format!("--labels={}", labels.join(",")),
                ]
            }
            Proxy::Waypoint {
                namespace,
                gateway,
                service,
            } => {
                let mut args = vec![
                    "--for=waypoint".to_string(),
                    format!("--namespace={namespace}"),
                    format!("--gateway={gateway}"),
                ];
                args.extend(service.iter().map(|s| format!("--service={s}")));
                args
            }
        };
        args.push(format!("--root-namespace={}", self.root_namespace));
        args.push(format!("--trust-domain={}", self.trust_domain));
        args.push(format!(
            "--trust-domain-aliases={}",
            self.trust_domain_aliases.join(",")
        ));
        args
    }
}

/// The Envoy filters istiod builds for one proxy, from `rbac`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rbac {
    /// The policies istiod attaches to the proxy, `namespace/name` per action.
    pub policies: AttachedPolicies,
    /// HTTP filters (`envoy.filters.http.rbac`, ext_authz for CUSTOM) as protojson, in
    /// filter-chain order.
    pub http: Vec<Value>,
    /// Network filters (`envoy.filters.network.rbac`, ext_authz) as protojson, in order.
    pub tcp: Vec<Value>,
}

/// The attached policies per action.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedPolicies {
    /// ALLOW policies.
    pub allow: Vec<String>,
    /// DENY policies.
    pub deny: Vec<String>,
    /// AUDIT policies.
    pub audit: Vec<String>,
    /// CUSTOM policies.
    pub custom: Vec<String>,
}

/// The proxy whose HTTP routes `routes` builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteProxy {
    /// A sidecar in `namespace`: its outbound RDS route configurations (one per port, named
    /// by the port number), with every VirtualService and DestinationRule it sees.
    Sidecar {
        /// The workload's namespace.
        namespace: String,
        /// The workload's labels (for `sourceLabels` matches).
        labels: BTreeMap<String, String>,
    },
    /// A waypoint: the route configuration of each of its per-Service filter chains, for
    /// the Services istiod's ambient index binds to it (`istio.io/use-waypoint`).
    Waypoint {
        /// The waypoint's namespace.
        namespace: String,
        /// Its Gateway's name (the input must hold that Gateway).
        gateway: String,
    },
}

/// Options of `routes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesOptions {
    /// The proxy.
    pub proxy: RouteProxy,
    /// Also return every Envoy route as protojson ([`Route::raw`]).
    pub raw: bool,
}

impl RoutesOptions {
    /// A sidecar without labels in `namespace`.
    pub fn sidecar(namespace: &str) -> Self {
        Self {
            proxy: RouteProxy::Sidecar {
                namespace: namespace.into(),
                labels: BTreeMap::new(),
            },
            raw: false,
        }
    }

    /// The waypoint `gateway` in `namespace`.
    pub fn waypoint(namespace: &str, gateway: &str) -> Self {
        Self {
            proxy: RouteProxy::Waypoint {
                namespace: namespace.into(),
                gateway: gateway.into(),
            },
            raw: false,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut args = match &self.proxy {
            RouteProxy::Sidecar { namespace, labels } => {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                vec![
                    "--for=sidecar".to_string(),
                    format!("--namespace={namespace}"),
                    format!("--labels={}", labels.join(",")),
                ]
            }
            RouteProxy::Waypoint { namespace, gateway } => vec![
                "--for=waypoint".to_string(),
                format!("--namespace={namespace}"),
                format!("--gateway={gateway}"),
            ],
        };
        if self.raw {
            args.push("--raw".into());
        }
        args
    }
}

/// The HTTP routes istiod builds for one proxy, from `routes`, normalised (see
/// `e2e/istio/README.md` for every field).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routes {
    /// The proxy, and for a waypoint the Services bound to it.
    pub proxy: RoutesProxy,
    /// Route configurations: a sidecar's RDS configurations, or one per waypoint filter
    /// chain.
    pub route_configs: Vec<RouteConfig>,
    /// Every cluster a route or mirror names, resolved by istiod.
    pub clusters: BTreeMap<String, ClusterInfo>,
    /// Input objects istiod never saw: kinds it does not read, or objects its validation
    /// rejects (each with the reason).
    pub ignored: Vec<String>,
}

impl Routes {
    /// A sidecar's virtual host for `hostname` in the route configuration of `port`.
    pub fn sidecar_virtual_host(&self, port: u16, hostname: &str) -> Option<&VirtualHost> {
        let name = port.to_string();
        self.route_configs
            .iter()
            .filter(|rc| rc.name == name)
            .flat_map(|rc| rc.virtual_hosts.iter())
            .find(|vh| vh.domains.iter().any(|d| d == hostname))
    }

    /// A waypoint's route configuration for a Service's `hostname` and `port` (its HTTP
    /// filter chain).
    pub fn waypoint_route_config(&self, hostname: &str, port: u16) -> Option<&RouteConfig> {
        self.route_configs.iter().find(|rc| {
            rc.service.as_ref().is_some_and(|s| {
                s.hostname == hostname && s.port == u32::from(port) && s.protocol == "http"
            })
        })
    }
}

/// The proxy `routes` answered for.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesProxy {
    /// `sidecar` or `waypoint`.
    #[serde(rename = "type")]
    pub proxy_type: String,
    /// Its namespace.
    pub namespace: String,
    /// The waypoint's Gateway.
    #[serde(default)]
    pub gateway: String,
    /// Waypoint: the Services bound to it, `namespace/hostname`, sorted.
    #[serde(default)]
    pub services: Vec<String>,
}

/// One Envoy route configuration.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// Its name (a sidecar's: the port number).
    pub name: String,
    /// Waypoint: the filter chain, `inbound-vip|<port>|<protocol>|<hostname>`.
    #[serde(default)]
    pub filter_chain: String,
    /// Waypoint: the Service port the filter chain serves.
    #[serde(default)]
    pub service: Option<ServicePort>,
    /// Virtual hosts, in order.
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A Service port a waypoint filter chain serves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The Service's hostname.
    pub hostname: String,
    /// The port.
    pub port: u32,
    /// `http` or `tcp`.
    pub protocol: String,
}

/// An Envoy virtual host.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHost {
    /// Its name.
    pub name: String,
    /// Its domains (Host header matches).
    pub domains: Vec<String>,
    /// Its routes, in order: the first that matches wins.
    pub routes: Vec<Route>,
    /// Request header operations of the virtual host.
    pub request_headers: HeaderOps,
    /// Response header operations of the virtual host.
    pub response_headers: HeaderOps,
    /// Fields set on the virtual host that are not modelled.
    pub unsupported: Vec<String>,
}

/// An Envoy route.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// Its name.
    pub name: String,
    /// The Istio config it came from (`/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`;
    /// for a Gateway API route, the name is `<ns>~<hostname>` of istiod's internal VirtualService).
    #[serde(default)]
    pub config: String,
    /// What it matches.
    #[serde(rename = "match")]
    pub route_match: RouteMatch,
    /// What it does.
    pub action: Action,
    /// Request header operations.
    pub request_headers: HeaderOps,
    /// Response header operations.
    pub response_headers: HeaderOps,
    /// CORS policy (per-filter config of `envoy.filters.http.cors`).
    pub cors: Option<Cors>,
    /// Fault injection (per-filter config of `envoy.filters.http.fault`).
    pub fault: Option<Fault>,
    /// Names of every per-filter config on the route.
    pub per_filter_config: Vec<String>,
    /// Fields set on the route that are not modelled.
    pub unsupported: Vec<String>,
    /// The Envoy route as protojson (with [`RoutesOptions::raw`]).
    #[serde(default)]
    pub raw: Option<Value>,
}

/// An Envoy route match.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The path matcher.
    pub path: PathMatch,
    /// Header matchers (all must match); a method is the `:method` pseudo-header.
    pub headers: Vec<HeaderMatch>,
    /// Query parameter matchers (all must match).
    pub query_params: Vec<QueryMatch>,
    /// Parts of the match that are not modelled: a route with any cannot be evaluated.
    pub unsupported: Vec<String>,
}

/// A path matcher.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathMatch {
    /// `prefix`, `exact`, `regex`, `pathSeparatedPrefix`, `template`, `connect` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The prefix, path or RE2 regex.
    pub value: String,
    /// Envoy's `case_sensitive` (default true).
    pub case_sensitive: bool,
}

/// A string matcher.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// `exact`, `prefix`, `suffix`, `contains`, `regex`, `present`, `absent`, `range` or
    /// `custom`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The value (a regex is RE2, matched against the whole value).
    #[serde(default)]
    pub value: String,
    /// Case-insensitive.
    #[serde(default)]
    pub ignore_case: bool,
}

/// A header matcher.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header name (`:method` for the method).
    pub name: String,
    /// How its value must match.
    #[serde(rename = "match")]
    pub value: StringMatch,
    /// Envoy's `invert_match`.
    #[serde(default)]
    pub invert: bool,
    /// Envoy's `treat_missing_header_as_empty`.
    #[serde(default)]
    pub missing_as_empty: bool,
}

/// A query parameter matcher.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueryMatch {
    /// The parameter name.
    pub name: String,
    /// How its value must match.
    #[serde(rename = "match")]
    pub value: StringMatch,
}

/// What a route does: exactly one of the options is set, as `kind` says.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    /// `route`, `redirect`, `directResponse`, `nonForwarding`, `filterAction` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Forwarding.
    #[serde(default)]
    pub route: Option<RouteAction>,
    /// A redirect.
    #[serde(default)]
    pub redirect: Option<RedirectAction>,
    /// A fixed response.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
}

/// Forwarding to clusters.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteAction {
    /// One cluster without a weight, or weighted clusters.
    pub clusters: Vec<WeightedCluster>,
    /// Envoy's `cluster_header`.
    #[serde(default)]
    pub cluster_header: String,
    /// Replaces the matched prefix (the whole path for an exact or regex match).
    pub prefix_rewrite: Option<String>,
    /// Replaces every match of `pattern` in the path.
    pub regex_rewrite: Option<RegexRewrite>,
    /// Replaces the Host header.
    pub host_rewrite: Option<String>,
    /// Host header becomes the upstream host's name.
    #[serde(default)]
    pub auto_host_rewrite: bool,
    /// Go duration (`0s`: disabled); `None`: Envoy's default of 15 s.
    pub timeout: Option<String>,
    /// Idle timeout.
    pub idle_timeout: Option<String>,
    /// Retry policy.
    pub retry: Option<RetryPolicy>,
    /// Request mirrors.
    pub mirrors: Vec<Mirror>,
    /// Hash policies (protojson).
    pub hash_policy: Vec<Value>,
    /// The status Envoy answers with when a cluster does not exist (Envoy's default: 503;
    /// istiod sets 500 for Gateway API routes, as the spec requires).
    pub cluster_not_found_status: u16,
    /// Fields set that are not modelled.
    pub unsupported: Vec<String>,
}

/// A (weighted) cluster.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedCluster {
    /// Cluster name (a key of [`Routes::clusters`]).
    pub name: String,
    /// Its weight; `None` for a route to a single cluster.
    pub weight: Option<u32>,
    /// Request header operations for this cluster.
    pub request_headers: HeaderOps,
    /// Response header operations for this cluster.
    pub response_headers: HeaderOps,
    /// Host rewrite for this cluster.
    pub host_rewrite: Option<String>,
}

/// A regex rewrite.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    pub pattern: String,
    /// Substitution (`\1` for a capture group).
    pub substitution: String,
}

/// A retry policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Envoy's `retry_on`.
    pub retry_on: String,
    /// Envoy's `num_retries` (`None`: Envoy's default, 1).
    pub num_retries: Option<u32>,
    /// Per-try timeout.
    pub per_try_timeout: Option<String>,
    /// Retriable status codes.
    pub retriable_status_codes: Vec<u32>,
    /// Retry host predicates (names).
    pub host_predicates: Vec<String>,
    /// `host_selection_retry_max_attempts`.
    #[serde(default)]
    pub host_selection_max_attempts: i64,
    /// Back-off base interval.
    pub backoff_base: Option<String>,
    /// Back-off maximum interval.
    pub backoff_max: Option<String>,
    /// Fields set that are not modelled.
    pub unsupported: Vec<String>,
}

/// A request mirror.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    /// Cluster name.
    pub cluster: String,
    /// Percent of requests mirrored.
    pub percent: f64,
    /// Envoy's `trace_sampled`.
    #[serde(default)]
    pub trace_sampled: Option<bool>,
}

/// A redirect.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedirectAction {
    /// New scheme (empty: unchanged).
    #[serde(default)]
    pub scheme: String,
    /// New host (empty: unchanged).
    #[serde(default)]
    pub host: String,
    /// New port (0: unchanged).
    #[serde(default)]
    pub port: u32,
    /// New path (may carry a query).
    pub path: Option<String>,
    /// Replaces the matched prefix.
    pub prefix_rewrite: Option<String>,
    /// Regex rewrite of the path.
    pub regex_rewrite: Option<RegexRewrite>,
    /// Status code.
    pub code: u16,
    /// Drops the query.
    #[serde(default)]
    pub strip_query: bool,
}

/// A fixed response.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectResponse {
    /// Status code.
    pub status: u32,
    /// Body.
    #[serde(default)]
    pub body: String,
}

/// Header operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOps {
    /// Headers added or set, in order.
    pub add: Vec<HeaderValue>,
    /// Headers removed.
    pub remove: Vec<String>,
}

/// A header added or set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderValue {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// `append`, `addIfAbsent`, `overwrite` or `overwriteIfExists`.
    pub action: String,
}

/// A CORS policy.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins.
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods (comma-separated).
    #[serde(default)]
    pub allow_methods: String,
    /// Allowed headers.
    #[serde(default)]
    pub allow_headers: String,
    /// Exposed headers.
    #[serde(default)]
    pub expose_headers: String,
    /// Max age (seconds, as a string).
    #[serde(default)]
    pub max_age: String,
    /// Allow credentials.
    pub allow_credentials: Option<bool>,
    /// Percent of requests the policy is enforced for (`None`: all).
    pub filter_enabled: Option<f64>,
    /// Percent of requests it is evaluated in shadow mode for.
    pub shadow_enabled: Option<f64>,
    /// Other boolean settings, when set.
    #[serde(default)]
    pub other: BTreeMap<String, bool>,
}

/// Fault injection.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Fixed delay.
    #[serde(default)]
    pub delay_fixed: String,
    /// Percent of requests delayed.
    pub delay_percent: Option<f64>,
    /// HTTP status of an abort.
    #[serde(default)]
    pub abort_status: u32,
    /// gRPC status of an abort.
    #[serde(default)]
    pub abort_grpc_status: u32,
    /// Percent of requests aborted.
    pub abort_percent: Option<f64>,
    /// Parts not modelled.
    pub unsupported: Vec<String>,
}

/// istiod's view of a cluster: its Service and, for a subset, the subset's labels.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInfo {
    /// `outbound`, `inbound-vip`, … (empty for a cluster such as `PassthroughCluster`).
    pub direction: String,
    /// The subset part of the name (a waypoint's is `<protocol>[/<subset>]`).
    pub subset: String,
    /// The Service's hostname.
    pub hostname: String,
    /// The port.
    pub port: u32,
    /// Whether istiod knows a Service with that hostname.
    pub resolved: bool,
    /// The Service's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The Service's name.
    #[serde(default)]
    pub name: String,
    /// The Service's selector.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The subset's labels (`None` without a subset).
    #[serde(default)]
    pub subset_labels: Option<BTreeMap<String, String>>,
    /// The DestinationRule (`namespace/name`) the proxy takes the subset from.
    #[serde(default)]
    pub subset_rule: String,
    /// Whether that rule has the subset (`None` without a subset).
    #[serde(default)]
    pub subset_found: Option<bool>,
}

/// A located `meshmig-istio` binary.
#[derive(Clone, Debug)]
pub struct Oracle {
    binary: PathBuf,
}

static ORACLE: OnceLock<Result<Oracle, String>> = OnceLock::new();

impl Oracle {
    /// The binary in `$MESHMIG_ISTIO_HOME` when set, else the output of
    /// `e2e/istio/build.sh` (cached on disk by the script, run at most once per process).
    pub fn get() -> Result<&'static Oracle, Error> {
        ORACLE
            .get_or_init(|| locate().map(|binary| Oracle { binary }))
            .as_ref()
            .map_err(|message| Error::Locate(message.clone()))
    }

    /// The binary's path.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Istio's validation of every object (any kind), in input order.
    pub fn validate(&self, objects: &[Value]) -> Result<Vec<Verdict>, Error> {
        let raw: Vec<RawVerdict> = self.run_each("validate", &[], objects)?;
        Ok(raw.into_iter().map(Verdict::from).collect())
    }

    /// istiod's ztunnel conversion of every AuthorizationPolicy, in input order. Every
    /// object must be an AuthorizationPolicy with a namespace, each named once.
    pub fn ztunnel(
        &self,
        policies: &[Value],
        opts: &ZtunnelOptions,
    ) -> Result<Vec<ZtunnelConversion>, Error> {
        self.run_each("ztunnel", &opts.args(), policies)
    }

    /// The Envoy RBAC istiod builds for the proxy from those of `policies` that attach to it.
    pub fn rbac(&self, policies: &[Value], opts: &RbacOptions) -> Result<Rbac, Error> {
        self.run("rbac", &opts.args(), policies)
    }

    /// The HTTP routes istiod builds for one proxy from `objects` (Services, Pods,
    /// Namespaces, VirtualServices, DestinationRules, Gateway API Gateways and routes, …;
    /// kinds istiod does not read are listed in [`Routes::ignored`]).
    pub fn routes(&self, objects: &[Value], opts: &RoutesOptions) -> Result<Routes, Error> {
        self.run("routes", &opts.args(), objects)
    }

    /// [`Self::run`] for the subcommands that answer with one entry per object.
    fn run_each<T: DeserializeOwned>(
        &self,
        command: &str,
        args: &[String],
        objects: &[Value],
    ) -> Result<Vec<T>, Error> {
        let out: Vec<T> = self.run(command, args, objects)?;
        if out.len() != objects.len() {
            return Err(Error::Count {
                command: command.into(),
                sent: objects.len(),
                got: out.len(),
            });
        }
        Ok(out)
    }

    /// One process: the objects as a JSON array on stdin, one JSON document on stdout.
    fn run<T: DeserializeOwned>(
        &self,
        command: &str,
        args: &[String],
        objects: &[Value],
    ) -> Result<T, Error> {
        let input = serde_json::to_vec(objects).map_err(|source| Error::Input {
            command: command.into(),
            source,
        })?;
        let spawn_error = |source| Error::Spawn {
            binary: self.binary.clone(),
            command: command.into(),
            source,
        };
        let mut child = Command::new(&self.binary)
            .arg(command)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        // Feed stdin from another thread: with thousands of objects, input and output both
        // exceed a pipe buffer, and writing everything before reading would deadlock.
        let stdin = child.stdin.take();
        let (output, written) = std::thread::scope(|scope| {
            let writer = scope.spawn(move || match stdin {
                Some(mut stdin) => stdin.write_all(&input), // dropping stdin closes it
                None => Ok(()),
            });
            let output = child.wait_with_output();
            (output, writer.join())
        });
        let output = output.map_err(spawn_error)?;
        // A process that fails may stop reading early: its exit and stderr say more than
        // the broken pipe, so they are checked first.
        if !output.status.success() {
            return Err(Error::Failed {
                command: std::iter::once(command)
                    .chain(args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(spawn_error(e)),
            Err(_) => {
                return Err(spawn_error(std::io::Error::other(
                    "the stdin writer panicked",
                )));
            }
        }
        serde_json::from_slice(&output.stdout).map_err(|source| Error::Output {
            command: command.into(),
            source,
            head: String::from_utf8_lossy(&output.stdout)
                .chars()
                .take(500)
                .collect(),
        })
    }
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio/build.sh")
}

/// The binary: from `$MESHMIG_ISTIO_HOME`, else from running `build.sh`, whose progress
/// (a cold build takes minutes) goes straight to the terminal.
fn locate() -> Result<PathBuf, String> {
    if let Some(home) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
        let binary = PathBuf::from(&home).join(BINARY);
        if !binary.is_file() {
            return Err(format!(
                "{HOME_ENV}={} has no {BINARY}; unset it to build with {}",
                PathBuf::from(home).display(),
                build_script().display()
            ));
        }
        return Ok(binary);
    }
    let script = build_script();
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} exited with {} (its output is above)",
            script.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let binary = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|home| PathBuf::from(home).join(BINARY));
    match binary {
        Some(binary) if binary.is_file() => Ok(binary),
        _ => Err(format!(
            "the last line of {} names no build: {stdout:?}",
            script.display()
        )),
    }
}
