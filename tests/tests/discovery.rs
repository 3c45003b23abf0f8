//! Service discovery end to end: real nginx masters and HAProxies, each
//! behind a real `sshd` on its own loopback address, driven by the bundled
//! nginx and haproxy plugins, and the simulator's SLB driven by the slb
//! plugin; pools on the Aliyun simulator in fleet mode with real containers
//! on dockerd.

#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dcp_tests::{
    cloud::{Cloud, quick_delays},
    docker::{Cleanup, hostnames_by_address, web_image},
    haproxy::HaproxyHosts,
    nginx::NginxHosts,
    web_port,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The default binding and upstream, seeded at install.
async fn defaults(cloud: &Cloud) -> (i64, i64) {
    let bindings = cloud.api.get("/api/v1/bindings").await;
    let binding = &bindings["items"][0];
    assert_eq!(binding["name"], "default", "{bindings}");
    (
        binding["id"].as_i64().unwrap(),
        binding["upstream_id"].as_i64().unwrap(),
    )
}

/// A service running `dcp-test/web:1` on the tests' web port with a health
/// check,
/// and a pool bound to `binding`.
async fn pool(cloud: &Cloud, service: &str, binding: i64) -> i64 {
    let container = json!({"ports": [{"container_port": 80, "host_port": web_port()}],
                           "health_check": {"probe": {"http": {"path": "/healthz", "port": 80}},
                                            "interval_secs": 1, "timeout_secs": 2, "retries": 2}});
    cloud
        .pool(service, None, container, json!({"binding_id": binding}))
        .await
}

