//! The `load-balancers` functions against the real Aliyun simulator
//! (`aliyun-sim`, in-process, each test on its own 127.21.11.x addresses):
//! requests signed by the shared client with the test's own HMAC
//! (`aliyun_rpc::sim_host`), answered by the simulator's SLB and ECS —
//! lost replies included. Set-up the plugin has no function for (instances,
//! backend servers) goes through the simulator's own API client.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use aliyun_rpc::{
    client::{Failure, Fault, Host, Kind},
    sim_host::{Sent, SimHost},
};
use aliyun_sim::{Delays, Faults, Options, Simulator, client::Client as SimClient};
use serde_json::Value;

use crate::{
    balancers::{
        AddressType, Balancers, Health, HealthCheck, ListenerSpec, ListenerStatus, NewLoadBalancer,
        Protocol, Status,
    },
    rpc::{Config, Rpc},
};

const REGION: &str = "cn-hangzhou";
const VSWITCH: &str = "vsw-bp1dcpsim0zoneh0001";

/// A host that heals the simulator after the first lost reply: the reply
/// of the attempt that took effect is lost, the client's retry gets through.
struct Healing<'a> {
    host: &'a SimHost,
    sim: &'a Simulator,
}

impl Host for Healing<'_> {
    fn key_id(&self) -> Result<String, Failure> {
        self.host.key_id()
    }
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure> {
        self.host.sign(data)
    }
    fn post(&self, url: &str, body: String, timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault> {
        let reply = self.host.post(url, body, timeout_ms);
        if reply.is_err() {
            self.sim.set_faults(Faults::default());
        }
        reply
    }
    fn now_unix(&self) -> u64 {
        self.host.now_unix()
    }
    fn now_ms(&self) -> u64 {
        self.host.now_ms()
    }
    fn deadline_ms(&self) -> u64 {
        self.host.deadline_ms()
    }
    fn nonce(&self) -> String {
        self.host.nonce()
    }
    fn random_below(&self, bound: u64) -> u64 {
        self.host.random_below(bound)
    }
    fn sleep_ms(&self, ms: u64) {
        self.host.sleep_ms(ms);
    }
}

/// A simulator, a host and the account's settings for one test.
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

impl World {
    /// A simulator on 127.21.11.(4n+1…4n+3), with short delays.
    fn start(n: u8) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let at = |i: u8| SocketAddr::from((Ipv4Addr::new(127, 21, 11, 4 * n + i), 0));
        let short = Duration::from_millis(150);
        let sim = runtime
            .block_on(Simulator::start(Options {
                ecs_addr: at(1),
                vpc_addr: at(2),
                slb_addr: at(3),
                delays: Delays {
                    pending: short,
                    starting: short,
                    stopping: short,
                    deleting: short,
                },
                seed: 0xa11b + u64::from(n),
                ..Options::default()
            }))
            .unwrap();
        let config = Config {
            ecs_endpoint: sim.ecs_endpoint(),
            vpc_endpoint: sim.vpc_endpoint(),
            slb_endpoint: sim.slb_endpoint(),
            timeout_ms: 5_000,
            ..Config::default()
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

    fn plugin(&self) -> Balancers<'_, SimHost> {
        Balancers {
            rpc: Rpc {
                host: &self.host,
                config: &self.config,
            },
        }
    }

