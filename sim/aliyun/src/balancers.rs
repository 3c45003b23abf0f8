//! The SLB part of the world: load balancers, their listeners, backend
//! servers, white lists and what the health checks last found.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
};

use rand::Rng;
use serde::Serialize;

use crate::{
    catalog,
    cloud::{Cloud, lock},
    world::{World, new_id},
};

/// A load balancer as tests and `GET /_sim/load-balancers` see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadBalancerView {
    /// `lb-…`.
    pub id: String,
    /// `LoadBalancerName`.
    pub name: String,
    /// Where its listeners listen (127.21.112.0/20).
    pub address: Ipv4Addr,
    /// `active` or `inactive`.
    pub status: String,
    /// Its listeners, in creation order.
    pub listeners: Vec<ListenerView>,
    /// Its backend servers: instance id and weight.
    pub backends: Vec<(String, u32)>,
}

/// A listener as tests see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListenerView {
    /// `ListenerPort`.
    pub port: u16,
    /// `http` or `tcp`.
    pub protocol: String,
    /// `stopped`, `starting`, `running`, `configuring` or `stopping`.
    pub status: String,
    /// `open_white_list` or `close`.
    pub access_control: String,
    /// Its white list.
    pub white_list: Vec<String>,
}

impl Cloud {
    /// Every load balancer, in creation order.
    pub(crate) fn balancer_views(&self) -> Vec<LoadBalancerView> {
        lock(&self.world)
            .load_balancers
            .iter()
            .map(|b| LoadBalancerView {
                id: b.id.clone(),
                name: b.name.clone(),
                address: b.address,
                status: b.status.clone(),
                listeners: b
                    .listeners
                    .iter()
                    .map(|l| ListenerView {
                        port: l.port,
                        protocol: l.protocol.as_str().to_owned(),
                        status: l.status.as_str().to_owned(),
                        access_control: l.access_control.clone(),
                        white_list: l.white_list.clone(),
                    })
                    .collect(),
                backends: b
                    .backends
                    .iter()
                    .map(|x| (x.server_id.clone(), x.weight))
                    .collect(),
            })
            .collect()
    }
}

/// A listener's protocol (the two DCP's plugin uses; HTTPS and UDP are not
/// simulated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Protocol {
    /// Layer 7: each request goes to a backend of its own.
    Http,
    /// Layer 4: each connection goes to a backend of its own.
    Tcp,
}

impl Protocol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "tcp" => Some(Self::Tcp),
            _ => None,
        }
    }
}

/// A listener's status. A new one is `stopped`; starting, stopping and
/// changing its attributes pass through the transitional states, during
/// which the balancer refuses other changes (`ServiceIsConfiguring`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListenerStatus {
    Starting,
    Running,
    Configuring,
    Stopping,
    Stopped,
}

impl ListenerStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Configuring => "configuring",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    pub(crate) fn transitional(self) -> bool {
        matches!(self, Self::Starting | Self::Configuring | Self::Stopping)
    }
}

/// How a listener checks its backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    pub(crate) enabled: bool,
    /// `http` probes `uri`; `tcp` only connects.
    pub(crate) kind: Protocol,
    pub(crate) uri: String,
    pub(crate) domain: String,
    /// The port probed; the backend port when absent.
    pub(crate) connect_port: Option<u16>,
    pub(crate) healthy_threshold: u32,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) timeout_secs: u32,
    pub(crate) interval_secs: u32,
    /// `http_2xx`, `http_3xx`, … : the status classes that count as healthy.
    pub(crate) http_codes: Vec<String>,
}

