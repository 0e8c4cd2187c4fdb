//! Partial typed views keep every field: read, write back, compare.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use meshmig_api::istio::*;
use meshmig_api::sail::{Istio, IstioCni, ZTunnel};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn roundtrip<T: DeserializeOwned + Serialize>(yaml: &str) {
    let original: Value = serde_saphyr::from_str(yaml).unwrap();
    let typed: T = serde_json::from_value(original.clone()).unwrap();
    let back = serde_json::to_value(&typed).unwrap();
    pretty_assertions::assert_eq!(original, back);
}

#[test]
fn authorization_policy_keeps_unknown_fields() {
    roundtrip::<AuthorizationPolicy>(
        r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: p, namespace: ns1, labels: {a: b}}
spec:
  selector: {matchLabels: {app: x}, futureSelectorField: 1}
  action: CUSTOM
  provider: {name: opa}
  rules:
  - from:
    - source: {principals: [a], trustDomains: [td], futureSource: {x: 1}}
    to:
    - operation: {methods: [GET], paths: [/x], futureOp: true}
    when:
    - {key: "request.headers[x]", values: [a], notValues: [b]}
    futureRuleField: []
  futureSpecField: {nested: [1, 2, 3]}
status: {validationMessages: [{type: {code: IST0001}}]}
"#,
    );
}

#[test]
fn virtual_service_keeps_everything() {
    roundtrip::<VirtualService>(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: ns1}
spec:
  hosts: [reviews]
  gateways: [mesh]
  exportTo: ["."]
  http:
  - name: a
    match:
    - uri: {prefix: /x}
      headers: {end-user: {exact: jason}}
      queryParams: {q: {regex: a.*}}
      ignoreUriCase: true
      sourceLabels: {app: x}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 100
      headers: {request: {set: {a: b}}}
    rewrite: {uri: /y, authority: z}
    timeout: 1s
    retries: {attempts: 3, perTryTimeout: 1s, retryOn: 5xx, retryRemoteLocalities: true}
    fault: {abort: {httpStatus: 500, percentage: {value: 1}}}
    mirror: {host: m}
    mirrorPercentage: {value: 5}
    corsPolicy: {allowOrigins: [{exact: a}], maxAge: 1h, unmatchedPreflights: IGNORE}
    headers: {response: {remove: [server]}}
  tcp: [{route: [{destination: {host: db}}]}]
"#,
    );
}

#[test]
fn other_istio_kinds_keep_everything() {
    roundtrip::<DestinationRule>(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: r\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, tunnel: {protocol: CONNECT}}\n  subsets: [{name: v1, labels: {v: '1'}, trafficPolicy: {loadBalancer: {simple: RANDOM}}}]\n",
    );
    roundtrip::<PeerAuthentication>(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}\n",
    );
    roundtrip::<RequestAuthentication>(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: x, forwardOriginalToken: true}]}\n",
    );
    roundtrip::<Sidecar>(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: s}\nspec: {egress: [{hosts: ['./*']}], outboundTrafficPolicy: {mode: REGISTRY_ONLY}}\n",
    );
    roundtrip::<EnvoyFilter>(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: e}\nspec: {priority: 10, configPatches: [{applyTo: HTTP_FILTER, patch: {operation: INSERT_BEFORE}}]}\n",
    );
    roundtrip::<Telemetry>(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec: {tracing: [{randomSamplingPercentage: 10}]}\n",
    );
    roundtrip::<WasmPlugin>(
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: w}\nspec: {url: oci://x, phase: AUTHN, pluginConfig: {a: [1]}}\n",
    );
    roundtrip::<WorkloadEntry>(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: w}\nspec: {address: 1.2.3.4, ports: {http: 80}}\n",
    );
    roundtrip::<ServiceEntry>(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\nspec: {hosts: [a.example], resolution: DNS, ports: [{number: 443, name: https, protocol: TLS}]}\n",
    );
}

#[test]
fn sail_kinds_keep_everything() {
    roundtrip::<Istio>(
        "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\nspec: {version: v1.27.0, namespace: istio-system, profile: default, updateStrategy: {type: RevisionBased, inactiveRevisionDeletionGracePeriodSeconds: 30}, values: {pilot: {env: {A: b}}}}\nstatus: {state: Healthy, revisions: {total: 1}}\n",
    );
    roundtrip::<IstioCni>(
        "apiVersion: sailoperator.io/v1\nkind: IstioCNI\nmetadata: {name: default}\nspec: {namespace: istio-cni, values: {cni: {cniConfDir: /etc}}}\n",
    );
    roundtrip::<ZTunnel>(
        "apiVersion: sailoperator.io/v1\nkind: ZTunnel\nmetadata: {name: default}\nspec: {namespace: ztunnel, version: v1.27.0}\n",
    );
}