    /// The plugin over a host whose first lost reply heals the simulator.
    fn healing<'a>(&'a self, healing: &'a Healing<'a>) -> Balancers<'a, Healing<'a>> {
        Balancers {
            rpc: Rpc {
                host: healing,
                config: &self.config,
            },
        }
    }

    /// SLB's own answer to `action`, through the simulator's client.
    fn slb(&self, action: &str, params: &[(&str, &str)]) -> Value {
        let mut all = vec![("RegionId", REGION)];
        all.extend_from_slice(params);
        let client = SimClient::slb(self.sim());
        self.runtime.block_on(client.call(action, &all)).ok()
    }

    /// A running instance of cn-hangzhou-h: its id and private address.
    fn instance(&self) -> (String, Ipv4Addr) {
        let ecs = SimClient::ecs(self.sim());
        let ran = self.runtime.block_on(ecs.run(&[])).ok();
        let id = aliyun_sim::client::ids(&ran).remove(0);
        let instance = self.runtime.block_on(ecs.wait_status(&id, "Running"));
        let ip = instance["VpcAttributes"]["PrivateIpAddress"]["IpAddress"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (id, ip)
    }

    /// A load balancer in cn-hangzhou-h's vSwitch, made by the plugin.
    fn load_balancer(&self, name: &str) -> String {
        self.plugin()
            .create(&intranet(name), &format!("key-{name}"))
            .unwrap()
            .id
    }

    fn sent(&self) -> Vec<Sent> {
        self.host.take_sent()
    }

    /// Polls `describe` until `done` holds of it (the simulator's state
    /// machines run on their own clock): never a fixed sleep.
    fn wait_for(&self, lb: &str, what: &str, done: impl Fn(&crate::balancers::Detail) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let detail = self.plugin().describe(REGION, lb).unwrap();
            if done(&detail) {
                return;
            }
            assert!(Instant::now() < deadline, "never {what}: {detail:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn intranet(name: &str) -> NewLoadBalancer {
    NewLoadBalancer {
        region: REGION.to_owned(),
        name: name.to_owned(),
        address_type: AddressType::Intranet,
        subnet: Some(VSWITCH.to_owned()),
        spec: Some("slb.s1.small".to_owned()),
    }
}

pub(crate) fn http(port: u16, backend_port: u16) -> ListenerSpec {
    ListenerSpec {
        port,
        protocol: Protocol::Http,
        backend_port,
        bandwidth_mbps: -1,
        scheduler: "wrr".to_owned(),
        health_check: HealthCheck {
            enabled: true,
            uri: "/health".to_owned(),
            interval_seconds: 2,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
        },
    }
}

fn tcp(port: u16, backend_port: u16) -> ListenerSpec {
    ListenerSpec {
        protocol: Protocol::Tcp,
        scheduler: "wlc".to_owned(),
        bandwidth_mbps: 100,
        health_check: HealthCheck {
            enabled: true,
            uri: String::new(),
            interval_seconds: 1,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        },
        ..http(port, backend_port)
    }
}

#[test]
fn load_balancers_are_created_listed_and_described() {
    let world = World::start(1);
    let plugin = world.plugin();
    let made = plugin.create(&intranet("web"), "create-web").unwrap();
    assert!(made.id.starts_with("lb-"), "{made:?}");
    assert_eq!(
        (made.name.as_str(), made.region.as_str(), made.spec.as_str()),
        ("web", REGION, "slb.s1.small")
    );
    assert_eq!(
        (made.address_type, made.status, made.vpc_id.as_str()),
        (
            AddressType::Intranet,
            Status::Active,
            "vpc-bp1dcpsim0default01"
        )
    );
    assert!(made.address.starts_with("127.21."), "{made:?}");
    assert!(made.created_at.ends_with('Z'), "{made:?}");
    let public = plugin
        .create(
            &NewLoadBalancer {
                name: "edge".to_owned(),
                address_type: AddressType::Internet,
                subnet: None,
                spec: None,
                ..intranet("edge")
            },
            "create-edge",
        )
        .unwrap();
    assert_eq!(
        (public.address_type, public.vpc_id.as_str()),
        (AddressType::Internet, "")
    );

    let mut listed = plugin.list(REGION).unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(listed, [public.clone(), made.clone()]);
    assert!(plugin.list("cn-beijing").unwrap().is_empty());

    let detail = plugin.describe(REGION, &made.id).unwrap();
    assert_eq!(detail.load_balancer, made);
    assert!(detail.listeners.is_empty() && detail.backends.is_empty());

    plugin
        .set_status(REGION, &made.id, Status::Inactive)
        .unwrap();
    assert_eq!(
        plugin
            .describe(REGION, &made.id)
            .unwrap()
            .load_balancer
            .status,
        Status::Inactive
    );
    plugin.set_status(REGION, &made.id, Status::Active).unwrap();
    let locked = plugin
        .set_status(REGION, &made.id, Status::Locked)
        .unwrap_err();
    assert_eq!(locked.kind, Kind::InvalidInput);
    assert!(locked.message.starts_with("status:"), "{}", locked.message);

    let missing = plugin.describe(REGION, "lb-bp1nothere000000").unwrap_err();
    assert_eq!((missing.kind, missing.retryable), (Kind::NotFound, false));
    assert!(
        missing
            .message
            .contains("lb-bp1nothere000000 does not exist"),
        "{}",
        missing.message
    );

    // Deleting twice: the second finds it gone, which is what was asked.
    plugin.delete(REGION, &made.id).unwrap();
    plugin.delete(REGION, &made.id).unwrap();
    assert_eq!(world.sim().load_balancers().len(), 1);
}

#[test]
fn a_lost_create_reply_and_a_repeated_key_make_one_load_balancer() {
    let world = World::start(2);
    world.sim().set_faults(Faults {
        drop_reply_after_effect: vec!["CreateLoadBalancer".to_owned()],
        drop_rate: 1.0,
        ..Faults::default()
    });
    let healing = Healing {
        host: &world.host,
        sim: world.sim(),
    };
    let first = world
        .healing(&healing)
        .create(&intranet("web"), "key-1")
        .unwrap();
    let creates: Vec<Option<String>> = world
        .sent()
        .into_iter()
        .filter(|s| s.action == "CreateLoadBalancer")
        .map(|s| s.code)
        .collect();
    assert_eq!(
        creates,
        [Some("lost".to_owned()), None],
        "lost, then answered"
    );
    let all = world.sim().load_balancers();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].id, first.id);

    // The task retried later, with the same key: the same load balancer.
    let again = world.plugin().create(&intranet("web"), "key-1").unwrap();
    assert_eq!(again, first);
    assert_eq!(world.sim().load_balancers().len(), 1);

    // The same key for another spec is a caller's mistake.
    let other = world
        .plugin()
        .create(&intranet("api"), "key-1")
        .unwrap_err();
    assert_eq!(other.kind, Kind::InvalidInput);
    assert_eq!(other.code.as_deref(), Some("IdempotentParameterMismatch"));
    // Another key is another load balancer.
    world.plugin().create(&intranet("web"), "key-2").unwrap();
    assert_eq!(world.sim().load_balancers().len(), 2);
}

