//! The proxy in front of a real API server (e2e/testenv), used by kube-rs: every fault kind
//! reaches the client as it would from a real API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use meshmig_e2e_harness::TestEnv;
use meshmig_faultproxy::{FaultConfig, FaultKind, FaultProxy, Filter};
use serde_json::json;

async fn client(proxy: &FaultProxy) -> Client {
    let kc = Kubeconfig::read_from(proxy.kubeconfig_path()).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert!(
        config
            .cluster_url
            .to_string()
            .starts_with("http://127.0.0.1:")
    );
    Client::try_from(config).unwrap()
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

fn api_code(r: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_reaches_kube_rs_as_from_a_real_api_server() {
    let env = TestEnv::start().await.unwrap();
    let proxy = FaultProxy::start(env.kubeconfig(), FaultConfig::rate(0.0, 7))
        .await
        .unwrap();
    let c = client(&proxy).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // Rate 0: a transparent proxy, bearer token passed through.
    let n = Api::<Namespace>::all(c.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        n.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let w = proxy.writes();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (
            w[0].method.as_str(),
            w[0].verb,
            w[0].name.as_deref(),
            w[0].status
        ),
        ("POST", "create", Some("a"), Some(201))
    );
    assert!(w[0].succeeded() && w[0].body_sha256.as_ref().is_some_and(|h| h.len() == 64));

    // 409 Conflict, only for the filtered call.
    proxy.set_filter(Filter::only("patch", "configmaps"));
    proxy.set_kinds(vec![FaultKind::Conflict]);
    proxy.set_rate(1.0);
    let patch = Patch::Merge(json!({"data": {"k": "w"}}));
    assert_eq!(
        api_code(cms.patch("a", &PatchParams::default(), &patch).await),
        (409, "Conflict".into())
    );
    cms.get("a").await.unwrap();
    let last = proxy.writes().pop().unwrap();
    assert_eq!(
        (last.verb, last.fault, last.forwarded),
        ("patch", Some(FaultKind::Conflict), false)
    );

    // 500.
    proxy.set_kinds(vec![FaultKind::ServerError]);
    assert_eq!(
        api_code(cms.patch("a", &PatchParams::default(), &patch).await),
        (500, "InternalError".into())
    );

    // 429 with Retry-After: kube-rs retries it; the call succeeds once the rate drops.
    proxy.set_filter(Filter::only("get", "configmaps"));
    proxy.set_kinds(vec![FaultKind::Throttle]);
    let before = proxy.stats().faults_of(FaultKind::Throttle);
    let t = Instant::now();
    let got = {
        let get = cms.get("a");
        let relax = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            proxy.set_rate(0.0);
        };
        let (got, ()) = tokio::join!(get, relax);
        got
    };
    got.unwrap();
    assert!(proxy.stats().faults_of(FaultKind::Throttle) > before);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());

    // Slow.
    proxy.set_kinds(vec![FaultKind::Slow]);
    proxy.set_rate(1.0);
    let t = Instant::now();
    cms.get("a").await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    // Dropped after forwarding: the client sees no response, but the write happened.
    proxy.set_filter(Filter::only("create", "configmaps"));
    proxy.set_kinds(vec![FaultKind::DropAfter]);
    let r = cms.create(&PostParams::default(), &cm("b")).await;
    assert!(
        matches!(r, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "{r:?}"
    );
    proxy.set_rate(0.0);
    cms.get("b").await.unwrap();
    let last = proxy.writes().pop().unwrap();
    assert_eq!(
        (last.name.as_deref(), last.fault, last.status),
        (Some("b"), Some(FaultKind::DropAfter), Some(201))
    );
    assert!(last.succeeded());

    // Dropped before forwarding: nothing happened.
    proxy.set_filter(Filter::only("delete", "configmaps"));
    proxy.set_kinds(vec![FaultKind::DropBefore]);
    proxy.set_rate(1.0);
    let r = cms.delete("b", &DeleteParams::default()).await;
    assert!(
        matches!(r, Err(ref e) if !matches!(e, kube::Error::Api(_))),
        "{r:?}"
    );
    proxy.set_rate(0.0);
    cms.get("b").await.unwrap();
    assert!(!proxy.writes().pop().unwrap().forwarded);

    // A watch is cut after a short time (0.5–5 s).
    proxy.set_filter(Filter::only("watch", "configmaps"));
    proxy.set_kinds(vec![FaultKind::WatchCut]);
    proxy.set_rate(1.0);
    let t = Instant::now();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    let mut events = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = stream.next().await {
            match e {
                Ok(_) => events += 1,
                Err(e) => return Some(e),
            }
        }
        None
    })
    .await
    .expect("the watch was not cut");
    assert!(ended.is_some(), "the watch ended without an error");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert!(events >= 2, "events before the cut: {events}");
    let stats = proxy.stats();
    assert_eq!(
        stats.faults_of(FaultKind::WatchCut),
        1,
        "{}",
        stats.summary()
    );
    assert_eq!(stats.upstream_errors, 0, "{}", stats.summary());
    assert!(stats.call("patch configmaps").faults >= 2);
    println!("{}", stats.summary());
}
