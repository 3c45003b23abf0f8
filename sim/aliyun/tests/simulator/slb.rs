//! SLB: load balancers, listeners and backends through the API, and real
//! traffic through a running listener to HTTP servers on the instances'
//! addresses.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use aliyun_sim::Options;
use axum::{Router, http::HeaderMap, routing::get};
use serde_json::{Value, json};

use crate::client::{Client, ids, list, num, start};

const HZ: (&str, &str) = ("RegionId", "cn-hangzhou");

/// An HTTP server that answers its name and the
/// `X-Forwarded-For` it was given; stops when dropped.
struct Backend {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One server per instance, each on its instance's address and all on one
/// port, which is returned. The port is found rather than fixed: something
/// else on the machine may hold a fixed one on these addresses.
async fn backends(servers: &[(String, Ipv4Addr)]) -> (Vec<Backend>, u16) {
    'search: for _ in 0..100 {
        let first = tokio::net::TcpListener::bind((servers[0].1, 0))
            .await
            .unwrap();
        let port = first.local_addr().unwrap().port();
        let mut sockets = vec![first];
        for (_, ip) in &servers[1..] {
            match tokio::net::TcpListener::bind((*ip, port)).await {
                Ok(socket) => sockets.push(socket),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue 'search,
                Err(e) => panic!("binding {ip}:{port}: {e}"),
            }
        }
        let running = sockets
            .into_iter()
            .enumerate()
            .map(|(n, socket)| serve(socket, format!("web-{n}")))
            .collect();
        return (running, port);
    }
    panic!("no port is free on every one of {servers:?}");
}

fn serve(socket: tokio::net::TcpListener, name: String) -> Backend {
    let app = Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let name = name.clone();
            async move {
                let xff = headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                format!("{name} {xff}")
            }
        }),
    );
    Backend {
        task: tokio::spawn(async move {
            let _ = axum::serve(socket, app).await;
        }),
    }
}