#[test]
fn listeners_are_created_idempotently_started_stopped_and_deleted() {
    let world = World::start(3);
    let lb = world.load_balancer("web");
    let plugin = world.plugin();
    plugin
        .create_listener(REGION, &lb, &http(80, 8080))
        .unwrap();
    // The same again: already there.
    plugin
        .create_listener(REGION, &lb, &http(80, 8080))
        .unwrap();

    // Another spec on the port: a conflict naming what differs.
    let mut other = http(80, 9090);
    other.scheduler = "rr".to_owned();
    let conflict = plugin.create_listener(REGION, &lb, &other).unwrap_err();
    assert_eq!((conflict.kind, conflict.retryable), (Kind::Conflict, false));
    assert!(
        conflict
            .message
            .contains("backend-port is 8080, not 9090, scheduler is wrr, not rr"),
        "{}",
        conflict.message
    );
    let protocol = plugin
        .create_listener(REGION, &lb, &tcp(80, 8080))
        .unwrap_err();
    assert!(
        protocol.message.contains("protocol is http, not tcp"),
        "{}",
        protocol.message
    );

    // A lost reply: the retry meets the listener its first attempt made.
    world.sim().set_faults(Faults {
        drop_reply_after_effect: vec!["CreateLoadBalancerTCPListener".to_owned()],
        drop_rate: 1.0,
        ..Faults::default()
    });
    let healing = Healing {
        host: &world.host,
        sim: world.sim(),
    };
    world.sent();
    world
        .healing(&healing)
        .create_listener(REGION, &lb, &tcp(443, 8443))
        .unwrap();
    let codes: Vec<Option<String>> = world
        .sent()
        .into_iter()
        .filter(|s| s.action == "CreateLoadBalancerTCPListener")
        .map(|s| s.code)
        .collect();
    assert_eq!(
        codes,
        [
            Some("lost".to_owned()),
            Some("ListenerAlreadyExists".to_owned())
        ]
    );

    let detail = plugin.describe(REGION, &lb).unwrap();
    let specs: Vec<&ListenerSpec> = detail.listeners.iter().map(|l| &l.spec).collect();
    assert_eq!(specs, [&http(80, 8080), &tcp(443, 8443)]);
    assert!(
        detail
            .listeners
            .iter()
            .all(|l| l.status == ListenerStatus::Stopped)
    );

    // Started twice, stopped twice: each time the wanted state, no error.
    plugin.set_listener_running(REGION, &lb, 80, true).unwrap();
    plugin.set_listener_running(REGION, &lb, 80, true).unwrap();
    world.wait_for(&lb, "running", |d| {
        d.listeners[0].status == ListenerStatus::Running
    });
    plugin.set_listener_running(REGION, &lb, 80, false).unwrap();
    plugin.set_listener_running(REGION, &lb, 80, false).unwrap();
    world.wait_for(&lb, "stopped", |d| {
        d.listeners[0].status == ListenerStatus::Stopped
    });
    let view = &world.sim().load_balancers()[0];
    assert_eq!(view.listeners[0].status, "stopped");
    let missing = plugin
        .set_listener_running(REGION, &lb, 81, true)
        .unwrap_err();
    assert_eq!(missing.kind, Kind::NotFound);

    plugin.delete_listener(REGION, &lb, 80).unwrap();
    plugin.delete_listener(REGION, &lb, 80).unwrap();
    let ports: Vec<u16> = plugin
        .describe(REGION, &lb)
        .unwrap()
        .listeners
        .iter()
        .map(|l| l.spec.port)
        .collect();
    assert_eq!(ports, [443]);

    // Deleting the load balancer takes its listeners; deleting again is fine.
    plugin.delete(REGION, &lb).unwrap();
    plugin.delete_listener(REGION, &lb, 443).unwrap();
    plugin.delete(REGION, &lb).unwrap();
    assert!(world.sim().load_balancers().is_empty());
}

