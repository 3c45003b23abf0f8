//! The plugin's logic against the real Aliyun simulator (`aliyun-sim`,
//! in-process, on its own 127.21.10.x addresses): requests signed by the
//! shared client with this test's own HMAC, sent with reqwest, answered by
//! the simulator's SLB and ECS — faults included.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use aliyun_rpc::{
    client::{Api, Client, Failure, Kind},
    lenient::{list, strings, text},
    sim_host::SimHost,
    slb::Health,
};
use aliyun_sim::{Delays, Faults, Options, Simulator};
use serde_json::Value;

use crate::{Applied, Backend, Upstream, config::Config, converge::Slb};

/// One request as the simulator answered it.
#[derive(Debug, Clone)]
struct Sent {
    action: String,
    /// How many servers its `BackendServers` carried.
    servers: usize,
    /// The error code answered; `lost` when no reply came.
    code: Option<String>,
}

/// A simulator, a host and the plugin's settings for one test.
struct World {
    sim: Option<Simulator>,
    host: SimHost,
    config: Config,
    // Last: dropped after the simulator's shutdown ran on it.
    runtime: tokio::runtime::Runtime,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.runtime.block_on(sim.shutdown());
        }
    }
}

const HZ: (&str, &str) = ("RegionId", "cn-hangzhou");

