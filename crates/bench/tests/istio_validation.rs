//! Istio validates every generated manifest: the manifests of the plans of the planner's
//! fixture corpus, of the embedded bookinfo and of a 100-namespace synthetic mesh all pass
//! Istio's own validation (`meshmig-istio validate`: what istiod's webhook runs, with strict
//! decoding). An object Istio would reject is a defect of meshmig, unless it carries the
//! rejection over from the object it was copied from (see [`Provenance`]).
//!
//! Istio does not validate Gateway API kinds (it registers them with `EmptyValidate`) nor
//! core kinds, so a second test dry-runs the generated objects against a real API server
//! with the Istio and Gateway API CRDs installed: their OpenAPI schemas and CEL rules.
//!
//! Both tests share the inputs and their plans, planned once per process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use meshmig_api::MeshMigrationSpec;
use meshmig_api::names::ANNOTATION_SOURCE;
use meshmig_e2e_harness::TestEnv;
use meshmig_istio_oracle::oracle::{Oracle, Outcome, Verdict};
use meshmig_planner::Inventory;
use meshmig_planner::plan::{injected_namespaces, plan};
use serde_json::{Value, json};

/// The input groups of the goal.
const FIXTURES: &str = "fixtures";
const BOOKINFO: &str = "bookinfo";
const SYNTHETIC: &str = "synthetic";
const SYNTHETIC_NAMESPACES: usize = 100;

/// One input inventory: its group, its name and the text of its YAML files.
struct Input {
    group: &'static str,
    name: String,
    texts: Vec<(String, String)>,
    /// The CRDs the inventory says are from Gateway API's experimental channel (filled in
    /// when planned): the planner then uses their extra fields.
    experimental_crds: BTreeSet<String>,
    /// VirtualServices whose HTTPRoute the plan itself says exceeds Gateway API's limits
    /// (blocker `vs-httproute-limits`): the API server must refuse exactly those.
    over_limits: BTreeSet<String>,
}

/// One generated manifest and the input whose plan produced it.
struct Generated {
    /// Index into [`Corpus::inputs`].
    input: usize,
    object: Value,
}

/// The inputs and every manifest of their plans.
struct Corpus {
    inputs: Vec<Input>,
    manifests: Vec<Generated>,
}

impl Corpus {
    fn input_of(&self, g: &Generated) -> &Input {
        &self.inputs[g.input]
    }

    fn group_of(&self, g: &Generated) -> &'static str {
        self.input_of(g).group
    }

    fn describe(&self, g: &Generated) -> String {
        let input = self.input_of(g);
        format!("{} (from {} {})", key(&g.object), input.group, input.name)
    }

    fn inputs_per_group(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for i in &self.inputs {
            *out.entry(i.group).or_default() += 1;
        }
        out
    }
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("<no kind>")
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `Kind/namespace/name`, the form of the `meshmig.io/source` annotation.
fn key(object: &Value) -> String {
    let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
    format!("{}/{ns}/{}", kind(object), name(object))
}

fn yaml(object: &Value) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> (String, String) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path.display().to_string(), text)
}

/// The YAML files of `dir`, in name order (as the planner's tests load them).
fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files.iter().map(|f| read(f)).collect()
}

/// Every fixture directory with at least one YAML file.
fn fixture_inputs() -> Vec<Input> {
    let root = repo_root().join("crates/planner/tests/fixtures");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .map(|dir| Input {
            group: FIXTURES,
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            texts: yaml_files(dir),
            experimental_crds: BTreeSet::new(),
            over_limits: BTreeSet::new(),
        })
        .filter(|i| !i.texts.is_empty())
        .collect()
}

fn bookinfo_input() -> Input {
    Input {
        group: BOOKINFO,
        name: "examples/bookinfo".into(),
        texts: yaml_files(&repo_root().join("examples/bookinfo")),
        experimental_crds: BTreeSet::new(),
        over_limits: BTreeSet::new(),
    }
}

/// The synthetic mesh as `make bench` generates it, through the binary so that what is
/// validated is what the benchmarks plan. A `.yaml` name: `gen` writes YAML whatever the
/// extension.
fn synthetic_input() -> Input {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mesh.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_meshmig-bench"))
        .args(["gen", "--namespaces", &SYNTHETIC_NAMESPACES.to_string()])
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "meshmig-bench gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Input {
        group: SYNTHETIC,
        name: format!("{SYNTHETIC_NAMESPACES} namespaces"),
        texts: vec![read(&file)],
        experimental_crds: BTreeSet::new(),
        over_limits: BTreeSet::new(),
    }
}