#[test]
fn white_lists_are_set_changed_and_disabled_declaratively() {
    let world = World::start(4);
    let lb = world.load_balancer("web");
    let plugin = world.plugin();
    plugin
        .create_listener(REGION, &lb, &http(80, 8080))
        .unwrap();
    let acl = || {
        world.slb(
            "DescribeListenerAccessControlAttribute",
            &[("LoadBalancerId", &lb), ("ListenerPort", "80")],
        )
    };
    let entries =
        |items: &[&str]| -> Vec<String> { items.iter().map(|i| (*i).to_owned()).collect() };

    plugin
        .set_white_list(
            REGION,
            &lb,
            80,
            true,
            &entries(&["10.0.0.1", "10.1.0.0/16"]),
        )
        .unwrap();
    let answer = acl();
    assert_eq!(answer["AccessControlStatus"], "open_white_list");
    assert_eq!(answer["SourceItems"], "10.0.0.1,10.1.0.0/16");

    // The same again changes nothing: reads only.
    world.sent();
    plugin
        .set_white_list(
            REGION,
            &lb,
            80,
            true,
            &entries(&["10.1.0.0/16", "10.0.0.1"]),
        )
        .unwrap();
    assert!(
        world
            .sent()
            .iter()
            .all(|s| s.action.starts_with("Describe")),
        "only reads"
    );

    // One stays, one goes, one comes: an add and a remove of exactly those.
    plugin
        .set_white_list(
            REGION,
            &lb,
            80,
            true,
            &entries(&["10.1.0.0/16", "192.168.7.0/24"]),
        )
        .unwrap();
    let changes: Vec<(String, Option<String>)> = world
        .sent()
        .into_iter()
        .filter(|s| !s.action.starts_with("Describe"))
        .map(|s| (s.action.clone(), s.param("SourceItems").map(str::to_owned)))
        .collect();
    assert_eq!(
        changes,
        [
            (
                "AddListenerWhiteListItem".to_owned(),
                Some("192.168.7.0/24".to_owned())
            ),
            (
                "RemoveListenerWhiteListItem".to_owned(),
                Some("10.0.0.1".to_owned())
            ),
        ]
    );
    let answer = acl();
    assert_eq!(answer["AccessControlStatus"], "open_white_list");
    assert_eq!(answer["SourceItems"], "10.1.0.0/16,192.168.7.0/24");
    let detail = plugin.describe(REGION, &lb).unwrap();
    assert!(detail.listeners[0].access_control);
    assert_eq!(
        detail.listeners[0].white_list,
        ["10.1.0.0/16", "192.168.7.0/24"]
    );

    // Disabled and emptied.
    plugin.set_white_list(REGION, &lb, 80, false, &[]).unwrap();
    let answer = acl();
    assert_eq!(answer["AccessControlStatus"], "close");
    assert_eq!(answer["SourceItems"], "");
    let detail = plugin.describe(REGION, &lb).unwrap();
    assert!(!detail.listeners[0].access_control && detail.listeners[0].white_list.is_empty());

    let missing = plugin
        .set_white_list(REGION, &lb, 81, true, &[])
        .unwrap_err();
    assert_eq!(missing.kind, Kind::NotFound);
}