impl World {
    /// A simulator on 127.21.10.(4n+1…4n+3), instances booting in
    /// `starting` (listeners starting as long).
    fn start(n: u8, starting: Duration) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let at = |i: u8| SocketAddr::from((Ipv4Addr::new(127, 21, 10, 4 * n + i), 0));
        let short = Duration::from_millis(150);
        let sim = runtime
            .block_on(Simulator::start(Options {
                ecs_addr: at(1),
                vpc_addr: at(2),
                slb_addr: at(3),
                delays: Delays {
                    pending: short,
                    starting,
                    stopping: short,
                    deleting: short,
                },
                seed: 0x51b0 + u64::from(n),
                ..Options::default()
            }))
            .unwrap();
        let config = Config {
            slb_endpoint: sim.slb_endpoint(),
            ecs_endpoint: sim.ecs_endpoint(),
            region: "cn-hangzhou".to_owned(),
            load_balancer_id: String::new(),
            upstream: "web".to_owned(),
            timeout_ms: 5_000,
        };
        Self {
            host: SimHost::new(
                runtime.handle().clone(),
                aliyun_sim::DEMO_KEY_ID,
                aliyun_sim::DEMO_SECRET,
            ),
            sim: Some(sim),
            config,
            runtime,
        }
    }

    fn sim(&self) -> &Simulator {
        self.sim.as_ref().unwrap()
    }

    fn call(&self, endpoint: &str, version: &str, action: &str, params: &[(&str, &str)]) -> Value {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Client {
            host: &self.host,
            timeout_ms: 5_000,
        }
        .call(Api { endpoint, version }, action, &params)
        .unwrap_or_else(|e| panic!("{action}: {e:?}"))
    }

    fn ecs(&self, action: &str, params: &[(&str, &str)]) -> Value {
        self.call(&self.config.ecs_endpoint, "2014-05-26", action, params)
    }

    fn slb(&self, action: &str, params: &[(&str, &str)]) -> Value {
        self.call(&self.config.slb_endpoint, "2014-05-15", action, params)
    }

    /// `n` running instances of cn-hangzhou-h: ids and private addresses.
    fn instances(&self, n: usize) -> Vec<(String, String)> {
        let ran = self.ecs(
            "RunInstances",
            &[
                HZ,
                ("ZoneId", "cn-hangzhou-h"),
                ("ImageId", "ubuntu_22_04_x64_20G_alibase_20240130.vhd"),
                ("InstanceType", "ecs.g6.large"),
                ("SecurityGroupId", "sg-bp1dcpsim0default01"),
                ("VSwitchId", "vsw-bp1dcpsim0zoneh0001"),
                ("Amount", &n.to_string()),
            ],
        );
        let ids = strings(&ran, "InstanceIdSets", "InstanceIdSet");
        assert_eq!(ids.len(), n, "{ran}");
        let filter = serde_json::to_string(&ids).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.ecs(
                "DescribeInstances",
                &[HZ, ("InstanceIds", &filter), ("PageSize", "100")],
            );
            let found = list(&answer, "Instances", "Instance");
            let running: HashMap<String, String> = found
                .iter()
                .filter(|i| text(i, "Status") == "Running")
                .map(|i| {
                    let vpc = &i["VpcAttributes"];
                    let ip = strings(vpc, "PrivateIpAddress", "IpAddress")[0].clone();
                    (text(i, "InstanceId"), ip)
                })
                .collect();
            if running.len() == n {
                return ids
                    .iter()
                    .map(|id| (id.clone(), running[id].clone()))
                    .collect();
            }
            assert!(Instant::now() < deadline, "never all running: {answer}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A load balancer in cn-hangzhou-h's VPC with a (stopped) HTTP
    /// listener on `listener_port` sending to `backend_port`.
    fn load_balancer(&mut self, listener_port: u16, backend_port: u16) {
        let lb = self.slb(
            "CreateLoadBalancer",
            &[
                HZ,
                ("LoadBalancerName", "web"),
                ("VSwitchId", "vsw-bp1dcpsim0zoneh0001"),
            ],
        );
        self.config.load_balancer_id = text(&lb, "LoadBalancerId");
        self.slb(
            "CreateLoadBalancerHTTPListener",
            &[
                HZ,
                ("LoadBalancerId", &self.config.load_balancer_id),
                ("ListenerPort", &listener_port.to_string()),
                ("BackendServerPort", &backend_port.to_string()),
                ("Bandwidth", "-1"),
                ("StickySession", "off"),
                ("HealthCheck", "off"),
            ],
        );
    }

    fn plugin(&self) -> Slb<'_, SimHost> {
        Slb {
            client: Client {
                host: &self.host,
                timeout_ms: self.config.timeout_ms,
            },
            config: &self.config,
        }
    }

    /// apply-upstreams with the upstream `web` of these backends.
    fn apply(&self, backends: &[(&str, u16, u32)]) -> Result<Applied, Failure> {
        self.plugin().apply(&[upstream("web", backends)])
    }

    /// The load balancer's backends as the simulator has them, sorted.
    fn attached(&self) -> Vec<(String, u32)> {
        let mut backends = self
            .sim()
            .load_balancers()
            .into_iter()
            .find(|b| b.id == self.config.load_balancer_id)
            .unwrap()
            .backends;
        backends.sort();
        backends
    }

    /// What was sent since the last look, and forgets it.
    fn sent(&self) -> Vec<Sent> {
        self.host
            .take_sent()
            .into_iter()
            .map(|s| Sent {
                servers: s
                    .param("BackendServers")
                    .and_then(|v| serde_json::from_str::<Vec<Value>>(v).ok())
                    .map_or(0, |v| v.len()),
                action: s.action,
                code: s.code,
            })
            .collect()
    }
}

fn upstream(name: &str, backends: &[(&str, u16, u32)]) -> Upstream {
    Upstream {
        name: name.to_owned(),
        backends: backends
            .iter()
            .map(|(address, port, weight)| Backend {
                address: (*address).to_owned(),
                port: *port,
                weight: *weight,
            })
            .collect(),
        revision: 1,
    }
}

/// `(id, weight)` sorted, as `World::attached` answers.
fn expected(servers: &[&(String, String)], weight: u32) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = servers.iter().map(|(id, _)| (id.clone(), weight)).collect();
    out.sort();
    out
}

fn backends_of(servers: &[&(String, String)], weight: u32) -> Vec<(String, u16, u32)> {
    servers
        .iter()
        .map(|(_, ip)| (ip.clone(), 8080, weight))
        .collect()
}