/// The manifests of the input's plan, planned as the planner's fixture test plans: with the
/// inventory's MeshMigration when it has one, else with every injected namespace. Records
/// the input's experimental CRDs.
fn plan_input(input: &mut Input) -> Vec<Value> {
    let mut inv = Inventory::default();
    for (file, text) in &input.texts {
        inv.load_str(text, file)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // As `meshmig plan` does after loading.
    inv.sort();
    input.experimental_crds = inv
        .crds
        .iter()
        .flatten()
        .filter(|(_, crd)| crd.channel.as_deref() == Some("experimental"))
        .map(|(name, _)| name.clone())
        .collect();
    let (name, spec) = match inv.mesh_migrations.first() {
        Some(m) => (m.metadata.name.clone().unwrap_or_default(), m.spec.clone()),
        None => {
            let spec = MeshMigrationSpec {
                namespaces: Some(injected_namespaces(&inv)),
                ..Default::default()
            };
            ("fixture".to_string(), spec)
        }
    };
    let p = plan(&inv, &spec, &name);
    input.over_limits = p
        .findings
        .iter()
        .filter(|f| f.id == "vs-httproute-limits")
        .map(|f| f.object.to_string())
        .collect();
    p.manifests
}

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let started = Instant::now();
        let mut inputs = fixture_inputs();
        inputs.push(bookinfo_input());
        inputs.push(synthetic_input());
        let manifests = inputs
            .iter_mut()
            .enumerate()
            .flat_map(|(i, input)| {
                plan_input(input)
                    .into_iter()
                    .map(move |object| Generated { input: i, object })
            })
            .collect::<Vec<_>>();
        println!(
            "planned {} manifests of {} inputs in {:.1} s",
            manifests.len(),
            inputs.len(),
            started.elapsed().as_secs_f64()
        );
        Corpus { inputs, manifests }
    })
}

/// Counts per (input group, kind).
#[derive(Default)]
struct Tally {
    rows: BTreeMap<(&'static str, String), Row>,
}

#[derive(Default)]
struct Row {
    validated: usize,
    valid: usize,
    skipped: usize,
    warnings: usize,
}

impl Tally {
    fn add(&mut self, group: &'static str, kind: &str, outcome: &Outcome) {
        let row = self.rows.entry((group, kind.to_string())).or_default();
        match outcome {
            Outcome::Checked {
                valid, warnings, ..
            } => {
                row.validated += 1;
                row.valid += usize::from(*valid);
                row.warnings += warnings.len();
            }
            Outcome::Skipped { .. } => row.skipped += 1,
        }
    }

    /// The sum of one column over every group, for one kind.
    fn total(&self, kind: &str, column: fn(&Row) -> usize) -> usize {
        self.rows
            .iter()
            .filter(|((_, k), _)| k == kind)
            .map(|(_, row)| column(row))
            .sum()
    }

    fn groups_with(&self, kind: &str) -> BTreeSet<&'static str> {
        self.rows
            .keys()
            .filter(|(_, k)| k == kind)
            .map(|(g, _)| *g)
            .collect()
    }

    fn print(&self) {
        println!(
            "{:<10} {:<22} {:>9} {:>6} {:>8} {:>9}",
            "group", "kind", "validated", "valid", "skipped", "warnings"
        );
        for ((group, kind), r) in &self.rows {
            println!(
                "{group:<10} {kind:<22} {:>9} {:>6} {:>8} {:>9}",
                r.validated, r.valid, r.skipped, r.warnings
            );
        }
    }
}

/// What Istio said against one generated object.
struct Complaint<'a> {
    generated: &'a Generated,
    error: bool,
    message: &'a str,
}

fn complaints<'a>(corpus: &'a Corpus, verdicts: &'a [Verdict]) -> Vec<Complaint<'a>> {
    let mut out = Vec::new();
    for (generated, v) in corpus.manifests.iter().zip(verdicts) {
        if let Outcome::Checked {
            errors, warnings, ..
        } = &v.outcome
        {
            let tagged = errors.iter().map(|m| (true, m));
            for (error, message) in tagged.chain(warnings.iter().map(|m| (false, m))) {
                out.push(Complaint {
                    generated,
                    error,
                    message,
                });
            }
        }
    }
    out
}

