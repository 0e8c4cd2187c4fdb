//! Findings: what the planner found that the user must know, with stable ids.
//!
//! The catalogue below is the single source of truth: `docs/findings.md` is generated from it
//! (`meshmig findings --markdown`) and a test fails when the two drift apart.

use serde::Serialize;

use crate::object::ObjectRef;

/// How much a finding matters.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The migration does not start (or does not enter the step concerned) unless the
    /// MeshMigration lists the finding in `acceptedFindings`.
    Blocker,
    /// Behaviour changes in a way the user should review.
    Warning,
    /// Explains a decision of the plan.
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocker => "blocker",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One entry of the finding catalogue.
#[derive(Clone, Copy, Debug)]
pub struct FindingKind {
    /// Stable slug id.
    pub id: &'static str,
    pub severity: Severity,
    /// One-line summary.
    pub title: &'static str,
    /// Why it matters and what to do.
    pub remedy: &'static str,
}

macro_rules! catalogue {
    ($( $konst:ident = $id:literal, $sev:ident, $title:literal, $remedy:literal; )*) => {
        $(
            #[doc = $title]
            pub const $konst: FindingKind = FindingKind {
                id: $id, severity: Severity::$sev, title: $title, remedy: $remedy,
            };
        )*
        /// Every finding kind, in documentation order.
        pub const CATALOGUE: &[FindingKind] = &[$($konst),*];
    };
}