fn borrowed(backends: &[(String, u16, u32)]) -> Vec<(&str, u16, u32)> {
    backends
        .iter()
        .map(|(a, p, w)| (a.as_str(), *p, *w))
        .collect()
}

#[test]
fn backends_are_registered_reweighed_and_unregistered() {
    let mut world = World::start(1, Duration::from_millis(150));
    let servers = world.instances(3);
    world.load_balancer(80, 8080);
    let (a, b, c) = (&servers[0], &servers[1], &servers[2]);

    let first = world
        .apply(&[(a.1.as_str(), 8080, 100), (b.1.as_str(), 8080, 50)])
        .unwrap();
    assert!(first.changed, "{}", first.log);
    let mut want = vec![(a.0.clone(), 100), (b.0.clone(), 50)];
    want.sort();
    assert_eq!(world.attached(), want);
    assert!(first.log.contains("AddBackendServers: 2"), "{}", first.log);
    assert!(
        first.log.contains("listener 80/http → 8080"),
        "{}",
        first.log
    );

    // The same again: nothing to change, no change sent.
    world.sent();
    let again = world
        .apply(&[(a.1.as_str(), 8080, 100), (b.1.as_str(), 8080, 50)])
        .unwrap();
    assert!(!again.changed, "{}", again.log);
    assert!(again.log.contains("nothing to change"), "{}", again.log);
    assert!(
        world
            .sent()
            .iter()
            .all(|s| s.action.starts_with("Describe")),
        "only reads"
    );

    // a goes, b is re-weighed, c comes.
    let moved = world
        .apply(&[(b.1.as_str(), 8080, 10), (c.1.as_str(), 8080, 0)])
        .unwrap();
    assert!(moved.changed);
    want = vec![(b.0.clone(), 10), (c.0.clone(), 0)];
    want.sort();
    assert_eq!(world.attached(), want);
    assert!(
        moved
            .log
            .contains("done: 1 added, 1 re-weighted, 1 removed"),
        "{}",
        moved.log
    );

    // Another upstream only: left as it is.
    let other = world
        .plugin()
        .apply(&[upstream("api", &[(a.1.as_str(), 8080, 1)])])
        .unwrap();
    assert!(!other.changed);
    assert!(
        other
            .log
            .contains("upstream web is not among those given (api)"),
        "{}",
        other.log
    );
    assert_eq!(world.attached(), want);

    // No members: every backend server goes.
    let empty = world.apply(&[]).unwrap();
    assert!(empty.changed);
    assert!(world.attached().is_empty());
}

#[test]
fn more_than_twenty_backends_go_in_batches_of_at_most_twenty() {
    let mut world = World::start(2, Duration::from_millis(150));
    let servers = world.instances(45);
    world.load_balancer(80, 8080);
    let all: Vec<&(String, String)> = servers.iter().collect();

    world.sent();
    let added = world.apply(&borrowed(&backends_of(&all, 100))).unwrap();
    assert!(added.changed);
    assert_eq!(world.attached(), expected(&all, 100));
    let sent = world.sent();
    let adds: Vec<usize> = sent
        .iter()
        .filter(|s| s.action == "AddBackendServers")
        .map(|s| s.servers)
        .collect();
    assert_eq!(adds, [20, 20, 5], "{}", added.log);
    let lookups = sent
        .iter()
        .filter(|s| s.action == "DescribeInstances")
        .count();
    assert_eq!(lookups, 1, "45 addresses are one look-up");

    // 25 leave and the other 20 change weight: batches again.
    let kept = &all[25..];
    let shrunk = world.apply(&borrowed(&backends_of(kept, 7))).unwrap();
    assert!(shrunk.changed);
    assert_eq!(world.attached(), expected(kept, 7));
    let sent = world.sent();
    let sizes = |action: &str| -> Vec<usize> {
        sent.iter()
            .filter(|s| s.action == action)
            .map(|s| s.servers)
            .collect()
    };
    assert_eq!(sizes("SetBackendServers"), [20]);
    assert_eq!(sizes("RemoveBackendServers"), [20, 5]);
    assert!(sent.iter().all(|s| s.servers <= 20 && s.code.is_none()));
}