/// The objects that generated ones were copied from (`meshmig.io/source`, e.g. a policy's
/// waypoint copy), and what Istio says about them.
///
/// A copy is meant to keep its source's rules verbatim, so when Istio says the same thing
/// about the source, the complaint is the input's, not something meshmig introduced. At
/// present two fixtures have such sources on purpose:
/// - `authz-unknown-field`: its policy uses `grpcServices`, an Operation field no Istio has,
///   standing in for a field of an Istio newer than meshmig. The planner keeps unknown
///   fields in the waypoint copy (and warns `authz-unknown-field`): on a cluster whose Istio
///   stored the source, the field is one that Istio knows, and dropping it would change the
///   rule. Only against this older Istio is the copy, like its source, rejected.
/// - `authz-deny-l7-only`, `authz-deny-l7-broadened`: DENY rules with only HTTP attributes,
///   which Istio warns deny all TCP traffic in their scope. The warning holds for the
///   sidecar's original as much as for the waypoint's copy; adding ports to silence it
///   would change what the policy denies.
struct Provenance {
    /// Source key (`Kind/ns/name`) per input → Istio's errors and warnings about it.
    verdicts: HashMap<(usize, String), Outcome>,
}

impl Provenance {
    /// Validates, in one call, the sources of every generated object Istio complained about.
    fn of(corpus: &Corpus, complaints: &[Complaint<'_>]) -> Provenance {
        let wanted: BTreeSet<(usize, String)> = complaints
            .iter()
            .filter_map(|c| Some((c.generated.input, source_key(corpus, c.generated)?)))
            .collect();
        let mut keys = Vec::new();
        let mut objects = Vec::new();
        for (input, source) in wanted {
            if let Some(object) = find_object(&corpus.inputs[input], &source) {
                keys.push((input, source));
                objects.push(object);
            }
        }
        let verdicts = if objects.is_empty() {
            Vec::new()
        } else {
            Oracle::get().unwrap().validate(&objects).unwrap()
        };
        Provenance {
            verdicts: keys
                .into_iter()
                .zip(verdicts.into_iter().map(|v| v.outcome))
                .collect(),
        }
    }

    /// Whether Istio says the same about the generated object's source (with the source's
    /// name in place of the copy's: Istio's messages name the policy).
    fn inherited(&self, corpus: &Corpus, c: &Complaint<'_>) -> Option<String> {
        let source = source_key(corpus, c.generated)?;
        let Some(Outcome::Checked {
            errors, warnings, ..
        }) = self.verdicts.get(&(c.generated.input, source.clone()))
        else {
            return None;
        };
        let source_name = source.rsplit('/').next().unwrap_or_default();
        let message = c.message.replace(name(&c.generated.object), source_name);
        let same = if c.error { errors } else { warnings };
        same.contains(&message).then_some(source)
    }
}

/// The object a generated one is a copy of: its `meshmig.io/source` when of the same kind.
/// (A per-version Service's source is a DestinationRule: nothing of it is copied verbatim.)
///
/// Only fixtures may carry a complaint over: bookinfo and the synthetic mesh are meshmig's
/// own inputs, and a source Istio or the API server objects to is a defect of those.
fn source_key(corpus: &Corpus, g: &Generated) -> Option<String> {
    if corpus.group_of(g) != FIXTURES {
        return None;
    }
    let source = g.object["metadata"]["annotations"][ANNOTATION_SOURCE].as_str()?;
    let same_kind = source.split('/').next() == Some(kind(&g.object));
    same_kind.then(|| source.to_string())
}

fn find_object(input: &Input, key_wanted: &str) -> Option<Value> {
    input.texts.iter().find_map(|(file, text)| {
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{file}: {e}"));
        docs.into_iter().find(|d| key(d) == key_wanted)
    })
}

#[test]
fn istio_validates_every_generated_manifest() {
    let corpus = corpus();
    let objects: Vec<Value> = corpus.manifests.iter().map(|g| g.object.clone()).collect();
    let started = Instant::now();
    // One process for all of them (thousands per call are fine).
    let verdicts = Oracle::get().unwrap().validate(&objects).unwrap();
    println!(
        "Istio validated {} objects in {:.2} s",
        objects.len(),
        started.elapsed().as_secs_f64()
    );

    let mut tally = Tally::default();
    for (g, v) in corpus.manifests.iter().zip(&verdicts) {
        // The oracle answers in input order; anything else would misattribute verdicts.
        assert_eq!(
            (v.kind.as_str(), v.name.as_str()),
            (kind(&g.object), name(&g.object))
        );
        tally.add(corpus.group_of(g), &v.kind, &v.outcome);
    }
    println!("inputs: {:?}", corpus.inputs_per_group());
    tally.print();

    let complaints = complaints(corpus, &verdicts);
    let provenance = Provenance::of(corpus, &complaints);
    let mut introduced = String::new();
    for c in &complaints {
        let what = if c.error { "error" } else { "warning" };
        let described = corpus.describe(c.generated);
        match provenance.inherited(corpus, c) {
            Some(source) => println!(
                "{what} (as on its source {source}): {described}: {}",
                c.message
            ),
            None => {
                println!("{what}: {described}: {}", c.message);
                let _ = writeln!(
                    introduced,
                    "{what}: {described}: {}\n{}",
                    c.message,
                    yaml(&c.generated.object)
                );
            }
        }
    }
    assert!(
        introduced.is_empty(),
        "Istio rejects or warns about generated objects (and not about their sources):\n{introduced}"
    );
    assert_not_vacuous(corpus, &tally);
}

/// The corpus and Istio's answers cover what the goal names, so the test cannot pass on
/// empty plans or on an oracle that skips everything.
fn assert_not_vacuous(corpus: &Corpus, tally: &Tally) {
    let inputs = corpus.inputs_per_group();
    assert!(inputs[FIXTURES] >= 60, "{inputs:?}");
    let validated = |r: &Row| r.validated;
    let skipped = |r: &Row| r.skipped;
    for (kind, column, at_least) in [
        ("AuthorizationPolicy", validated as fn(&Row) -> usize, 1_400),
        ("DestinationRule", validated, 400),
        // Istio skips Gateway API and core kinds: these only say that they were generated
        // (the API server test checks them).
        ("HTTPRoute", skipped, 200),
        ("Gateway", skipped, 140),
        ("Service", skipped, 400),
    ] {
        let n = tally.total(kind, column);
        assert!(n >= at_least, "only {n} {kind}s (expected {at_least})");
    }
    for kind in ["AuthorizationPolicy", "HTTPRoute", "Gateway", "Service"] {
        assert_eq!(
            tally.groups_with(kind),
            BTreeSet::from([FIXTURES, BOOKINFO, SYNTHETIC]),
            "{kind}s are not generated for every input group"
        );
    }
}

/// The API server's resource for every kind generated, found once.
async fn resources(client: &kube::Client, objects: &[&Generated]) -> Resources {
    let mut out = HashMap::new();
    for g in objects {
        if let Entry::Vacant(slot) = out.entry(gvk(&g.object)) {
            let found = discovery::pinned_kind(client, slot.key())
                .await
                .unwrap_or_else(|e| panic!("the API server does not serve {:?}: {e}", slot.key()));
            slot.insert(found);
        }
    }
    out
}

type Resources = HashMap<GroupVersionKind, (ApiResource, ApiCapabilities)>;

fn gvk(object: &Value) -> GroupVersionKind {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind(object))
}