catalogue! {
    // ---- cluster prerequisites (step 1)
    ISTIO_VERSION_UNSUPPORTED = "istio-version-unsupported", Blocker,
        "Istio is older than 1.24",
        "Ambient mode with waypoints, targetRefs policies and sidecar interoperability needs Istio 1.24 or newer. Upgrade the control plane first.";
    ISTIO_VERSION_UNKNOWN = "istio-version-unknown", Warning,
        "The Istio version could not be determined",
        "Neither a Sail Istio resource nor an istiod Deployment with a versioned image was found. Include them in the inventory, or verify by hand that Istio is 1.24 or newer.";
    CONTROL_PLANE_NOT_FOUND = "control-plane-not-found", Warning,
        "No Istio control plane was found in the inventory",
        "The plan assumes a Sail-managed control plane named in spec.controlPlane. Include the Sail Istio resource (or the istiod Deployment for External mode) in the inventory.";
    CONTROL_PLANE_EXTERNAL_DETECTED = "control-plane-external-detected", Info,
        "istiod runs without a Sail Istio resource: the control plane is planned as External",
        "spec.controlPlane.mode is Sail (the default), but the inventory holds no Sail Istio of that name and an istiod Deployment that Sail does not manage runs in spec.controlPlane.istioNamespace: Istio was installed with Helm or istioctl. The version and ambient mode are read from istiod, and step 2 lists the commands to run instead of patching Sail resources. Set spec.controlPlane.mode: External in the MeshMigration (the operator follows the spec), or include the Sail Istio resource if Sail manages this control plane.";
    MULTICLUSTER = "multicluster", Blocker,
        "The mesh spans several clusters",
        "Remote-cluster secrets (label istio/multiCluster=true) or multicluster values were found. Multicluster ambient is not supported by this migration; migrate each cluster separately after removing the remote secrets, or accept the finding if you know what you are doing.";
    VM_WORKLOADS = "vm-workloads", Blocker,
        "VM workloads (WorkloadEntry/WorkloadGroup) are in the mesh",
        "Ambient mode does not support VM workloads. Move them off the mesh or keep their namespaces in sidecar mode.";
    SPIRE = "spire", Blocker,
        "Workloads use SPIRE-managed identities",
        "Pods labelled spiffe.io/spire-managed-identity get their identity from SPIRE, which ztunnel does not integrate with. Keep them in sidecar mode.";
    GATEWAY_API_CRDS_MISSING = "gateway-api-crds-missing", Blocker,
        "Gateway API CRDs are not installed",
        "Waypoints are Gateway API Gateways and routes become HTTPRoutes. Install the Gateway API standard channel CRDs (gateways, httproutes).";
    CRDS_NOT_INSPECTED = "crds-not-inspected", Info,
        "Installed CRDs were not part of the inventory",
        "Offline plans cannot see which CRDs are installed; the operator checks Gateway API CRDs at step 1.";
    CNI_CILIUM_EXCLUSIVE = "cni-cilium-exclusive", Blocker,
        "Cilium runs with cni-exclusive=true",
        "Cilium removes other CNI plugins, including istio-cni. Set cni-exclusive: \"false\" in the cilium-config ConfigMap.";
    CNI_CILIUM_BPF_MASQUERADE = "cni-cilium-bpf-masquerade", Blocker,
        "Cilium runs with enable-bpf-masquerade=true",
        "BPF masquerading breaks ztunnel's health probes. Set enable-bpf-masquerade: \"false\" in the cilium-config ConfigMap.";
    // ---- namespaces and workloads
    NAMESPACE_NOT_FOUND = "namespace-not-found", Blocker,
        "A target namespace does not exist",
        "Check the spelling in spec.namespaces, or create the namespace.";
    NAMESPACE_NO_SIDECARS = "namespace-no-sidecars", Info,
        "A target namespace has no sidecar injection",
        "Nothing to restart in steps 3 and 9; the namespace is still enrolled in ambient.";
    NAMESPACE_ALREADY_AMBIENT = "namespace-already-ambient", Info,
        "A target namespace is already labelled for ambient",
        "Step 6 leaves the label as it is.";
    HOSTNETWORK_POD = "hostnetwork-pod", Warning,
        "A workload uses hostNetwork and is never captured by ztunnel",
        "hostNetwork pods keep no sidecar after step 9 and are not captured in ambient: their traffic is plaintext and unenforced. Move them out of the namespace or accept the finding.";
    UNMANAGED_POD = "unmanaged-pod", Warning,
        "A Pod with a sidecar has no controller meshmig can restart",
        "meshmig restarts Deployments, StatefulSets and DaemonSets. Recreate this Pod yourself after step 9 so it runs without a sidecar; the step-9 checkpoint reports it until then.";
    WORKLOAD_OPTED_OUT = "workload-opted-out", Info,
        "A workload opted out of the mesh and is left alone",
        "Pods with sidecar.istio.io/inject=\"false\" or istio.io/dataplane-mode=none are respected; policies that select them are not enforced in ambient either.";
    REVISION_LABEL_REMOVED = "revision-label-removed", Info,
        "Injection uses a revision label that step 9 removes",
        "Step 9 removes istio.io/rev so no new sidecars are injected. Workloads stay on the revisioned control plane through ambient enrollment.";
    // ---- security
    PEER_AUTHN_DISABLE = "peer-authn-disable", Blocker,
        "A PeerAuthentication disables mTLS",
        "ztunnel always uses mTLS between ambient workloads and cannot honour DISABLE; plaintext clients outside the mesh would be refused or policies would change. Remove the DISABLE mode (or scope it to ports of non-mesh callers) before migrating.";
    PEER_AUTHN_PERMISSIVE = "peer-authn-permissive", Info,
        "A PeerAuthentication is PERMISSIVE",
        "ztunnel accepts plaintext from non-mesh clients under PERMISSIVE as the sidecar did; consider STRICT once every caller is in the mesh.";
    AUTHZ_L7 = "authz-l7", Info,
        "An AuthorizationPolicy uses L7 attributes",
        "ztunnel enforces L4 only. The policy gets a waypoint-targeted copy (targetRefs) in step 5 and the selector original is removed once its workloads run without sidecars.";
    AUTHZ_ACTION_NEEDS_WAYPOINT = "authz-action-needs-waypoint", Info,
        "An AuthorizationPolicy uses the CUSTOM or AUDIT action",
        "Only waypoints run CUSTOM (external authorization) and AUDIT policies. They get a waypoint copy; make sure the extension provider is reachable from the waypoint.";
    AUTHZ_IDENTITY_THROUGH_WAYPOINT = "authz-identity-through-waypoint", Info,
        "An identity- or IP-based L4 policy protects a waypoint-served Service",
        "Behind a waypoint the destination sees the waypoint's identity and IP, not the caller's, so the rule moves to the waypoint too.";
    AUTHZ_TRUST_DOMAINS = "authz-trust-domains", Blocker,
        "An AuthorizationPolicy uses trustDomains/notTrustDomains",
        "istiod drops trust-domain conditions when it converts a policy for ztunnel (its status still says Accepted), so ztunnel enforces the rule without them: an ALLOW admits every trust domain, a DENY refuses them all. Rewrite the rule with principals before migrating.";
    AUTHZ_PARTIAL_SELECTOR = "authz-partial-selector", Blocker,
        "A policy that moves to the waypoint selects only some of a Service's workloads",
        "Waypoint policies attach to Services: its copy, and the Service's bypass protection (including the ALLOW that admits the waypoint), would apply to every workload of the Service, also those the policy never applied to (a workload without ALLOW policies would start refusing every caller but the waypoint). Give those workloads their own Service, or widen the policy's selector to the whole Service, first.";
    AUTHZ_L7_UNMESHED = "authz-l7-unmeshed", Blocker,
        "An L7 policy selects a workload that runs no sidecar",
        "Nothing enforces it today; from step 6 ztunnel captures the workload and enforces the policy as istiod converts it (an ALLOW with L7 rules then refuses every caller, a DENY may never fire), and no waypoint copy covers it. Inject the workload first, opt it out of ambient (istio.io/dataplane-mode: none), or drop the policy's L7 rules.";
    AUTHZ_PRINCIPAL_ALIAS = "authz-principal-alias", Warning,
        "A policy left to ztunnel names principals through cluster.local or a trust-domain alias",
        "Sidecars read cluster.local and every trustDomainAliases entry as the mesh's trust domain; ztunnel compares principals exactly. Name the callers with the mesh's trust domain (and each alias you still need) before step 9.";
    AUTHZ_DRY_RUN = "authz-dry-run", Info,
        "A dry-run AuthorizationPolicy (istio.io/dry-run) stays dry-run",
        "A dry-run policy enforces nothing in a sidecar. Its waypoint copies keep the istio.io/dry-run annotation, and meshmig derives nothing enforcing from it (no waypoint need, no bypass protection, no ALLOW union). From Istio 1.25 ztunnel does not enforce it either.";
    AUTHZ_DRY_RUN_ENFORCED = "authz-dry-run-enforced", Warning,
        "Istio 1.24's ztunnel enforces a dry-run AuthorizationPolicy",
        "ztunnel in Istio 1.24 ignores istio.io/dry-run: once the selected workloads run without sidecars, the policy decides. Remove the policy (or the annotation, if you meant it), or upgrade to 1.25 or newer first.";
    AUTHZ_UNKNOWN_FIELD = "authz-unknown-field", Warning,
        "An AuthorizationPolicy uses a field meshmig does not know",
        "The field is treated as L7 (the policy moves to the waypoint). Check that the waypoint copy behaves as intended.";
    AUTHZ_NO_SERVICE = "authz-no-service", Blocker,
        "An L7 policy selects workloads that no Service selects",
        "Waypoint policies attach to Services; a workload reached without a Service would lose the L7 rules. Add a Service, or drop the L7 parts of the policy.";
    AUTHZ_WORKLOAD_ADDRESSED = "authz-workload-addressed", Blocker,
        "An L7 policy protects workloads addressed by pod IP",
        "Headless Services and StatefulSets are reached by pod IP, which Service-attached waypoint policies do not cover. Keep the namespace in sidecar mode or remove the L7 rules.";
    AUTHZ_MESH_WIDE = "authz-mesh-wide", Blocker,
        "A mesh-wide (root namespace) policy has L7 or identity rules",
        "meshmig migrates namespaces, not the root namespace; a mesh-wide policy with L7 or identity rules would over-deny behind waypoints. Scope it to namespaces or move it to the istio-waypoint GatewayClass yourself.";
    AUTHZ_TARGETED_EXISTING = "authz-targeted-existing", Info,
        "A targetRefs policy already exists",
        "It is enforced only once its target is served by a waypoint (step 7); before that it does nothing.";
    REQUEST_AUTHN = "request-authn", Info,
        "A RequestAuthentication validates JWTs",
        "JWT validation needs a waypoint; a targetRefs copy is created in step 5.";
    TELEMETRY = "telemetry", Info,
        "A Telemetry resource configures L7 telemetry",
        "Workload-level L7 metrics, traces and access logs come from the waypoint in ambient; a targetRefs copy is created.";
    WASM_PLUGIN = "wasm-plugin", Info,
        "A WasmPlugin extends the sidecar",
        "Wasm plugins run in waypoints in ambient; a targetRefs copy is created.";
    ENVOYFILTER = "envoyfilter", Blocker,
        "An EnvoyFilter patches the migrated workloads' proxies",
        "EnvoyFilters are not supported with ambient data planes and do nothing once sidecars are gone. Replace it with a supported API before migrating.";
    SIDECAR_RESOURCE_IGNORED = "sidecar-resource-ignored", Warning,
        "A Sidecar resource is ignored in ambient",
        "Its egress and inbound limits stop applying after step 9; use AuthorizationPolicies or ServiceEntries with exportTo instead.";
    // ---- traffic
    DR_TRAFFIC_POLICY = "dr-traffic-policy", Info,
        "A DestinationRule sets a traffic policy",
        "ztunnel ignores DestinationRules; its Service needs the waypoint to keep load balancing, connection pool, outlier detection or TLS settings.";
    DR_SUBSETS_ONLY = "dr-subsets-only", Info,
        "A DestinationRule only defines subsets",
        "Once routes use per-version Services it is redundant and is removed in step 8.";
    DR_TLS_ISTIO_MUTUAL = "dr-tls-istio-mutual", Info,
        "A DestinationRule only sets ISTIO_MUTUAL TLS",
        "Ambient always uses mTLS (HBONE); the setting is redundant and does not need a waypoint.";
    DR_SUBSET_TRAFFIC_POLICY = "dr-subset-traffic-policy", Info,
        "A subset has its own traffic policy",
        "It is copied to a DestinationRule for the subset's per-version Service.";
    DR_HOST_UNRESOLVED = "dr-host-unresolved", Warning,
        "A DestinationRule host is not a Service in the inventory",
        "It is left as it is. If it applies to a migrated Service, include that Service in the inventory.";
    VS_MESH_ROUTE = "vs-mesh-route", Info,
        "A mesh VirtualService routes a Service",
        "L7 routing needs the waypoint; it becomes an HTTPRoute swapped in at step 7.";
    VS_GATEWAY_ONLY = "vs-gateway-only", Info,
        "A VirtualService only applies to ingress gateways",
        "It is left as it is.";
    VS_MESH_AND_GATEWAY = "vs-mesh-and-gateway", Info,
        "A VirtualService applies to the mesh and to gateways",
        "Its mesh part becomes an HTTPRoute; in step 7 `mesh` is removed from its gateways instead of deleting it.";
    VS_HOST_UNRESOLVED = "vs-host-unresolved", Warning,
        "A VirtualService host is not a Service in the inventory",
        "Routes for it are not converted. If it is an in-mesh Service, include it in the inventory; external hosts keep their VirtualService.";
    VS_WILDCARD_HOST = "vs-wildcard-host", Blocker,
        "A mesh VirtualService uses a wildcard host",
        "HTTPRoutes attach to one Service each; list the Services explicitly.";
    VS_FAULT_INJECTION = "vs-fault-injection", Blocker,
        "A VirtualService injects faults",
        "Gateway API has no fault injection; the faults would silently stop. Remove them (or accept the finding) before migrating.";
    VS_DELEGATE = "vs-delegate", Blocker,
        "A VirtualService delegates to another VirtualService",
        "Delegation has no HTTPRoute equivalent. Inline the delegate's routes first.";
    VS_DIRECT_RESPONSE = "vs-direct-response", Blocker,
        "A VirtualService returns a direct response",
        "HTTPRoute cannot answer requests itself. Serve the response from a backend instead.";
    VS_SOURCE_MATCH = "vs-source-match", Blocker,
        "A route matches on sourceLabels or sourceNamespace",
        "A waypoint route applies to every caller; converted, the rule would route callers it did not apply to. Replace the source match (e.g. with a header) first.";
    VS_WITHOUT_HEADERS = "vs-without-headers", Blocker,
        "A route uses withoutHeaders",
        "Negative header matches have no HTTPRoute equivalent.";
    VS_URI_REGEX_REWRITE = "vs-uri-regex-rewrite", Blocker,
        "A route uses uriRegexRewrite",
        "HTTPRoute rewrites only full paths or prefixes.";
    VS_MATCH_UNSUPPORTED = "vs-match-unsupported", Blocker,
        "A route matches on scheme, authority, port, gateways or a non-exact method",
        "These matches have no HTTPRoute rule equivalent; rewrite the route first.";
    VS_IGNORE_URI_CASE = "vs-ignore-uri-case", Warning,
        "A route matches the URI case-insensitively",
        "HTTPRoute path matches are case-sensitive; the converted rule matches fewer requests. Use a RegularExpression match with (?i) if needed.";
    VS_PREFIX_NOT_SEGMENT = "vs-prefix-not-segment", Warning,
        "A prefix match is not segment-aligned",
        "PathPrefix matches whole path segments: `/api` no longer matches `/apix`. Check that no client depends on that.";
    VS_PREFIX_TRAILING_SLASH = "vs-prefix-trailing-slash", Blocker,
        "A prefix match ends in a slash",
        "As an HTTPRoute PathPrefix, `/v1/` also matches `/v1` (istiod drops the trailing slash), which the VirtualService sent elsewhere. Match `/v1` explicitly in an earlier rule, or accept the finding if `/v1` may take this route.";
    VS_HTTPROUTE_LIMITS = "vs-httproute-limits", Blocker,
        "The converted HTTPRoute exceeds Gateway API's size limits",
        "An HTTPRoute holds at most 16 rules, 64 matches per rule and 128 matches in all, and at most 16 backendRefs and 16 filters per rule; the API server would refuse it mid-migration. Split the VirtualService by host first (rule order between HTTPRoutes is not preserved).";
    VS_GATEWAY_SUBSET_THROUGH_WAYPOINT = "vs-gateway-subset-through-waypoint", Blocker,
        "A gateway VirtualService routes to subsets of a Service whose ingress traffic moves to the waypoint",
        "From step 7 the Service has istio.io/ingress-use-waypoint: istiod gives the gateway's clusters for it, subset clusters included, the waypoint's endpoints, and the waypoint's HTTPRoute picks the backend, so the gateway route's subset choice is lost. Route by a header the mesh route matches, or give the subsets their own Services, first.";
    VS_GATEWAY_THROUGH_WAYPOINT = "vs-gateway-through-waypoint", Warning,
        "A gateway VirtualService routes to a Service whose ingress traffic moves to the waypoint",
        "From step 7 the gateway sends this traffic to the waypoint, which enforces the Service's policy copies and applies its HTTPRoute: ingress traffic follows the mesh route from then on.";
    VS_EXPORT_TO = "vs-export-to", Blocker,
        "A VirtualService is exported to some namespaces only",
        "exportTo limits a VirtualService to callers in the listed namespaces; its HTTPRoute, attached to the Service and served by the waypoint, would route every caller. Export it to every namespace (\"*\") first, or keep the namespace in sidecar mode.";
    DR_EXPORT_TO = "dr-export-to", Blocker,
        "A DestinationRule the migration relies on is exported to some namespaces only",
        "exportTo limits a DestinationRule to callers in the listed namespaces; the waypoint applies its traffic policy and subsets to every caller. Export it to every namespace (\"*\") first.";
    VS_CORS_UNSUPPORTED = "vs-cors-unsupported", Blocker,
        "A route has a CORS policy and the installed Gateway API has no CORS filter",
        "HTTPRoute's CORS filter is in the standard channel from Gateway API v1.5 (before, only in the experimental channel); without it the policy would be dropped and browsers refused. Upgrade the Gateway API CRDs, or install the experimental channel, first.";
    VS_CORS_PREFLIGHT = "vs-cors-preflight", Warning,
        "CORS preflights the policy does not match are answered by the waypoint",
        "A VirtualService forwards unmatched CORS preflight requests to the app unless unmatchedPreflights is IGNORE; istiod's HTTPRoute CORS filter always answers them itself. Set unmatchedPreflights: IGNORE first if the app relies on seeing them, or accept the change.";
    VS_RULE_PRECEDENCE = "vs-rule-precedence", Blocker,
        "Route order would change under Gateway API precedence",
        "VirtualService rules are first-match; HTTPRoute picks the most specific match (exact path, longest prefix, method, most headers, most query params). A later, more specific rule would now win. Reorder or narrow the VirtualService rules first.";
    VS_RETRIES = "vs-retries", Warning,
        "Retry settings change",
        "HTTPRoute retries need the experimental Gateway API channel and have no retryOn conditions; per-try timeouts become backendRequest timeouts. Review the converted retry.";
    VS_TCP_TLS_ROUTE = "vs-tcp-tls-route", Blocker,
        "A mesh VirtualService has TCP or TLS routes",
        "Only HTTP routes are converted. Move TCP/TLS routing to TCPRoute/TLSRoute yourself.";
    VS_SUBSET_UNKNOWN = "vs-subset-unknown", Blocker,
        "A route names a subset that no DestinationRule defines",
        "The route would fail with no healthy upstream today; fix the subset name first.";
    VS_PORT_AMBIGUOUS = "vs-port-ambiguous", Warning,
        "A destination has no port and its Service has several",
        "The first port is used for the HTTPRoute backend; set destination.port to be explicit.";
    VS_CROSS_NAMESPACE_BACKEND = "vs-cross-namespace-backend", Warning,
        "A route sends traffic to another namespace",
        "Cross-namespace backendRefs need a ReferenceGrant in the target namespace; meshmig creates one that admits only this route's namespace and Service.";
    VS_MIRROR_PERCENT = "vs-mirror-percent", Warning,
        "A mirror percentage was rounded",
        "HTTPRoute mirrors take a fraction; the converted fraction is exact to 1/1,000,000.";
    HTTPROUTE_EXISTS = "httproute-exists", Blocker,
        "A Service already has an HTTPRoute and a VirtualService",
        "Mixing VirtualService and HTTPRoute for one host is undefined. Remove one of them first.";
    PER_VERSION_SERVICE_CONFLICT = "per-version-service-conflict", Blocker,
        "A per-version Service name is taken",
        "meshmig would create this Service for a subset, but another object owns the name. Rename or remove it.";
    // ---- waypoint
    WAYPOINT_DISABLED = "waypoint-disabled", Blocker,
        "L7 features need a waypoint but spec.waypoint.policy is Never",
        "Without a waypoint these features stop working or policies stop being enforced. Allow the waypoint or remove the features.";
    WAYPOINT_EXISTS = "waypoint-exists", Info,
        "The namespace already has a waypoint",
        "It is reused; meshmig does not create another.";
    WAYPOINT_FOR_WORKLOAD = "waypoint-for-workload", Info,
        "Workloads are addressed by pod IP (headless Service or StatefulSet)",
        "The waypoint serves workload-addressed traffic too (istio.io/waypoint-for: workload or all).";
    // ---- enforcement
    BYPASS_CALLERS_UNENUMERABLE = "bypass-callers-unenumerable", Warning,
        "Callers that skip the waypoint cannot be enumerated",
        "The existing ALLOW policies admit any source, so bypass protection cannot list transitional sidecar callers. With bypassProtection Immediate they are denied until they migrate (fail-closed); with Deferred they are unchecked by waypoint policies until step 9 (fail-open).";
    ENFORCEMENT_FAIL_OPEN = "enforcement-fail-open", Blocker,
        "A policy is enforced by nobody for some callers during the migration",
        "The timeline shows which callers and steps. The operator does not enter the window unless this finding is accepted; migrate the callers in the same MeshMigration, or accept it.";
    ENFORCEMENT_FAIL_CLOSED = "enforcement-fail-closed", Warning,
        "A policy over-denies some callers during the migration",
        "The timeline shows which callers and steps; expect refused requests from them in that window.";
    INGRESS_USE_WAYPOINT = "ingress-use-waypoint", Info,
        "Ingress traffic is sent through the waypoint",
        "Services whose policies move to the waypoint get istio.io/ingress-use-waypoint=true in step 7 so ingress gateway traffic is checked by the waypoint copies.";
}