#[test]
fn faults_are_retried_without_a_duplicate_or_a_lost_backend() {
    let mut world = World::start(3, Duration::from_millis(150));
    let servers = world.instances(40);
    world.load_balancer(80, 8080);
    let all: Vec<&(String, String)> = servers.iter().collect();
    world.sim().set_faults(Faults {
        throttle_rate: 0.15,
        server_error_rate: 0.15,
        drop_reply_after_effect: vec![
            "AddBackendServers".to_owned(),
            "RemoveBackendServers".to_owned(),
            "SetBackendServers".to_owned(),
        ],
        drop_rate: 0.5,
        ..Faults::default()
    });
    world.sent();

    let first = &all[..30];
    let applied = world.apply(&borrowed(&backends_of(first, 100))).unwrap();
    assert!(applied.changed);
    assert_eq!(world.attached(), expected(first, 100), "{}", applied.log);

    let second = &all[15..];
    let applied = world.apply(&borrowed(&backends_of(second, 100))).unwrap();
    assert_eq!(world.attached(), expected(second, 100), "{}", applied.log);

    let applied = world.apply(&borrowed(&backends_of(second, 30))).unwrap();
    assert_eq!(world.attached(), expected(second, 30), "{}", applied.log);

    // Once more with no faults: already there.
    world.sim().set_faults(Faults::default());
    assert!(
        !world
            .apply(&borrowed(&backends_of(second, 30)))
            .unwrap()
            .changed
    );

    let sent = world.sent();
    let count = |action: &str, code: &str| {
        sent.iter()
            .filter(|s| s.action == action && s.code.as_deref() == Some(code))
            .count()
    };
    for action in ["AddBackendServers", "RemoveBackendServers"] {
        assert!(count(action, "lost") > 0, "a reply of {action} was lost");
    }
    assert!(
        sent.iter()
            .any(|s| s.code.as_deref() == Some("Throttling.User"))
    );
    assert!(sent.iter().any(|s| matches!(
        s.code.as_deref(),
        Some("ServiceUnavailable" | "InternalError")
    )));
    // Never sent a change the load balancer's state already had: no
    // "already added", no "not found".
    let refused: Vec<&Sent> = sent
        .iter()
        .filter(|s| {
            matches!(
                s.code.as_deref(),
                Some("InvalidParameter" | "InvalidServerId.NotFound")
            )
        })
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
}

#[test]
fn a_listener_being_configured_is_waited_for() {
    // Listeners take 600 ms to start: the change comes while it does.
    let mut world = World::start(4, Duration::from_millis(600));
    let servers = world.instances(2);
    world.load_balancer(8081, 8080);
    let lb = world.config.load_balancer_id.clone();
    world.slb(
        "StartLoadBalancerListener",
        &[HZ, ("LoadBalancerId", &lb), ("ListenerPort", "8081")],
    );
    let all: Vec<&(String, String)> = servers.iter().collect();
    let applied = world.apply(&borrowed(&backends_of(&all, 100))).unwrap();
    assert_eq!(world.attached(), expected(&all, 100));
    assert!(
        applied.log.contains("ServiceIsConfiguring"),
        "the change met the starting listener: {}",
        applied.log
    );
}

#[test]
fn an_address_no_instance_has_is_refused_by_name() {
    let mut world = World::start(5, Duration::from_millis(150));
    let servers = world.instances(1);
    world.load_balancer(80, 8080);
    let err = world
        .apply(&[
            (servers[0].1.as_str(), 8080, 100),
            ("127.21.9.250", 8080, 100),
        ])
        .unwrap_err();
    assert_eq!((err.kind, err.retryable), (Kind::InvalidInput, false));
    assert!(
        err.message
            .contains("no ECS instance in cn-hangzhou (VPC vpc-bp1dcpsim0default01) has the private address 127.21.9.250"),
        "{}",
        err.message
    );
    assert!(world.attached().is_empty(), "nothing changed");
    let err = world.apply(&[("web-1", 8080, 100)]).unwrap_err();
    assert!(err.message.contains("\"web-1\""), "{}", err.message);
}