/// A server-side apply in dry-run mode with strict field validation, as kubectl sends it:
/// a CRD's schema (unknown fields included) and CEL rules, or a core kind's validation.
/// The refusal's message on failure.
async fn dry_run(
    client: &kube::Client,
    resources: &Resources,
    object: &Value,
) -> Result<(), String> {
    let (resource, capabilities) = &resources[&gvk(object)];
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), ns, resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), resource),
    };
    let params = PatchParams::apply("meshmig")
        .force()
        .dry_run()
        .validation_strict();
    match api
        .patch(name(object), &params, &Patch::Apply(object))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(e) => Err(e.to_string()),
    }
}

/// The outcome of dry-running some generated objects.
#[derive(Default)]
struct DryRun<'a> {
    /// Accepted objects per (input group, kind).
    accepted: BTreeMap<(&'static str, String), usize>,
    refused: Vec<(&'a Generated, String)>,
}

impl DryRun<'_> {
    fn total(&self, kind: &str) -> usize {
        self.accepted
            .iter()
            .filter(|((_, k), _)| k == kind)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Dry-runs every object, a few requests at a time: one at a time, the ~2,700 objects
/// would take most of the time budget.
async fn dry_run_all<'a>(
    corpus: &Corpus,
    client: &kube::Client,
    resources: &Resources,
    objects: &[&'a Generated],
) -> DryRun<'a> {
    let results: Vec<(&Generated, Result<(), String>)> =
        futures::stream::iter(objects.iter().copied())
            .map(|g| async move { (g, dry_run(client, resources, &g.object).await) })
            .buffer_unordered(16)
            .collect()
            .await;
    let mut out = DryRun::default();
    for (g, result) in results {
        match result {
            Ok(()) => {
                let kind = kind(&g.object).to_string();
                *out.accepted.entry((corpus.group_of(g), kind)).or_default() += 1;
            }
            Err(message) => out.refused.push((g, message)),
        }
    }
    out
}

/// Creates (for real) every namespace the objects live in: a namespaced dry-run needs it.
async fn create_namespaces(env: &TestEnv, objects: &[&Generated]) {
    let namespaces: BTreeSet<&str> = objects
        .iter()
        .filter_map(|g| g.object["metadata"]["namespace"].as_str())
        .collect();
    let yaml: String = namespaces
        .iter()
        .map(|ns| {
            let doc = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            format!("---\n{doc}\n")
        })
        .collect();
    env.apply_yaml(&yaml).await.unwrap();
}

/// The Gateway API module whose standard CRDs the test environment installs (from
/// `e2e/testenv/crds.lock`), in the Go module cache: its experimental CRDs are next to them.
fn gateway_api_module() -> PathBuf {
    let lock = read(&repo_root().join("e2e/testenv/crds.lock")).1;
    let module = lock
        .split_whitespace()
        .find(|w| w.starts_with("sigs.k8s.io/gateway-api@"))
        .expect("crds.lock names no sigs.k8s.io/gateway-api version");
    // Already downloaded by the testenv build: then this only looks it up.
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "go mod download {module}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(info["Dir"].as_str().unwrap())
}

/// Replaces the named CRDs (e.g. `httproutes.gateway.networking.k8s.io`) by their
/// experimental-channel versions. A replace, not an apply: an apply would merge the two
/// schemas' fields owned by different managers.
async fn install_experimental(env: &TestEnv, names: &BTreeSet<String>) {
    let dir = gateway_api_module().join("config/crd/experimental");
    let api: Api<CustomResourceDefinition> = env.api();
    for crd_name in names {
        let (plural, group) = crd_name.split_once('.').unwrap();
        let text = read(&dir.join(format!("{group}_{plural}.yaml"))).1;
        let mut crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
        crd.metadata.resource_version = api.get(crd_name).await.unwrap().metadata.resource_version;
        api.replace(crd_name, &PostParams::default(), &crd)
            .await
            .unwrap();
    }
}

/// Dry-runs the objects of inputs with experimental CRDs once those CRDs are installed. The
/// API server switches to a new schema shortly after the replace, with no signal when: the
/// dry-run is repeated until everything is accepted, and what is refused at the deadline
/// is refused.
async fn dry_run_experimental<'a>(
    corpus: &Corpus,
    env: &TestEnv,
    objects: &[&'a Generated],
) -> DryRun<'a> {
    if objects.is_empty() {
        return DryRun::default();
    }
    let crds: BTreeSet<String> = objects
        .iter()
        .flat_map(|g| corpus.input_of(g).experimental_crds.iter().cloned())
        .collect();
    install_experimental(env, &crds).await;
    let client = env.client();
    let resources = resources(&client, objects).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 1.. {
        let result = dry_run_all(corpus, &client, &resources, objects).await;
        if result.refused.is_empty() || Instant::now() > deadline {
            println!("experimental CRDs {crds:?}: {attempt} dry-run(s)");
            return result;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!("the attempts are unbounded")
}

/// Whether the API server refuses the generated object's source the same way (with the
/// source's name in place of the copy's), as for [`Provenance`].
async fn refusal_inherited(
    corpus: &Corpus,
    client: &kube::Client,
    resources: &Resources,
    g: &Generated,
    message: &str,
) -> Option<String> {
    let source = source_key(corpus, g)?;
    let object = find_object(corpus.input_of(g), &source)?;
    let source_name = name(&object);
    let expected = message.replace(name(&g.object), source_name);
    match dry_run(client, resources, &object).await {
        Err(refusal) if refusal == expected => Some(source),
        _ => None,
    }
}

/// Dry-runs the manifests of the fixture corpus and of the synthetic mesh against the test
/// API server. Bookinfo's plan is left to `crates/cli/tests/dry_run.rs`, which dry-runs
/// `meshmig plan -o yaml`. Inputs whose inventory has experimental-channel Gateway API CRDs
/// (the planner then generates their extra fields) are dry-run after those CRDs replace the
/// standard ones.
#[tokio::test(flavor = "multi_thread")]
async fn api_server_accepts_every_generated_manifest() {
    let corpus = corpus();
    let (over_limits, checked): (Vec<&Generated>, Vec<&Generated>) = corpus
        .manifests
        .iter()
        .filter(|g| corpus.group_of(g) != BOOKINFO)
        .partition(|g| {
            let source = g.object["metadata"]["annotations"][ANNOTATION_SOURCE].as_str();
            kind(&g.object) == "HTTPRoute"
                && source.is_some_and(|s| corpus.input_of(g).over_limits.contains(s))
        });
    let (experimental, standard): (Vec<&Generated>, Vec<&Generated>) = checked
        .into_iter()
        .partition(|g| !corpus.input_of(g).experimental_crds.is_empty());
    let started = Instant::now();
    let env = TestEnv::start().await.unwrap();
    println!(
        "test API server up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    create_namespaces(&env, &[standard.as_slice(), &experimental].concat()).await;
    let client = env.client();
    let resources = resources(&client, &standard).await;
    let mut result = dry_run_all(corpus, &client, &resources, &standard).await;
    // Sources are dry-run against the standard CRDs, before the experimental ones replace them.
    let mut refused = String::new();
    for (g, message) in std::mem::take(&mut result.refused) {
        report_refusal(corpus, &client, &resources, g, &message, &mut refused).await;
    }
    // What the plan blocks as over Gateway API's limits, the API server refuses: the
    // blocker is right, and these are not applied unless a user accepts it.
    assert!(
        !over_limits.is_empty(),
        "the corpus has a route over the limits"
    );
    let limits = dry_run_all(corpus, &client, &resources, &over_limits).await;
    assert!(
        limits.accepted.is_empty() && limits.refused.iter().all(|(_, m)| m.contains("Too many")),
        "routes the plan says exceed the limits: {:?}",
        limits.refused.iter().map(|(_, m)| m).collect::<Vec<_>>()
    );
    let experimental_result = dry_run_experimental(corpus, &env, &experimental).await;
    for (g, message) in &experimental_result.refused {
        let _ = writeln!(
            refused,
            "{} (experimental CRDs): {message}\n{}",
            corpus.describe(g),
            yaml(&g.object)
        );
    }
    for (key, n) in experimental_result.accepted {
        *result.accepted.entry(key).or_default() += n;
    }
    println!(
        "dry-ran {} objects ({} with experimental CRDs) in {:.1} s",
        standard.len() + experimental.len(),
        experimental.len(),
        started.elapsed().as_secs_f64()
    );
    for ((group, kind), n) in &result.accepted {
        println!("{group:<10} {kind:<22} {n:>6} accepted");
    }
    assert!(
        refused.is_empty(),
        "the API server refuses generated objects:\n{refused}"
    );
    for (kind, at_least) in [
        ("HTTPRoute", 200),
        ("Gateway", 140),
        ("Service", 400),
        ("ReferenceGrant", 1),
        ("AuthorizationPolicy", 1_400),
    ] {
        let n = result.total(kind);
        assert!(
            n >= at_least,
            "only {n} {kind}s accepted (expected {at_least})"
        );
    }
}

/// Prints a refusal; one not inherited from the object's source is added to `refused`.
async fn report_refusal(
    corpus: &Corpus,
    client: &kube::Client,
    resources: &Resources,
    g: &Generated,
    message: &str,
    refused: &mut String,
) {
    let described = corpus.describe(g);
    match refusal_inherited(corpus, client, resources, g, message).await {
        Some(source) => println!("refused (as its source {source} is): {described}: {message}"),
        None => {
            let _ = writeln!(refused, "{described}: {message}\n{}", yaml(&g.object));
        }
    }
}
