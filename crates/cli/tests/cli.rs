//! The `meshmig` binary as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::process::{Command, Output};

fn meshmig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshmig"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn plan_without_arguments_plans_bookinfo() {
    let o = meshmig(&["plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("migration \"bookinfo\""));
    assert!(out.contains("Step 7 · Waypoint activation"));
    assert!(out.contains("HTTPRoute/bookinfo/reviews"));
}

#[test]
fn yaml_output_parses_back_into_the_json_manifests() {
    let json = meshmig(&["plan", "-o", "json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let yaml = meshmig(&["plan", "-o", "yaml"]);
    assert!(yaml.status.success(), "{}", stderr(&yaml));
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    let docs: Vec<serde_json::Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    assert_eq!(serde_json::Value::Array(docs), plan["manifests"]);
    for m in plan["manifests"].as_array().unwrap() {
        assert_eq!(
            m["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshmig",
            "{m}"
        );
    }
}

fn bad_input(contents: Option<&str>, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let target = match contents {
        Some(c) => {
            let p = dir.path().join("input.yaml");
            std::fs::write(&p, c).unwrap();
            p
        }
        None => dir.path().to_path_buf(),
    };
    let o = meshmig(&["plan", target.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(expect), "{err} lacks {expect}");
    assert!(!err.contains("panicked"));
}

#[test]
fn malformed_yaml_is_one_line_exit_2() {
    bad_input(
        Some("apiVersion: v1\nkind: Service\nmetadata: {name: [\n"),
        "input.yaml:",
    );
}

#[test]
fn empty_directory_is_one_line_exit_2() {
    bad_input(None, "no .yaml, .yml or .json files");
}

#[test]
fn non_kubernetes_yaml_is_one_line_exit_2() {
    bad_input(
        Some("title: my notes\nitems: [1, 2]\n"),
        "is not a Kubernetes object",
    );
}

#[test]
fn missing_file_is_one_line_exit_2() {
    let o = meshmig(&["plan", "/nonexistent/path.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/path.yaml"));
}

#[test]
fn fail_on_blockers_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.yaml");
    std::fs::write(
        &p,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {istio-injection: enabled}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: a}\nspec: {mtls: {mode: DISABLE}}\n",
    )
    .unwrap();
    let o = meshmig(&["plan", p.to_str().unwrap(), "--fail-on-blockers"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = meshmig(&[
        "plan",
        p.to_str().unwrap(),
        "--fail-on-blockers",
        "--accept",
        "peer-authn-disable",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn crd_and_findings_commands() {
    let o = meshmig(&["crd"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("meshmigrations.meshmig.io"));
    let o = meshmig(&["findings", "--markdown"]);
    assert!(o.status.success());
    let md = String::from_utf8_lossy(&o.stdout);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/findings.md"
    ))
    .unwrap();
    assert!(
        md == committed,
        "docs/findings.md is stale: run make generate"
    );
}

/// Runs `meshmig plan` on files written to a temporary directory (in the given order),
/// from that directory so that messages name them as given.
fn plan_files(files: &[(&str, &str)], extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut args = vec!["plan"];
    args.extend(files.iter().map(|(name, _)| *name));
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_meshmig"))
        .args(&args)
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

/// The one-line error of a run that must fail with exit code 2.
fn one_line_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err.trim_end().to_string()
}

const SHOP: &str =
    "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n";
const POLICY: &str = "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-get, namespace: shop}\nspec: {action: ALLOW, rules: [{to: [{operation: {methods: [GET]}}]}]}\n";

#[test]
fn an_object_given_twice_differently_is_an_error_naming_both_places() {
    let other = POLICY.replace("GET", "POST");
    let o = plan_files(
        &[("a.yaml", &format!("{SHOP}{POLICY}")), ("b.yaml", &other)],
        &[],
    );
    assert_eq!(
        one_line_error(&o),
        "meshmig: AuthorizationPolicy/shop/allow-get is given twice with different contents: \
         a.yaml:5 (document 2) and b.yaml:2 (document 1); keep one (identical copies are loaded once)"
    );
    // Twice in one file, whichever comes first.
    let o = plan_files(&[("a.yaml", &format!("{other}---\n{SHOP}{POLICY}"))], &[]);
    assert!(
        one_line_error(&o).contains("a.yaml:2 (document 1) and a.yaml:11 (document 3)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn identical_copies_of_an_object_are_planned_once() {
    let text = format!("{SHOP}{POLICY}");
    let once = plan_files(&[("a.yaml", &text)], &["-o", "json"]);
    let twice = plan_files(&[("a.yaml", &text), ("b.yaml", &text)], &["-o", "json"]);
    assert!(twice.status.success(), "{}", stderr(&twice));
    assert_eq!(
        String::from_utf8_lossy(&once.stdout),
        String::from_utf8_lossy(&twice.stdout)
    );
}

#[test]
fn an_empty_file_is_named() {
    let o = plan_files(&[("a.yaml", SHOP), ("empty.yaml", "# nothing\n---\n")], &[]);
    assert_eq!(
        one_line_error(&o),
        "meshmig: empty.yaml: empty: no Kubernetes objects"
    );
    // An empty List is what kubectl prints when there is nothing of a kind: not empty.
    let o = plan_files(
        &[
            ("a.yaml", SHOP),
            ("none.yaml", "apiVersion: v1\nkind: List\nitems: []\n"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn yaml_errors_name_one_line_and_the_repeated_key() {
    let o = plan_files(
        &[(
            "bad.yaml",
            &format!("{SHOP}---\napiVersion: v1\nkind: Service\nmetadata: {{name: [\n"),
        )],
        &[],
    );
    assert_eq!(
        one_line_error(&o),
        "meshmig: bad.yaml:7:18: invalid YAML: unclosed bracket '['"
    );
    let o = plan_files(
        &[(
            "dup.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  name: api\n",
        )],
        &[],
    );
    assert_eq!(
        one_line_error(&o),
        "meshmig: dup.yaml:6:3: invalid YAML: Service/shop/web: key `name` is repeated in one mapping (first on line 4); keep one"
    );
}

#[test]
fn an_unrendered_helm_template_says_so() {
    let o = plan_files(
        &[(
            "chart.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ include \"web.fullname\" . }}\n",
        )],
        &[],
    );
    assert_eq!(
        one_line_error(&o),
        "meshmig: chart.yaml:4: looks like an unrendered Helm template (`{{ include \"web.fullname\" . }}`): run `helm template` first and plan its output"
    );
}

#[test]
fn an_unknown_accepted_finding_is_an_error_with_the_closest_id() {
    let o = meshmig(&["plan", "--accept", "vs-fault-injecton"]);
    assert_eq!(
        one_line_error(&o),
        "meshmig: unknown finding `vs-fault-injecton` in --accept; did you mean `vs-fault-injection`?"
    );
    let o = meshmig(&[
        "plan",
        "--accept",
        "vs-fault-injection@VirtualService/bookinfo/ratings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The same for the MeshMigration of the input, as the operator refuses it.
    let mm = "---\napiVersion: meshmig.io/v1alpha1\nkind: MeshMigration\nmetadata: {name: shop}\nspec:\n  namespaces: [shop]\n  acceptedFindings: [authz-l7, envoyfiltre]\n";
    let o = plan_files(&[("in.yaml", &format!("{SHOP}{mm}"))], &[]);
    assert_eq!(
        one_line_error(&o),
        "meshmig: in.yaml:5 (document 2): MeshMigration//shop: spec.acceptedFindings[1] is `envoyfiltre`, \
         but `envoyfiltre` is not a finding id (a misspelt id accepts nothing); did you mean `envoyfilter`?"
    );
}

#[test]
fn a_status_that_does_not_decode_does_not_stop_the_plan() {
    let route = "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\n\
                 spec: {parentRefs: [{group: \"\", kind: Service, name: web}]}\n\
                 status: {parents: [{parentRef: {name: web}, conditions: []}]}\n";
    let service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
                   spec: {selector: {app: web}, ports: [{port: 80}]}\nstatus: {loadBalancer: 7}\n";
    let o = plan_files(&[("in.yaml", &format!("{SHOP}{route}{service}"))], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_istiod_without_sail_objects_is_planned_as_external() {
    let istiod = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: istiod, namespace: istio-system}\n\
                  spec:\n  selector: {matchLabels: {app: istiod}}\n  template:\n    metadata: {labels: {app: istiod}}\n    spec:\n      containers: [{name: discovery, image: docker.io/istio/pilot:1.26.1}]\n";
    let o = plan_files(&[("in.yaml", &format!("{SHOP}{istiod}"))], &["-v"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("Control plane: External (Deployment/istio-system/istiod) — Istio 1.26.1"),
        "{out}"
    );
    assert!(out.contains("control-plane-external-detected"), "{out}");
    assert!(!out.contains("Istio//default"), "{out}");
}