/// A listener: a port of the load balancer, forwarding to its backends.
#[derive(Clone, Debug)]
pub(crate) struct Listener {
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) status: ListenerStatus,
    /// Bumped by every change, so a transition scheduled before it gives up.
    pub(crate) generation: u64,
    pub(crate) backend_port: u16,
    /// Mbit/s, `-1` for no cap (not enforced).
    pub(crate) bandwidth: i32,
    /// `wrr`, `wlc` or `rr`.
    pub(crate) scheduler: String,
    pub(crate) health: HealthCheck,
    /// HTTP: `on`/`off`, and how (`insert`/`server`); recorded, not enforced.
    pub(crate) sticky_session: String,
    pub(crate) sticky_session_type: String,
    pub(crate) cookie_timeout: Option<u32>,
    pub(crate) cookie: String,
    /// HTTP: adds `X-Forwarded-For` when `on`.
    pub(crate) x_forwarded_for: String,
    pub(crate) description: String,
    /// `open_white_list` or `close`.
    pub(crate) access_control: String,
    /// Addresses and CIDR blocks let in while the white list is open.
    pub(crate) white_list: Vec<String>,
}

impl Listener {
    /// Whether a client at `ip` may connect: always, unless the white list
    /// is open and names neither the address nor a block holding it.
    pub(crate) fn admits(&self, ip: Ipv4Addr) -> bool {
        self.access_control != "open_white_list" || self.white_list.iter().any(|i| covers(i, ip))
    }
}

/// Whether white-list item `item` (`a.b.c.d` or `a.b.c.d/n`) holds `ip`.
pub(crate) fn covers(item: &str, ip: Ipv4Addr) -> bool {
    let (base, bits) = item.split_once('/').unwrap_or((item, "32"));
    let (Ok(base), Ok(bits)) = (base.parse::<Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    if bits > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    u32::from(base) & mask == u32::from(ip) & mask
}

/// A backend server of the default server group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Backend {
    /// The ECS instance id.
    pub(crate) server_id: String,
    /// 0–100; 0 takes no new traffic.
    pub(crate) weight: u32,
    pub(crate) kind: String,
    pub(crate) description: String,
}

/// What a listener's health checks say of one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Checks are off or have not reached a verdict: with checks on, such a
    /// backend gets no traffic yet.
    Unavailable,
    Normal,
    Abnormal,
}

impl Health {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Normal => "normal",
            Self::Abnormal => "abnormal",
        }
    }
}

/// The verdict for one backend of one listener, and the run of equal
/// probe results that led to it (a verdict changes after a threshold of
/// results that disagree with it, in a row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) health: Health,
    last: Option<bool>,
    streak: u32,
}

impl Verdict {
    /// No verdict yet.
    pub(crate) const NONE: Self = Self {
        health: Health::Unavailable,
        last: None,
        streak: 0,
    };

    /// Takes one probe result under the listener's thresholds.
    pub(crate) fn record(&mut self, passed: bool, check: &HealthCheck) {
        self.streak = if self.last == Some(passed) {
            self.streak.saturating_add(1)
        } else {
            1
        };
        self.last = Some(passed);
        let (verdict, threshold) = if passed {
            (Health::Normal, check.healthy_threshold)
        } else {
            (Health::Abnormal, check.unhealthy_threshold)
        };
        if self.health != verdict && self.streak >= threshold {
            self.health = verdict;
        }
    }
}

/// A load balancer.
#[derive(Clone, Debug)]
pub(crate) struct LoadBalancer {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) region: &'static catalog::Region,
    pub(crate) zone: &'static catalog::Zone,
    /// Where its listeners listen: 127.21.112.0/20, reachable on this host.
    pub(crate) address: Ipv4Addr,
    /// `internet` or `intranet`.
    pub(crate) address_type: String,
    /// `vpc` or `classic`.
    pub(crate) network_type: String,
    pub(crate) vpc_id: String,
    pub(crate) vswitch_id: String,
    pub(crate) spec: String,
    pub(crate) pay_type: String,
    pub(crate) internet_charge_type: String,
    pub(crate) bandwidth: u32,
    /// `active` forwards; `inactive` does not.
    pub(crate) status: String,
    pub(crate) created_at: i64,
    /// In creation order, as DescribeLoadBalancerAttribute lists them.
    pub(crate) listeners: Vec<Listener>,
    pub(crate) backends: Vec<Backend>,
    /// By (listener port, server id).
    pub(crate) health: HashMap<(u16, String), Verdict>,
}