#[test]
fn a_port_the_listeners_do_not_use_is_refused() {
    let mut world = World::start(6, Duration::from_millis(150));
    let servers = world.instances(1);
    world.load_balancer(80, 8080);
    let err = world
        .apply(&[(servers[0].1.as_str(), 9090, 100)])
        .unwrap_err();
    assert_eq!(err.kind, Kind::InvalidInput);
    assert!(
        err.message.contains(&format!(
            "backend {}:9090: SLB will send to port 8080 (listener 80/http → 8080), not 9090",
            servers[0].1
        )),
        "{}",
        err.message
    );
    assert!(world.attached().is_empty(), "nothing changed");
}

#[test]
fn health_is_read_per_backend_and_listener() {
    let mut world = World::start(7, Duration::from_millis(150));
    let servers = world.instances(2);
    world.load_balancer(80, 8080);
    let all: Vec<&(String, String)> = servers.iter().collect();
    world.apply(&borrowed(&backends_of(&all, 100))).unwrap();
    let health = world.plugin().health().unwrap();
    assert_eq!(health.len(), 2);
    for (backend, (id, ip)) in health.iter().zip(&servers) {
        assert_eq!((&backend.server_id, &backend.address), (id, ip));
        assert_eq!(backend.listeners.len(), 1);
        assert_eq!(backend.listeners[0].listener_port, 80);
        assert_eq!(backend.listeners[0].backend_port, Some(8080));
        // The listener is stopped: no verdict.
        assert_eq!(backend.overall(), Health::Unavailable);
    }
}

#[test]
fn a_backend_failing_its_health_checks_stays_attached_and_is_named_at_the_deadline() {
    let mut world = World::start(8, Duration::from_millis(150));
    let servers = world.instances(1);
    // Checked every second on a port nothing answers on: one just free,
    // since a fixed one may be held on every address by something else here.
    let port = std::net::TcpListener::bind((servers[0].1.as_str(), 0))
        .and_then(|free| free.local_addr())
        .unwrap()
        .port();
    world.load_balancer(80, port);
    let lb = world.config.load_balancer_id.clone();
    world.slb(
        "SetLoadBalancerHTTPListenerAttribute",
        &[
            HZ,
            ("LoadBalancerId", &lb),
            ("ListenerPort", "80"),
            ("Bandwidth", "-1"),
            ("StickySession", "off"),
            ("HealthCheck", "on"),
            ("HealthCheckURI", "/healthz"),
            ("HealthCheckInterval", "1"),
            ("HealthyThreshold", "2"),
            ("UnhealthyThreshold", "2"),
        ],
    );
    world.slb(
        "StartLoadBalancerListener",
        &[HZ, ("LoadBalancerId", &lb), ("ListenerPort", "80")],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listener = world.slb(
            "DescribeLoadBalancerHTTPListenerAttribute",
            &[HZ, ("LoadBalancerId", &lb), ("ListenerPort", "80")],
        );
        if text(&listener, "Status") == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never running: {listener}");
        std::thread::sleep(Duration::from_millis(20));
    }
    world.host.deadline_in(Duration::from_secs(7));
    let all: Vec<&(String, String)> = servers.iter().collect();
    let err = world
        .apply(&[(servers[0].1.as_str(), port, 100)])
        .unwrap_err();
    assert_eq!(err.kind, Kind::Unavailable, "{err:?}");
    assert!(err.retryable, "{err:?}");
    let id = &servers[0].0;
    assert!(
        err.message.contains(&format!("{id} (abnormal on 80)")),
        "names the backend and SLB's verdict: {}",
        err.message
    );
    assert_eq!(world.attached(), expected(&all, 100), "it stays attached");
}