/// `n` running instances and their private addresses.
async fn instances(ecs: &Client, n: usize) -> Vec<(String, Ipv4Addr)> {
    let ran = ecs.run(&[("Amount", &n.to_string())]).await.ok();
    let mut out = Vec::new();
    for id in ids(&ran) {
        let i = ecs.wait_status(&id, "Running").await;
        let ip = i["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        out.push((id, ip));
    }
    out
}

async fn load_balancer(slb: &Client) -> (String, Ipv4Addr) {
    let lb = slb
        .call(
            "CreateLoadBalancer",
            &[
                HZ,
                ("LoadBalancerName", "web"),
                ("VSwitchId", "vsw-bp1dcpsim0zoneh0001"),
            ],
        )
        .await
        .ok();
    (
        lb["LoadBalancerId"].as_str().unwrap().to_owned(),
        lb["Address"].as_str().unwrap().parse().unwrap(),
    )
}

/// Polls `describe` until `done` holds for its answer.
async fn until(
    slb: &Client,
    action: &str,
    params: &[(&str, &str)],
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = slb.call(action, params).await.ok();
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{action} never got there: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn backends_json(servers: &[&str]) -> String {
    let items: Vec<Value> = servers
        .iter()
        .map(|s| json!({"ServerId": s, "Weight": "100", "Type": "ecs"}))
        .collect();
    Value::Array(items).to_string()
}

/// Who answered `n` requests through `url`, counted.
async fn answers(url: &str, n: usize) -> BTreeMap<String, usize> {
    let http = reqwest::Client::new();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let text = http.get(url).send().await.unwrap().text().await.unwrap();
        let who = text.split(' ').next().unwrap_or_default().to_owned();
        *seen.entry(who).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn an_http_listener_spreads_requests_over_healthy_backends_only() {
    let sim = start(Options::default()).await;
    let (ecs, slb) = (Client::ecs(&sim), Client::slb(&sim));
    let servers = instances(&ecs, 3).await;
    let (running, backend_port) = backends(&servers).await;
    let mut running: Vec<_> = running.into_iter().map(Some).collect();
    let backend_port = backend_port.to_string();
    let (lb, address) = load_balancer(&slb).await;
    let lb_id = ("LoadBalancerId", lb.as_str());
    slb.call(
        "CreateLoadBalancerHTTPListener",
        &[
            HZ,
            lb_id,
            ("ListenerPort", "80"),
            ("BackendServerPort", &backend_port),
            ("Bandwidth", "-1"),
            ("StickySession", "off"),
            ("HealthCheck", "on"),
            ("HealthCheckInterval", "1"),
            ("HealthyThreshold", "2"),
            ("UnhealthyThreshold", "2"),
        ],
    )
    .await
    .ok();
    let port = ("ListenerPort", "80");
    let listener = slb
        .call(
            "DescribeLoadBalancerHTTPListenerAttribute",
            &[HZ, lb_id, port],
        )
        .await
        .ok();
    assert_eq!(listener["Status"], "stopped", "a new listener is stopped");
    slb.call("StartLoadBalancerListener", &[HZ, lb_id, port])
        .await
        .ok();
    let starting = slb
        .call(
            "DescribeLoadBalancerHTTPListenerAttribute",
            &[HZ, lb_id, port],
        )
        .await
        .ok();
    assert_eq!(starting["Status"], "starting");
    // Changes wait while it starts.
    slb.call(
        "AddBackendServers",
        &[
            HZ,
            lb_id,
            ("BackendServers", &backends_json(&[&servers[0].0])),
        ],
    )
    .await
    .expect_error(400, "ServiceIsConfiguring");
    until(
        &slb,
        "DescribeLoadBalancerHTTPListenerAttribute",
        &[HZ, lb_id, port],
        |l| l["Status"] == "running",
    )
    .await;
    let url = format!("http://{address}/");
    let empty = reqwest::get(&url).await.unwrap();
    assert_eq!(empty.status(), 503, "no backend yet");

    let all: Vec<&str> = servers.iter().map(|(id, _)| id.as_str()).collect();
    let added = slb
        .call(
            "AddBackendServers",
            &[HZ, lb_id, ("BackendServers", &backends_json(&all))],
        )
        .await
        .ok();
    assert_eq!(list(&added, "BackendServers", "BackendServer").len(), 3);
    until(&slb, "DescribeHealthStatus", &[HZ, lb_id], |h| {
        let rows = list(h, "BackendServers", "BackendServer");
        rows.len() == 3 && rows.iter().all(|r| r["ServerHealthStatus"] == "normal")
    })
    .await;
    let seen = answers(&url, 30).await;
    assert_eq!(seen.len(), 3, "every backend answers: {seen:?}");
    assert!(
        seen.values().all(|n| *n == 10),
        "equal weights, equal shares: {seen:?}"
    );
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        text.ends_with(" 127.0.0.1"),
        "X-Forwarded-For names the client: {text}"
    );

    // A backend that stops answering is found abnormal and gets nothing.
    running[1] = None;
    until(&slb, "DescribeHealthStatus", &[HZ, lb_id, port], |h| {
        list(h, "BackendServers", "BackendServer")
            .iter()
            .any(|r| r["ServerId"] == servers[1].0 && r["ServerHealthStatus"] == "abnormal")
    })
    .await;
    let seen = answers(&url, 20).await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["web-0", "web-2"],
        "{seen:?}"
    );

    // Weights: 0 takes nothing new; a removed backend is gone at once.
    slb.call(
        "SetBackendServers",
        &[
            HZ,
            lb_id,
            (
                "BackendServers",
                &json!([{"ServerId": servers[2].0, "Weight": "0"}]).to_string(),
            ),
        ],
    )
    .await
    .ok();
    let seen = answers(&url, 10).await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["web-0"],
        "{seen:?}"
    );
    let left = slb
        .call(
            "RemoveBackendServers",
            &[
                HZ,
                lb_id,
                (
                    "BackendServers",
                    &json!([{"ServerId": servers[0].0}]).to_string(),
                ),
            ],
        )
        .await
        .ok();
    let left: Vec<&Value> = list(&left, "BackendServers", "BackendServer")
        .iter()
        .map(|b| &b["ServerId"])
        .collect();
    assert_eq!(left, [&json!(servers[1].0), &json!(servers[2].0)]);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 503);

    // Stopped, it does not listen.
    slb.call("StopLoadBalancerListener", &[HZ, lb_id, port])
        .await
        .ok();
    assert!(
        reqwest::get(&url).await.is_err(),
        "a stopped listener refuses connections"
    );
    until(
        &slb,
        "DescribeLoadBalancerHTTPListenerAttribute",
        &[HZ, lb_id, port],
        |l| l["Status"] == "stopped",
    )
    .await;
}