/// Steady HTTP load through every nginx host: one request at a time per
/// host, each on a new connection, counting answers and failures.
struct Load {
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    /// The backends that answered (nginx's `X-Upstream` header).
    seen: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(urls: Vec<String>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let (ok, failures, seen, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(BTreeSet::new())),
            Arc::new(AtomicBool::new(false)),
        );
        let workers = urls
            .into_iter()
            .map(|url| {
                let (client, ok, failures, seen, stop) = (
                    client.clone(),
                    ok.clone(),
                    failures.clone(),
                    seen.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match client.get(&url).send().await {
                            Ok(reply) if reply.status() == 200 => {
                                // The balancer names the backend (nginx's and
                                // HAProxy's `X-Upstream`), or the backend does
                                // (`/cgi-bin/whoami`: its container's host name).
                                let named = reply
                                    .headers()
                                    .get("x-upstream")
                                    .map(|h| h.to_str().unwrap_or_default().to_owned());
                                let body = reply.text().await.unwrap_or_default();
                                let backend = named.unwrap_or_else(|| body.trim().to_owned());
                                seen.lock().await.insert(backend);
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(reply) => failures
                                .lock()
                                .await
                                .push(format!("{url}: HTTP {}", reply.status())),
                            Err(e) => failures.lock().await.push(format!("{url}: {e:?}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failures,
            seen,
            stop,
            workers,
        }
    }

    /// Forgets which backends answered so far.
    async fn reset_seen(&self) {
        self.seen.lock().await.clear();
    }

    /// Waits until every backend `backends` names answered through the
    /// balancer; `backends` is asked again on each look (the containers
    /// behind an address change during a deploy).
    async fn wait_seen(&self, backends: impl Fn() -> BTreeSet<String>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (wanted, seen) = (backends(), self.seen.lock().await.clone());
            if wanted.is_subset(&seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "through the balancer only {seen:?} answered, expected {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failures.lock().await.clone(),
        )
    }
}

fn backends_of(detail: &Value) -> BTreeSet<String> {
    detail["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["state"] == "succeeded")
        .map(|n| format!("{}:{}", n["address"].as_str().unwrap(), web_port()))
        .collect()
}

async fn members(cloud: &Cloud, upstream: i64) -> BTreeSet<String> {
    let u = cloud
        .api
        .get(&format!("/api/v1/upstreams/{upstream}"))
        .await;
    u["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| format!("{}:{}", b["address"].as_str().unwrap(), b["port"]))
        .collect()
}

/// How a balancer's answers name the backend that served them.
#[derive(Clone, Copy)]
enum Names {
    /// In `X-Upstream` (the test hosts' nginx and HAProxy set it).
    Header,
    /// Not at all: the load asks `/cgi-bin/whoami`, which answers the
    /// container's host name.
    Whoami,
}

/// A pool of `service` bound to the default binding, driven through a
/// balancer whose nodes answer at `urls`: expanded by 1 (registered once
/// healthy), then by 2 under steady load, shrunk by 1 (unregistered,
/// drained, before its container stops), and deployed tag 2 one node at a
/// time — with no failed request through the balancer. Answers the
/// backends the upstream ends with.
async fn expand_shrink_and_deploy_under_load(
    cloud: &Cloud,
    service: &str,
    urls: Vec<String>,
    names: Names,
) -> BTreeSet<String> {
    // What the load sees of `backends`: their addresses, or their
    // containers' host names.
    let seen_as = |backends: &BTreeSet<String>| -> BTreeSet<String> {
        match names {
            Names::Header => backends.clone(),
            Names::Whoami => {
                let hosts = hostnames_by_address(service);
                backends
                    .iter()
                    .map(|b| {
                        let address = b.split(':').next().unwrap();
                        hosts
                            .get(address)
                            .unwrap_or_else(|| panic!("no container at {address}: {hosts:?}"))
                            .clone()
                    })
                    .collect()
            }
        }
    };
    let (binding, upstream) = defaults(cloud).await;
    let pool = pool(cloud, service, binding).await;
    let detail = cloud.api.get(&format!("/api/v1/pools/{pool}")).await;
    assert_eq!(detail["binding_id"], binding, "{detail}");

    // The first node: registered once healthy.
    let first = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 1}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(first["task"]["state"], "succeeded", "{first:#}");
    let steps: Vec<&str> = first["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["create_vm", "start_service", "register"]);
    let mut expected = backends_of(&first);
    assert_eq!(members(cloud, upstream).await, expected);

    let load = Load::start(urls);
    load.wait_seen(|| seen_as(&expected), Duration::from_secs(20))
        .await;

    // Expand by 2 under load: the new nodes take traffic once healthy.
    let more = cloud
        .task(
            json!({"kind": "expand", "pool_id": pool, "count": 2}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(more["task"]["state"], "succeeded", "{more:#}");
    expected.extend(backends_of(&more));
    assert_eq!(expected.len(), 3);
    assert_eq!(members(cloud, upstream).await, expected);
    load.reset_seen().await;
    load.wait_seen(|| seen_as(&expected), Duration::from_secs(20))
        .await;

    // Shrink 1 under load: unregistered (drained) before its container stops.
    let gone = expected.iter().next().unwrap().clone();
    let address = gone.split(':').next().unwrap().to_owned();
    let shrink = cloud
        .task(
            json!({"kind": "shrink", "pool_id": pool, "addresses": [address]}),
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(shrink["task"]["state"], "succeeded", "{shrink:#}");
    assert_eq!(shrink["steps"][0]["name"], "unregister", "{shrink:#}");
    assert_eq!(shrink["steps"][1]["name"], "stop_service", "{shrink:#}");
    let steps = &shrink["nodes"][0]["steps"];
    assert!(
        steps[0]["finished_at"].as_str().unwrap() <= steps[1]["started_at"].as_str().unwrap(),
        "{shrink:#}"
    );
    expected.remove(&gone);
    assert_eq!(members(cloud, upstream).await, expected);

    // Deploy tag 2 one node at a time under load.
    let deploy = cloud
        .task(
            json!({"kind": "deploy", "pool_id": pool, "tag": "2", "batch_size": 1}),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(deploy["task"]["state"], "succeeded", "{deploy:#}");
    assert_eq!(members(cloud, upstream).await, expected);
    load.reset_seen().await;
    load.wait_seen(|| seen_as(&expected), Duration::from_secs(20))
        .await;

    let (ok, failures) = load.stop().await;
    eprintln!(
        "requests through the balancer during expand, shrink and deploy: {ok} answered, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    assert!(ok > 100, "only {ok} requests were made");

    // Every change is in the operation log, by the tasks that made it.
    let log = cloud
        .api
        .get(&format!(
            "/api/v1/discovery-changes?upstream_id={upstream}&per_page=50"
        ))
        .await;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "register").count(),
        3 + 2,
        "{log:#}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "unregister").count(),
        1 + 2,
        "{log:#}"
    );
    assert!(
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "succeeded" && c["actor"].as_str().unwrap().starts_with("task:")),
        "{log:#}"
    );
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expand_shrink_and_deploy_move_live_traffic_through_nginx_without_a_failed_request() {
    let _containers = Cleanup::new("web-lb");
    let _ = web_image("2");
    let cloud = Cloud::start(quick_delays()).await;
    let hosts = NginxHosts::start(2);
    let (_unit, _nodes) = hosts.join_default_unit(&cloud.api).await;
    let urls = (0..hosts.len()).map(|i| hosts.url(i)).collect();
    let expected = expand_shrink_and_deploy_under_load(&cloud, "web-lb", urls, Names::Header).await;
    // Each host's upstream file lists exactly the pool's backends.
    for i in 0..hosts.len() {
        let file = hosts.read_upstream(i, "default_upstream");
        assert_eq!(served(&file), expected, "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expand_shrink_and_deploy_move_live_traffic_through_haproxy_without_a_reload_or_a_failed_request()
 {
    let _containers = Cleanup::new("web-hap");
    let _ = web_image("2");
    let cloud = Cloud::start(quick_delays()).await;
    let hosts = HaproxyHosts::start(2);
    let groups = cloud.api.get("/api/v1/lb-groups").await;
    let group = groups["items"][0]["id"].as_i64().unwrap();
    let (_unit, _nodes) = hosts.join_group(&cloud.api, group, "haproxies").await;
    let workers: Vec<Vec<u32>> = (0..hosts.len()).map(|i| hosts.worker_pids(i)).collect();
    let urls = (0..hosts.len()).map(|i| hosts.url(i)).collect();
    let expected =
        expand_shrink_and_deploy_under_load(&cloud, "web-hap", urls, Names::Header).await;
    for (i, before) in workers.iter().enumerate() {
        // Membership changed through the Runtime API: the same workers
        // serve as before the first change (no reload) …
        assert_eq!(&hosts.worker_pids(i), before, "host {i} reloaded");
        // … and the file lists the servers, so a restart keeps them.
        let conf = hosts.read_conf(i);
        for backend in &expected {
            assert!(
                conf.contains(&format!(" {backend}")),
                "{backend} missing:\n{conf}"
            );
        }
        assert_eq!(
            conf.matches("server dcp_").count(),
            expected.len(),
            "{conf}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expand_shrink_and_deploy_move_live_traffic_through_an_slb_without_a_failed_request() {
    let _containers = Cleanup::new("web-slb");
    let _ = web_image("2");
    let cloud = Cloud::start(quick_delays()).await;
    let (lb, address) = cloud.load_balancer().await;
    let groups = cloud.api.get("/api/v1/lb-groups").await;
    let group = groups["items"][0]["id"].as_i64().unwrap();
    cloud.join_slb(group, &lb).await;

    let urls = vec![format!("http://{address}/cgi-bin/whoami")];
    let expected =
        expand_shrink_and_deploy_under_load(&cloud, "web-slb", urls, Names::Whoami).await;
    // The load balancer's backend servers are exactly the pool's instances.
    let instances: BTreeMap<String, String> = cloud
        .sim
        .instances()
        .into_iter()
        .map(|i| (i.id.clone(), i.private_ip.to_string()))
        .collect();
    let served: BTreeSet<String> = cloud
        .sim
        .load_balancers()
        .into_iter()
        .find(|b| b.id == lb)
        .unwrap()
        .backends
        .iter()
        .map(|(server, _weight)| format!("{}:{}", instances[server], web_port()))
        .collect();
    assert_eq!(served, expected);

    // The account's load-balancer page shows the same backends, healthy,
    // and the unit serving through it, which keeps it from deletion.
    let path = format!(
        "/api/v1/accounts/{}/load-balancers/{lb}?region=cn-hangzhou",
        cloud.account_id
    );
    let detail = cloud.api.get(&path).await;
    let healthy: BTreeSet<String> = detail["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            b["health"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["health"] == "normal")
        })
        .map(|b| format!("{}:{}", b["address"].as_str().unwrap(), web_port()))
        .collect();
    assert_eq!(healthy, expected, "{detail:#}");
    assert_eq!(
        detail["served_by"][0]["name"],
        format!("slb-{lb}"),
        "{detail:#}"
    );
    let (status, err) = cloud.api.delete(&path).await;
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("slb-{lb}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_down_during_a_change_shows_drift_and_catches_up_on_resync() {
    let cloud = Cloud::start(quick_delays()).await;
    let mut hosts = NginxHosts::start(2);
    let (unit, nodes) = hosts.join_default_unit(&cloud.api).await;
    let (_, upstream) = defaults(&cloud).await;
    let path = format!("/api/v1/upstreams/{upstream}");

    hosts.stop_nginx(1);
    let (status, change) = cloud
        .api
        .post(
            &format!("{path}/register"),
            &json!({"backends": [{"address": "127.24.0.1", "port": 8080}]}),
        )
        .await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["state"], "partial", "{change}");
    assert!(
        change["message"]
            .as_str()
            .unwrap()
            .contains(&format!("FAILED {}", hosts.addr(1))),
        "{change}"
    );
    assert!(
        hosts
            .read_upstream(0, "default_upstream")
            .contains("127.24.0.1:8080")
    );
    let view = cloud.api.get(&path).await;
    let states = view["nodes"].as_array().unwrap();
    let of = |node: i64| {
        states
            .iter()
            .find(|s| s["node_id"] == node)
            .unwrap()
            .clone()
    };
    assert_eq!(of(nodes[0])["in_sync"], true, "{view}");
    assert_eq!(of(nodes[1])["in_sync"], false, "{view}");
    assert_ne!(of(nodes[1])["error"], "", "{view}");
    let unit_view = cloud.api.get(&format!("/api/v1/lb-units/{unit}")).await;
    assert_eq!(unit_view["nodes"][1]["in_sync"], false, "{unit_view}");

    hosts.restart(1);
    let (status, report) = cloud
        .api
        .post(&format!("/api/v1/lb-nodes/{}/resync", nodes[1]), &json!({}))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "succeeded", "{report}");
    assert!(
        hosts
            .read_upstream(1, "default_upstream")
            .contains("127.24.0.1:8080")
    );
    let view = cloud.api.get(&path).await;
    assert!(
        view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["in_sync"] == true),
        "{view}"
    );
}

/// Tiny HTTP servers on `addresses`, on the web port, answering 200 to anything:
/// real backends for nginx to send requests to.
async fn backends(addresses: &[String]) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut servers = Vec::new();
    for address in addresses {
        let listener = tokio::net::TcpListener::bind((address.as_str(), web_port()))
            .await
            .unwrap_or_else(|e| panic!("binding {address}:{}: {e}", web_port()));
        servers.push(tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                        .await;
                });
            }
        }));
    }
    servers
}

async fn app_key(cloud: &Cloud, name: &str, privileges: &[&str]) -> (i64, String) {
    let (status, key) = cloud
        .api
        .post(
            "/api/v1/app-keys",
            &json!({"name": name, "privileges": privileges}),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    (
        key["key"]["id"].as_i64().unwrap(),
        key["secret"].as_str().unwrap().to_owned(),
    )
}

/// `POST /api/v1/alterations/<action>` with an app key.
async fn alteration(cloud: &Cloud, key: Option<&str>, action: &str, body: &Value) -> (u16, Value) {
    let mut request = cloud
        .api
        .http
        .post(
            cloud
                .api
                .server
                .url(&format!("/api/v1/alterations/{action}")),
        )
        .json(body);
    if let Some(key) = key {
        request = request.header("X-App-Key", key);
    }
    let reply = request.send().await.unwrap();
    let status = reply.status().as_u16();
    (status, reply.json().await.unwrap_or(Value::Null))
}

/// Polls an alteration until it is no longer pending.
async fn settled(cloud: &Cloud, key: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let reply = cloud
            .api
            .http
            .get(cloud.api.server.url(&format!("/api/v1/alterations/{id}")))
            .header("X-App-Key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        let change: Value = reply.json().await.unwrap();
        if change["state"] != "pending" {
            return change;
        }
        assert!(
            Instant::now() < deadline,
            "alteration {id} still pending: {change}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn served(file: &str) -> BTreeSet<String> {
    file.lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .filter(|l| !l.contains(" down"))
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(';')
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_alterations_by_app_key_leave_exactly_the_expected_members() {
    let cloud = Cloud::start(quick_delays()).await;
    let hosts = NginxHosts::start(2);
    hosts.join_default_unit(&cloud.api).await;
    let (_, upstream) = defaults(&cloud).await;
    // 127.24.<pid-based block>.1..=101: one kept, 50 to remove, 50 to add.
    let block = 1 + std::process::id() % 250;
    let address = |i: u32| format!("127.24.{block}.{i}");
    let kept = address(1);
    let initial: Vec<String> = (2..=51).map(address).collect();
    let added: Vec<String> = (52..=101).map(address).collect();
    let everyone: Vec<String> = std::iter::once(kept.clone())
        .chain(initial.iter().cloned())
        .chain(added.iter().cloned())
        .collect();
    let _servers = backends(&everyone).await;
    let spec = |a: &String| json!({"address": a, "port": web_port()});
    let (status, change) = cloud
        .api
        .put(
            &format!("/api/v1/upstreams/{upstream}/backends"),
            &json!({"backends": std::iter::once(&kept).chain(&initial).map(spec).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(
        (status, change["state"].as_str()),
        (200, Some("succeeded")),
        "{change}"
    );

    // Refusals: no key, a stranger's, one without the privilege, a revoked one.
    let body =
        json!({"binding": "default", "backends": [{"address": added[0], "port": web_port()}]});
    let (status, refused) = alteration(&cloud, None, "register", &body).await;
    assert_eq!(status, 401, "{refused}");
    let (status, refused) = alteration(&cloud, Some("dcpak_nonsense"), "register", &body).await;
    assert_eq!(status, 401, "{refused}");
    let (_, reader) = app_key(&cloud, "reader", &["alterations.read"]).await;
    let (status, refused) = alteration(&cloud, Some(&reader), "register", &body).await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alterations.register"),
        "{refused}"
    );
    let (revoked_id, revoked) = app_key(&cloud, "old", &["alterations.register"]).await;
    let (status, _) = cloud
        .api
        .delete(&format!("/api/v1/app-keys/{revoked_id}"))
        .await;
    assert_eq!(status, 200);
    let (status, refused) = alteration(&cloud, Some(&revoked), "register", &body).await;
    assert_eq!(status, 401, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked"),
        "{refused}"
    );

    let (_, key) = app_key(
        &cloud,
        "pipeline",
        &[
            "alterations.register",
            "alterations.unregister",
            "alterations.read",
        ],
    )
    .await;
    let load = Load::start((0..hosts.len()).map(|i| hosts.url(i)).collect());
    let calls = added
        .iter()
        .map(|a| ("register", a.clone()))
        .chain(initial.iter().map(|a| ("unregister", a.clone())))
        .map(|(action, a)| {
            let (cloud, key) = (&cloud, key.clone());
            async move {
                let body =
                    json!({"binding": "default", "backends": [{"address": a, "port": web_port()}]});
                let (status, change) = alteration(cloud, Some(&key), action, &body).await;
                assert_eq!(status, 202, "{change}");
                settled(cloud, &key, change["id"].as_i64().unwrap()).await
            }
        });
    let changes = futures_util::future::join_all(calls).await;
    for change in &changes {
        assert_eq!(change["state"], "succeeded", "{change}");
        assert!(
            !change["after"].as_array().unwrap().is_empty(),
            "the upstream was left empty: {change}"
        );
    }
    let expected: BTreeSet<String> = std::iter::once(&kept)
        .chain(&added)
        .map(|a| format!("{a}:{}", web_port()))
        .collect();
    assert_eq!(members(&cloud, upstream).await, expected);
    for i in 0..hosts.len() {
        assert_eq!(
            served(&hosts.read_upstream(i, "default_upstream")),
            expected
        );
    }
    let (ok, failures) = load.stop().await;
    // The changes waiting for the upstream's writer commit together, yet
    // each one's log shows its own step: the members it found and what it
    // left, exactly one backend apart.
    let revisions: BTreeSet<i64> = changes
        .iter()
        .map(|c| c["revision"].as_i64().unwrap())
        .collect();
    let shared = changes.len() - revisions.len();
    for change in &changes {
        let set = |side: &str| -> BTreeSet<String> {
            change[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| format!("{}:{}", b["address"].as_str().unwrap(), b["port"]))
                .collect()
        };
        let (before, after) = (set("before"), set("after"));
        let backend = format!(
            "{}:{}",
            change["args"]["backends"][0]["address"].as_str().unwrap(),
            web_port()
        );
        let (grown, shrunk) = (
            after.difference(&before).count(),
            before.difference(&after).count(),
        );
        match change["action"].as_str().unwrap() {
            "register" => assert!(
                after.contains(&backend) && (grown, shrunk) == (1, 0),
                "{change}"
            ),
            _ => assert!(
                !after.contains(&backend) && (grown, shrunk) == (0, 1),
                "{change}"
            ),
        }
    }
    let pushes: BTreeSet<&str> = changes
        .iter()
        .map(|c| c["message"].as_str().unwrap().split(':').next().unwrap())
        .collect();
    eprintln!(
        "100 alterations: {} revisions ({shared} changes committed with another), {} pushes, \
         {ok} requests through nginx, {} failed",
        revisions.len(),
        pushes.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        pushes.len() < 100,
        "no push carried two changes: {pushes:?}"
    );
    let log = cloud
        .api
        .get("/api/v1/discovery-changes?actor=app-key:pipeline&per_page=200")
        .await;
    assert_eq!(log["total"], 100, "{log}");
}

async fn release(cloud: &Cloud, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = cloud.api.get(&format!("/api/v1/lb-releases/{id}")).await;
        if !matches!(r["state"].as_str(), Some("pending" | "running")) {
            return r;
        }
        assert!(Instant::now() < deadline, "release {id} still going: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_main_configuration_is_refused_by_nginx_and_a_rollback_restores_the_last_good_one()
{
    let cloud = Cloud::start(quick_delays()).await;
    let hosts = NginxHosts::start(1);
    let (unit, _) = hosts.join_default_unit(&cloud.api).await;
    let (_, upstream) = defaults(&cloud).await;
    let _servers = backends(&["127.24.0.200".to_owned()]).await;
    let (status, change) = cloud
        .api
        .post(
            &format!("/api/v1/upstreams/{upstream}/register"),
            &json!({"backends": [{"address": "127.24.0.200", "port": web_port()}]}),
        )
        .await;
    assert_eq!(status, 200, "{change}");
    let files = format!("/api/v1/lb-units/{unit}/files");
    let health = format!("http://{}/nginx-health", hosts.addr(0));
    // After each publish the unit runs a command group on the nodes that
    // took it (OpenDCP's publish scripts).
    let after = cloud.group("after-publish", "echo published").await;
    let (status, updated) = cloud
        .api
        .put(
            &format!("/api/v1/lb-units/{unit}"),
            &json!({"group_id": 1, "name": "default", "publish_group_id": after}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");

    // A good version, published: nginx answers with its marker.
    let (status, v2) = cloud
        .api
        .post(
            &files,
            &json!({"path": "nginx.conf", "content": hosts.main_conf(0, "good")}),
        )
        .await;
    assert_eq!(status, 201, "{v2}");
    assert_eq!(
        v2["version"], 2,
        "the install's nginx.conf is version 1: {v2}"
    );
    let (status, good) = cloud
        .api
        .post(&format!("/api/v1/lb-units/{unit}/releases"), &json!({}))
        .await;
    assert_eq!(status, 202, "{good}");
    let good = release(&cloud, good["id"].as_i64().unwrap()).await;
    assert_eq!(good["state"], "succeeded", "{good:#}");
    assert_eq!(good["files"], json!([{"path": "nginx.conf", "version": 2}]));
    let answer = reqwest::get(&health).await.unwrap().text().await.unwrap();
    assert_eq!(answer, "good\n");
    let execution = good["execution_id"]
        .as_i64()
        .expect("the publish group ran");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ran = loop {
        let ran = cloud.api.execution_with_output(execution).await;
        if !matches!(ran["state"].as_str(), Some("pending" | "running")) {
            break ran;
        }
        assert!(Instant::now() < deadline, "{ran:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ran["state"], "succeeded", "{ran:#}");
    assert_eq!(
        ran["hosts"][0]["stdout"].as_str().unwrap().trim(),
        "published"
    );

    // A syntax error: refused by nginx -t, the live file and traffic untouched.
    let load = Load::start(vec![hosts.url(0)]);
    let broken = hosts
        .main_conf(0, "broken")
        .replace("events {}", "events {");
    let (status, v3) = cloud
        .api
        .post(&files, &json!({"path": "nginx.conf", "content": broken}))
        .await;
    assert_eq!(status, 201, "{v3}");
    let (status, bad) = cloud
        .api
        .post(&format!("/api/v1/lb-units/{unit}/releases"), &json!({}))
        .await;
    assert_eq!(status, 202, "{bad}");
    let bad = release(&cloud, bad["id"].as_i64().unwrap()).await;
    assert_eq!(bad["state"], "failed", "{bad:#}");
    assert!(bad["execution_id"].is_null(), "no node took it: {bad:#}");
    let log = bad["nodes"][0]["log"].as_str().unwrap();
    assert!(log.contains("nginx: [emerg]"), "{log}");
    assert_eq!(
        std::fs::read_to_string(hosts.conf_path(0)).unwrap(),
        hosts.main_conf(0, "good")
    );
    let answer = reqwest::get(&health).await.unwrap().text().await.unwrap();
    assert_eq!(answer, "good\n");

    // Another good version, then back to the first good release.
    let (status, _) = cloud
        .api
        .post(
            &files,
            &json!({"path": "nginx.conf", "content": hosts.main_conf(0, "newer")}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, newer) = cloud
        .api
        .post(&format!("/api/v1/lb-units/{unit}/releases"), &json!({}))
        .await;
    assert_eq!(status, 202, "{newer}");
    assert_eq!(
        release(&cloud, newer["id"].as_i64().unwrap()).await["state"],
        "succeeded"
    );
    assert_eq!(
        reqwest::get(&health).await.unwrap().text().await.unwrap(),
        "newer\n"
    );
    let (status, back) = cloud
        .api
        .post(
            &format!("/api/v1/lb-releases/{}/rollback", good["id"]),
            &json!({}),
        )
        .await;
    assert_eq!(status, 202, "{back}");
    let back = release(&cloud, back["id"].as_i64().unwrap()).await;
    assert_eq!(back["state"], "succeeded", "{back:#}");
    assert_eq!(back["rollback_of"], good["id"]);
    assert_eq!(
        reqwest::get(&health).await.unwrap().text().await.unwrap(),
        "good\n"
    );
    let (ok, failures) = load.stop().await;
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_retried_under_its_idempotency_key_applies_once() {
    let cloud = Cloud::start(quick_delays()).await;
    let hosts = NginxHosts::start(1);
    hosts.join_default_unit(&cloud.api).await;
    let (_, upstream) = defaults(&cloud).await;
    let path = format!("/api/v1/upstreams/{upstream}");
    let register = |key: &'static str| {
        cloud
            .api
            .http
            .post(cloud.api.server.url(&format!("{path}/register")))
            .bearer_auth(&cloud.api.token)
            .header("Idempotency-Key", key)
            .json(&json!({"backends": [{"address": "127.24.0.7", "port": 8080}]}))
            .send()
    };
    let first: Value = register("deploy-42").await.unwrap().json().await.unwrap();
    assert_eq!(first["state"], "succeeded", "{first}");
    let (status, _) = cloud
        .api
        .post(
            &format!("{path}/unregister"),
            &json!({"backends": [{"address": "127.24.0.7", "port": 8080}], "force": true}),
        )
        .await;
    assert_eq!(status, 200);
    // The retry (a client that never saw the first answer) finds the first
    // change: the backend removed since is not put back.
    let retry: Value = register("deploy-42").await.unwrap().json().await.unwrap();
    assert_eq!(retry["id"], first["id"], "{retry}");
    assert!(members(&cloud, upstream).await.is_empty());
    assert!(
        !hosts
            .read_upstream(0, "default_upstream")
            .contains("127.24.0.7")
    );
    // A bad key is refused naming the header.
    let (status, refused) = {
        let reply = cloud
            .api
            .http
            .post(cloud.api.server.url(&format!("{path}/register")))
            .bearer_auth(&cloud.api.token)
            .header("Idempotency-Key", "has space")
            .json(&json!({"backends": []}))
            .send()
            .await
            .unwrap();
        (
            reply.status().as_u16(),
            reply.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "Idempotency-Key", "{refused}");
}