/// A finding about one object.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// Stable id (see [`CATALOGUE`]).
    pub id: &'static str,
    pub severity: Severity,
    /// The object concerned.
    pub object: ObjectRef,
    /// What was found and what to do.
    pub message: String,
    /// Whether `spec.acceptedFindings` waives it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accepted: bool,
}

impl Finding {
    /// A finding of `kind` about `object`; the message is the specific detail followed by the
    /// catalogue's remedy.
    pub fn new(kind: FindingKind, object: ObjectRef, detail: impl AsRef<str>) -> Self {
        let detail = detail.as_ref();
        let message = if detail.is_empty() {
            kind.remedy.to_string()
        } else {
            format!("{detail}. {}", kind.remedy)
        };
        Self {
            id: kind.id,
            severity: kind.severity,
            object,
            message,
            accepted: false,
        }
    }

    /// Whether an `acceptedFindings` entry (`id` or `id@Kind/namespace/name`) waives it.
    pub fn matches_acceptance(&self, entry: &str) -> bool {
        match entry.split_once('@') {
            None => entry == self.id,
            Some((id, object)) => id == self.id && object == self.object.to_string(),
        }
    }

    /// A blocker that is not accepted.
    pub fn is_blocking(&self) -> bool {
        self.severity == Severity::Blocker && !self.accepted
    }
}