impl LoadBalancer {
    pub(crate) fn listener(&self, port: u16) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.port == port)
    }

    pub(crate) fn listener_mut(&mut self, port: u16) -> Option<&mut Listener> {
        self.listeners.iter_mut().find(|l| l.port == port)
    }

    /// What listener `port`'s checks say of `server`.
    pub(crate) fn health_of(&self, port: u16, server: &str) -> Health {
        let Some(listener) = self.listener(port) else {
            return Health::Unavailable;
        };
        if !listener.health.enabled || listener.status != ListenerStatus::Running {
            return Health::Unavailable;
        }
        self.health
            .get(&(port, server.to_owned()))
            .map_or(Health::Unavailable, |v| v.health)
    }
}

/// Load balancer addresses: 127.21.112.0/20, between the vSwitches and the
/// public block.
const BALANCER_BASE: u32 = (127 << 24) | (21 << 16) | (112 << 8);
const BALANCER_CAPACITY: u32 = (1 << 12) - 2;

// Shared by every simulator in the process, and started at a random point
// so that simulators in other test processes rarely pick the same ones.
static NEXT_BALANCER: AtomicU32 = AtomicU32::new(u32::MAX);

impl World {
    pub(crate) fn balancer(&self, id: &str) -> Option<&LoadBalancer> {
        self.load_balancers.iter().find(|b| b.id == id)
    }

    pub(crate) fn balancer_mut(&mut self, id: &str) -> Option<&mut LoadBalancer> {
        self.load_balancers.iter_mut().find(|b| b.id == id)
    }

    /// An address no load balancer of this world has.
    pub(crate) fn allocate_balancer_address(&self) -> Option<Ipv4Addr> {
        let _ = NEXT_BALANCER.compare_exchange(
            u32::MAX,
            rand::thread_rng().gen_range(0..BALANCER_CAPACITY),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        (0..BALANCER_CAPACITY)
            .map(|_| {
                let n = NEXT_BALANCER.fetch_add(1, Ordering::Relaxed) % BALANCER_CAPACITY;
                Ipv4Addr::from(BALANCER_BASE + 1 + n)
            })
            .find(|ip| self.load_balancers.iter().all(|b| b.address != *ip))
    }

    /// A new load balancer id in Aliyun's shape: `lb-`, the region's
    /// prefix, then lowercase letters and digits.
    pub(crate) fn new_balancer_id(&self, region: &catalog::Region) -> String {
        new_id("lb", region, |id| self.balancer(id).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_list_items_cover_addresses_and_blocks() {
        let ip = Ipv4Addr::new(127, 27, 9, 9);
        assert!(covers("127.27.9.9", ip));
        assert!(covers("127.27.0.0/16", ip));
        assert!(covers("0.0.0.0/0", ip));
        assert!(!covers("127.27.9.8", ip));
        assert!(!covers("127.28.0.0/16", ip));
        assert!(!covers("127.27.9.9/33", ip));
        assert!(!covers("nonsense", ip));
    }

    #[test]
    fn a_verdict_changes_after_its_threshold_of_disagreeing_results() {
        let check = HealthCheck {
            enabled: true,
            kind: Protocol::Tcp,
            uri: "/".into(),
            domain: String::new(),
            connect_port: None,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            timeout_secs: 1,
            interval_secs: 1,
            http_codes: vec!["http_2xx".into()],
        };
        let mut v = Verdict::NONE;
        v.record(true, &check);
        assert_eq!(v.health, Health::Unavailable);
        v.record(true, &check);
        assert_eq!(v.health, Health::Normal);
        v.record(false, &check);
        v.record(false, &check);
        v.record(true, &check);
        assert_eq!(
            v.health,
            Health::Normal,
            "a pass resets the run of failures"
        );
        for _ in 0..3 {
            v.record(false, &check);
        }
        assert_eq!(v.health, Health::Abnormal);
    }

    #[test]
    fn balancer_addresses_stay_in_their_block() {
        let world = World::default();
        let ip = world.allocate_balancer_address().unwrap();
        let [a, b, c, _] = ip.octets();
        assert_eq!((a, b), (127, 21));
        assert!((112..128).contains(&c), "{ip}");
    }
}