#[tokio::test]
async fn a_tcp_listener_with_an_open_white_list_lets_in_only_whom_it_names() {
    let sim = start(Options::default()).await;
    let (ecs, slb) = (Client::ecs(&sim), Client::slb(&sim));
    let servers = instances(&ecs, 1).await;
    let (_web, backend_port) = backends(&servers).await;
    let backend_port = backend_port.to_string();
    let (lb, address) = load_balancer(&slb).await;
    let lb_id = ("LoadBalancerId", lb.as_str());
    let port = ("ListenerPort", "8000");
    slb.call(
        "CreateLoadBalancerTCPListener",
        &[
            HZ,
            lb_id,
            port,
            ("BackendServerPort", &backend_port),
            ("Bandwidth", "-1"),
            ("healthCheckInterval", "1"),
            ("HealthyThreshold", "2"),
        ],
    )
    .await
    .ok();
    slb.call(
        "AddBackendServers",
        &[
            HZ,
            lb_id,
            ("BackendServers", &backends_json(&[&servers[0].0])),
        ],
    )
    .await
    .ok();
    slb.call("StartLoadBalancerListener", &[HZ, lb_id, port])
        .await
        .ok();
    until(&slb, "DescribeHealthStatus", &[HZ, lb_id], |h| {
        list(h, "BackendServers", "BackendServer")
            .iter()
            .any(|r| r["ServerHealthStatus"] == "normal" && r["Protocol"] == "tcp")
    })
    .await;
    let url = format!("http://{address}:8000/");
    let from = |ip: Ipv4Addr| {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(ip))
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    };
    let (inside, outside) = (Ipv4Addr::new(127, 27, 9, 9), Ipv4Addr::new(127, 0, 0, 1));
    let text = from(outside)
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("web-0"), "{text}");

    slb.call(
        "AddListenerWhiteListItem",
        &[HZ, lb_id, port, ("SourceItems", "127.27.9.9,127.28.0.0/16")],
    )
    .await
    .ok();
    slb.call(
        "SetListenerAccessControlStatus",
        &[HZ, lb_id, port, ("AccessControlStatus", "open_white_list")],
    )
    .await
    .ok();
    let acl = slb
        .call("DescribeListenerAccessControlAttribute", &[HZ, lb_id, port])
        .await
        .ok();
    assert_eq!(
        (
            acl["AccessControlStatus"].as_str(),
            acl["SourceItems"].as_str()
        ),
        (Some("open_white_list"), Some("127.27.9.9,127.28.0.0/16"))
    );
    assert!(
        from(outside).get(&url).send().await.is_err(),
        "outside the list: refused"
    );
    let text = from(inside)
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("web-0"), "{text}");

    slb.call(
        "RemoveListenerWhiteListItem",
        &[HZ, lb_id, port, ("SourceItems", "127.27.9.9")],
    )
    .await
    .ok();
    assert!(
        from(inside).get(&url).send().await.is_err(),
        "taken off the list: refused"
    );
    slb.call(
        "SetListenerAccessControlStatus",
        &[HZ, lb_id, port, ("AccessControlStatus", "close")],
    )
    .await
    .ok();
    assert!(
        from(outside).get(&url).send().await.is_ok(),
        "a closed white list lets everyone in"
    );
    slb.call(
        "AddListenerWhiteListItem",
        &[HZ, lb_id, port, ("SourceItems", "0.0.0.0/0")],
    )
    .await
    .expect_error(400, "IpListItemFormatError");

    // An inactive load balancer forwards nothing; active again, it does.
    slb.call(
        "SetLoadBalancerStatus",
        &[HZ, lb_id, ("LoadBalancerStatus", "inactive")],
    )
    .await
    .ok();
    assert!(from(outside).get(&url).send().await.is_err());
    slb.call(
        "SetLoadBalancerStatus",
        &[HZ, lb_id, ("LoadBalancerStatus", "active")],
    )
    .await
    .ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    while from(outside).get(&url).send().await.is_err() {
        assert!(Instant::now() < deadline, "it never forwarded again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn slb_calls_follow_aliyun_rules_and_answer_its_errors() {
    let sim = start(Options::default()).await;
    let (ecs, slb) = (Client::ecs(&sim), Client::slb(&sim));
    let servers = instances(&ecs, 2).await;

    // ClientToken: a retry answers the same load balancer, no second one.
    let token = ("ClientToken", "create-web-1");
    let first = slb
        .call(
            "CreateLoadBalancer",
            &[HZ, ("LoadBalancerName", "web"), token],
        )
        .await
        .ok();
    let again = slb
        .call(
            "CreateLoadBalancer",
            &[HZ, ("LoadBalancerName", "web"), token],
        )
        .await
        .ok();
    assert_eq!(first["LoadBalancerId"], again["LoadBalancerId"]);
    assert_eq!(sim.load_balancers().len(), 1);
    slb.call(
        "CreateLoadBalancer",
        &[HZ, ("LoadBalancerName", "other"), token],
    )
    .await
    .expect_error(400, "IdempotentParameterMismatch");
    let lb = first["LoadBalancerId"].as_str().unwrap();
    let lb_id = ("LoadBalancerId", lb);

    // Paging: 12 in all, 5 a page.
    for n in 0..11 {
        slb.call(
            "CreateLoadBalancer",
            &[HZ, ("LoadBalancerName", &format!("lb-{n}"))],
        )
        .await
        .ok();
    }
    let page = slb
        .call(
            "DescribeLoadBalancers",
            &[HZ, ("PageSize", "5"), ("PageNumber", "3")],
        )
        .await
        .ok();
    assert_eq!(num(&page["TotalCount"]), 12);
    assert_eq!(list(&page, "LoadBalancers", "LoadBalancer").len(), 2);
    let one = slb.call("DescribeLoadBalancers", &[HZ, lb_id]).await.ok();
    assert_eq!(
        list(&one, "LoadBalancers", "LoadBalancer")[0]["LoadBalancerStatus"],
        "active"
    );

    slb.call(
        "DescribeLoadBalancerAttribute",
        &[HZ, ("LoadBalancerId", "lb-bp1nothere")],
    )
    .await
    .expect_error(404, "InvalidLoadBalancerId.NotFound");
    let http = [
        HZ,
        lb_id,
        ("ListenerPort", "80"),
        ("BackendServerPort", "8080"),
        ("StickySession", "off"),
        ("HealthCheck", "off"),
    ];
    slb.call("CreateLoadBalancerHTTPListener", &http).await.ok();
    slb.call("CreateLoadBalancerHTTPListener", &http)
        .await
        .expect_error(400, "ListenerAlreadyExists");
    slb.call("CreateLoadBalancerHTTPListener", &http[..5])
        .await
        .expect_error(400, "MissingHealthCheck");
    slb.call(
        "CreateLoadBalancerTCPListener",
        &[
            HZ,
            lb_id,
            ("ListenerPort", "81"),
            ("BackendServerPort", "8080"),
        ],
    )
    .await
    .expect_error(400, "MissingBandwidth");
    // A health-check path goes into the probe's request line: no spaces,
    // no line breaks.
    slb.call(
        "SetLoadBalancerHTTPListenerAttribute",
        &[
            HZ,
            lb_id,
            ("ListenerPort", "80"),
            ("HealthCheckURI", "/x HTTP/1.0\r\nX-Injected: 1"),
        ],
    )
    .await
    .expect_error(400, "InvalidParameter");

    // Backends: at most 20 a call, running instances only, once each.
    let many: Vec<String> = (0..21).map(|i| format!("i-bp1many{i:012}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    slb.call(
        "AddBackendServers",
        &[HZ, lb_id, ("BackendServers", &backends_json(&many))],
    )
    .await
    .expect_error(400, "TooManyBackendServers");
    let (a, b) = (servers[0].0.as_str(), servers[1].0.as_str());
    ecs.call("StopInstance", &[("InstanceId", b)]).await.ok();
    ecs.wait_status(b, "Stopped").await;
    slb.call(
        "AddBackendServers",
        &[HZ, lb_id, ("BackendServers", &backends_json(&[b]))],
    )
    .await
    .expect_error(400, "ObtainIpFail");
    slb.call(
        "AddBackendServers",
        &[HZ, lb_id, ("BackendServers", &backends_json(&[a]))],
    )
    .await
    .ok();
    slb.call(
        "AddBackendServers",
        &[HZ, lb_id, ("BackendServers", &backends_json(&[a]))],
    )
    .await
    .expect_error(400, "InvalidParameter");
    slb.call(
        "SetBackendServers",
        &[
            HZ,
            lb_id,
            (
                "BackendServers",
                &json!([{"ServerId": a, "Weight": "101"}]).to_string(),
            ),
        ],
    )
    .await
    .expect_error(400, "InvalidWeight.Malformed");
    slb.call(
        "RemoveBackendServers",
        &[HZ, lb_id, ("BackendServers", &backends_json(&[b]))],
    )
    .await
    .expect_error(400, "InvalidServerId.NotFound");

    // The attribute answer: both spellings of the listener list, weights as numbers.
    let attribute = slb
        .call("DescribeLoadBalancerAttribute", &[HZ, lb_id])
        .await
        .ok();
    assert_eq!(
        attribute["ListenerPortsAndProtocol"]["ListenerPortAndProtocol"][0]["ListenerProtocol"],
        "http"
    );
    assert_eq!(
        attribute["ListenerPortsAndProtocal"]["ListenerPortAndProtocal"][0]["ListenerProtocal"],
        "http"
    );
    assert_eq!(
        attribute["BackendServers"]["BackendServer"][0]["Weight"],
        100
    );
    let health = slb.call("DescribeHealthStatus", &[HZ, lb_id]).await.ok();
    assert_eq!(
        list(&health, "BackendServers", "BackendServer")[0]["ServerHealthStatus"],
        "unavailable",
        "checks off"
    );

    // In another region it does not exist.
    slb.call(
        "DescribeLoadBalancerAttribute",
        &[("RegionId", "cn-beijing"), lb_id],
    )
    .await
    .expect_error(404, "InvalidLoadBalancerId.NotFound");
    slb.call("DeleteLoadBalancer", &[HZ, lb_id]).await.ok();
    assert_eq!(sim.load_balancers().len(), 11);
}