/// The finding id of an `acceptedFindings` entry (`id` or `id@Kind/namespace/name`).
pub fn accepted_id(entry: &str) -> &str {
    entry.split_once('@').map_or(entry, |(id, _)| id)
}

/// An `acceptedFindings` entry whose id is not in the [`CATALOGUE`]: it accepts nothing, so
/// a misspelt id would leave the blocker it meant in place without a word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFinding {
    /// The id as given.
    pub id: String,
    /// The catalogue id it is probably a misspelling of (see [`closest_id`]).
    pub closest: Option<&'static str>,
}

impl UnknownFinding {
    /// What to do: "did you mean `…`?", else where the ids are listed.
    pub fn hint(&self) -> String {
        match self.closest {
            Some(id) => format!("did you mean `{id}`?"),
            None => "`meshmig findings` lists the ids".to_string(),
        }
    }
}

/// Checks that an `acceptedFindings` entry names a finding of the catalogue.
pub fn check_accepted(entry: &str) -> Result<(), UnknownFinding> {
    let id = accepted_id(entry);
    if CATALOGUE.iter().any(|k| k.id == id) {
        return Ok(());
    }
    Err(UnknownFinding {
        id: id.to_string(),
        closest: closest_id(id),
    })
}

/// The catalogue id nearest to `id` by edit distance (a swap of two neighbouring letters
/// counts as one edit), when it is near enough to be a misspelling: at most a third of the
/// id's length, and at least 2 edits are allowed. Ties go to the catalogue's first.
pub fn closest_id(id: &str) -> Option<&'static str> {
    let id = id.trim().to_ascii_lowercase();
    let allowed = (id.chars().count() / 3).max(2);
    CATALOGUE
        .iter()
        .map(|k| (edit_distance(&id, k.id), k.id))
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the dynamic-programming table: two back (for swaps), one back, current.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut current = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        before = std::mem::replace(&mut previous, current);
    }
    previous[b.len()]
}