#[test]
fn backends_show_their_address_and_health_per_checking_listener() {
    let world = World::start(5);
    let (up, up_ip) = world.instance();
    let (down, _) = world.instance();
    // The healthy backend listens on its private (loopback) address; the
    // port is the system's pick, so no other test's backend can have it.
    let serving = std::net::TcpListener::bind((up_ip, 0)).unwrap();
    let port = serving.local_addr().unwrap().port();
    let lb = world.load_balancer("web");
    let plugin = world.plugin();
    plugin.create_listener(REGION, &lb, &tcp(80, port)).unwrap();
    let mut unchecked = http(8081, port);
    unchecked.health_check.enabled = false;
    plugin.create_listener(REGION, &lb, &unchecked).unwrap();
    let servers =
        format!(r#"[{{"ServerId":"{up}","Weight":"100"}},{{"ServerId":"{down}","Weight":"50"}}]"#);
    world.slb(
        "AddBackendServers",
        &[("LoadBalancerId", &lb), ("BackendServers", &servers)],
    );

    let detail = plugin.describe(REGION, &lb).unwrap();
    let mut ids = [up.clone(), down.clone()];
    ids.sort();
    let listed: Vec<&str> = detail
        .backends
        .iter()
        .map(|b| b.instance_id.as_str())
        .collect();
    assert_eq!(listed, ids.each_ref().map(String::as_str));
    let backend = |d: &crate::balancers::Detail, id: &str| {
        d.backends
            .iter()
            .find(|b| b.instance_id == id)
            .unwrap()
            .clone()
    };
    let healthy = backend(&detail, &up);
    assert_eq!((healthy.address, healthy.weight), (up_ip.to_string(), 100));
    // Only the TCP listener checks; it is stopped, so no verdict yet.
    assert_eq!(healthy.health, [(80, Health::Unavailable)]);

    plugin.set_listener_running(REGION, &lb, 80, true).unwrap();
    world.wait_for(&lb, "judged", |d| {
        backend(d, &up).health == [(80, Health::Normal)]
            && backend(d, &down).health == [(80, Health::Abnormal)]
    });
    drop(serving);

    // A backend whose instance is gone keeps its place, without an address.
    let ecs = SimClient::ecs(world.sim());
    world.runtime.block_on(async {
        ecs.call(
            "DeleteInstance",
            &[("InstanceId", &down), ("Force", "true")],
        )
        .await
        .ok();
        ecs.wait_gone(&down).await;
    });
    let detail = plugin.describe(REGION, &lb).unwrap();
    assert_eq!(backend(&detail, &down).address, "");
    assert_eq!(backend(&detail, &up).address, up_ip.to_string());
}

#[test]
fn inputs_are_checked_before_any_call_and_errors_name_the_field() {
    let world = World::start(6);
    let plugin = world.plugin();
    let field = |result: Result<(), Failure>, field: &str| {
        let err = result.unwrap_err();
        assert_eq!(err.kind, Kind::InvalidInput, "{err:?}");
        assert!(err.message.starts_with(field), "{field}: {}", err.message);
    };
    field(plugin.list("CN HZ").map(drop), "region");
    field(plugin.describe(REGION, "lb 1").map(drop), "id");
    field(plugin.delete("", "lb-1"), "region");
    field(plugin.set_listener_running(REGION, "lb-1", 0, true), "port");
    field(plugin.delete_listener(REGION, "lb-1", 0), "port");
    let mut bad = http(80, 8080);
    bad.health_check.healthy_threshold = 11;
    field(
        plugin.create_listener(REGION, "lb-1", &bad),
        "spec.health-check.healthy-threshold",
    );
    let mut bad = tcp(80, 8080);
    bad.bandwidth_mbps = 0;
    field(
        plugin.create_listener(REGION, "lb-1", &bad),
        "spec.bandwidth-mbps",
    );
    let mut bad = tcp(80, 8080);
    bad.scheduler = "sch".to_owned();
    field(
        plugin.create_listener(REGION, "lb-1", &bad),
        "spec.scheduler",
    );
    let mut bad = http(80, 8080);
    bad.health_check.interval_seconds = 0;
    field(
        plugin.create_listener(REGION, "lb-1", &bad),
        "spec.health-check.interval-seconds",
    );
    field(
        plugin.create(&intranet(&"n".repeat(81)), "k").map(drop),
        "spec.name",
    );
    field(
        plugin.set_white_list(REGION, "lb-1", 80, true, &["10.0.0.300".to_owned()]),
        "entries[0]",
    );
    let many: Vec<String> = (0..301)
        .map(|i| format!("10.9.{}.{}", i / 250, i % 250 + 1))
        .collect();
    field(
        plugin.set_white_list(REGION, "lb-1", 80, true, &many),
        "entries",
    );
    assert!(world.sent().is_empty(), "nothing was sent");
}