/// The catalogue as Markdown (the content of `docs/findings.md`).
pub fn catalogue_markdown() -> String {
    let mut out = String::from(
        "# Findings catalogue\n\n\
         Generated by `meshmig findings --markdown`; do not edit by hand.\n\n\
         Every finding has a stable id, a severity and the object it concerns. A **blocker** stops \
         the migration (at step 1, or before the step it concerns) unless the MeshMigration lists \
         it in `spec.acceptedFindings`, either by id (`vs-fault-injection`, every instance) or for \
         one object (`vs-fault-injection@VirtualService/bookinfo/ratings`). A **warning** changes \
         behaviour in a way to review; **info** explains a decision of the plan.\n",
    );
    for sev in [Severity::Blocker, Severity::Warning, Severity::Info] {
        let title = match sev {
            Severity::Blocker => "Blockers",
            Severity::Warning => "Warnings",
            Severity::Info => "Information",
        };
        out.push_str(&format!(
            "\n## {title}\n\n| id | finding | what to do |\n|---|---|---|\n"
        ));
        for k in CATALOGUE.iter().filter(|k| k.severity == sev) {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                k.id,
                k.title,
                k.remedy.replace('|', "\\|")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn ids_are_unique_slugs() {
        let mut seen = BTreeSet::new();
        for k in CATALOGUE {
            assert!(seen.insert(k.id), "duplicate id {}", k.id);
            assert!(
                k.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "not a slug: {}",
                k.id
            );
        }
    }

    #[test]
    fn misspelt_ids_get_the_closest_known_id() {
        assert_eq!(closest_id("vs-fault-injecton"), Some("vs-fault-injection"));
        assert_eq!(closest_id("vs-fualt-injection"), Some("vs-fault-injection"));
        assert_eq!(closest_id("VS-FAULT-INJECTION"), Some("vs-fault-injection"));
        assert_eq!(
            closest_id("sidecar-resource-ignore"),
            Some("sidecar-resource-ignored")
        );
        assert_eq!(closest_id("envoyfiltr"), Some("envoyfilter"));
        assert_eq!(closest_id("nothing-like-any-id-at-all"), None);
        assert_eq!(closest_id(""), None);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn accepted_entries_must_name_a_known_finding() {
        assert_eq!(check_accepted("vs-fault-injection"), Ok(()));
        assert_eq!(
            check_accepted("vs-fault-injection@VirtualService/bookinfo/ratings"),
            Ok(())
        );
        let e = check_accepted("vs-fault-injecton@VirtualService/bookinfo/ratings").unwrap_err();
        assert_eq!(e.id, "vs-fault-injecton");
        assert_eq!(e.hint(), "did you mean `vs-fault-injection`?");
        let e = check_accepted("no-such-thing-whatsoever").unwrap_err();
        assert_eq!(e.hint(), "`meshmig findings` lists the ids");
    }

    #[test]
    fn acceptance_by_id_or_object() {
        let f = Finding::new(
            VS_FAULT_INJECTION,
            ObjectRef::new("VirtualService", Some("bookinfo"), "ratings"),
            "x",
        );
        assert!(f.matches_acceptance("vs-fault-injection"));
        assert!(f.matches_acceptance("vs-fault-injection@VirtualService/bookinfo/ratings"));
        assert!(!f.matches_acceptance("vs-fault-injection@VirtualService/bookinfo/reviews"));
        assert!(!f.matches_acceptance("vs-delegate"));
    }
}
