//! SLB (Classic Load Balancer, API `2014-05-15`) answers as DCP's Aliyun
//! plugins read them: `slb` (backend membership) and `aliyun` (the
//! account's load balancers). One reading for both, so they cannot come to
//! disagree about what a load balancer has.

use serde_json::Value;

use crate::lenient::{list, number, port, strings, text};

/// SLB's API version.
pub const VERSION: &str = "2014-05-15";

/// A listener as DescribeLoadBalancerAttribute names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its port.
    pub port: u16,
    /// `http`, `https`, `tcp`, `udp`, or empty when SLB did not say.
    pub protocol: String,
}

/// The listeners of a DescribeLoadBalancerAttribute answer, in SLB's order.
#[must_use]
pub fn listeners(answer: &Value) -> Vec<Listener> {
    let listeners_in = |outer: &str, inner: &str, protocol: &str| -> Vec<Listener> {
        list(answer, outer, inner)
            .iter()
            .filter_map(|l| {
                Some(Listener {
                    port: port(l, "ListenerPort")?,
                    protocol: text(l, protocol).to_ascii_lowercase(),
                })
            })
            .collect()
    };
    let mut listeners = listeners_in(
        "ListenerPortsAndProtocol",
        "ListenerPortAndProtocol",
        "ListenerProtocol",
    );
    if listeners.is_empty() {
        // The legacy, misspelt list.
        listeners = listeners_in(
            "ListenerPortsAndProtocal",
            "ListenerPortAndProtocal",
            "ListenerProtocal",
        );
    }
    if listeners.is_empty() {
        listeners = strings(answer, "ListenerPorts", "ListenerPort")
            .iter()
            .filter_map(|p| p.parse().ok())
            .map(|port| Listener {
                port,
                protocol: String::new(),
            })
            .collect();
    }
    listeners
}

/// A server attached to the load balancer's default server group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The instance id.
    pub server_id: String,
    /// 0–100.
    pub weight: u32,
    /// `ecs`, `eni` or `eci`.
    pub kind: String,
}

/// The backend servers of a DescribeLoadBalancerAttribute answer.
#[must_use]
pub fn attached(answer: &Value) -> Vec<Attached> {
    list(answer, "BackendServers", "BackendServer")
        .iter()
        .map(|b| {
            let kind = text(b, "Type");
            Attached {
                server_id: text(b, "ServerId"),
                // SLB's default weight when it says none.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                weight: number(b, "Weight").map_or(100, |w| w.clamp(0.0, 100.0) as u32),
                kind: if kind.is_empty() {
                    "ecs".to_owned()
                } else {
                    kind
                },
            }
        })
        .filter(|b| !b.server_id.is_empty())
        .collect()
}

/// The protocol-specific listener action, e.g. `("Describe", "http",
/// "Attribute")` is `DescribeLoadBalancerHTTPListenerAttribute`; none for
/// a protocol SLB has no such actions for.
#[must_use]
pub fn listener_action(verb: &str, protocol: &str, suffix: &str) -> Option<String> {
    let protocol = match protocol {
        "http" => "HTTP",
        "https" => "HTTPS",
        "tcp" => "TCP",
        "udp" => "UDP",
        _ => return None,
    };
    Some(format!("{verb}LoadBalancer{protocol}Listener{suffix}"))
}

/// What a Describe{HTTP,HTTPS,TCP,UDP}ListenerAttribute answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAttribute {
    /// The backend port it sends to; none when it sends to a VServer group.
    pub backend_port: Option<u16>,
    /// `running`, `stopped`, `starting`, `configuring`, `stopping` (lowercase).
    pub status: String,
    /// Whether it health-checks its backends (`HealthCheck` is `on`).
    pub health_check: bool,
    /// The path an HTTP check asks for.
    pub health_check_uri: String,
    /// Seconds between checks.
    pub interval: Option<u32>,
    /// Passing checks that make a backend healthy.
    pub healthy_threshold: Option<u32>,
    /// Failing checks that make a backend unhealthy.
    pub unhealthy_threshold: Option<u32>,
    /// Peak bandwidth in Mbit/s, `-1` for none.
    pub bandwidth: Option<i32>,
    /// `wrr`, `wlc`, `rr`, … (lowercase).
    pub scheduler: String,
}

impl ListenerAttribute {
    /// Whether it takes traffic and checks its backends: only then does a
    /// backend's health decide whether it is sent any.
    #[must_use]
    pub fn checking(&self) -> bool {
        self.health_check && self.status == "running"
    }
}

/// A listener attribute answer, leniently.
#[must_use]
pub fn listener_attribute(answer: &Value) -> ListenerAttribute {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = |field: &str| {
        number(answer, field)
            .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n <= f64::from(u32::MAX))
            .map(|n| n as u32)
    };
    let to_group = !text(answer, "VServerGroupId").is_empty();
    #[allow(clippy::cast_possible_truncation)]
    let bandwidth = number(answer, "Bandwidth")
        .filter(|n| n.fract() == 0.0 && (-1.0..=f64::from(i32::MAX)).contains(n))
        .map(|n| n as i32);
    // TCP once spelt its interval in lower camel case.
    let interval = count("HealthCheckInterval").or_else(|| count("healthCheckInterval"));
    ListenerAttribute {
        backend_port: port(answer, "BackendServerPort").filter(|_| !to_group),
        status: text(answer, "Status").to_ascii_lowercase(),
        health_check: text(answer, "HealthCheck").eq_ignore_ascii_case("on"),
        health_check_uri: text(answer, "HealthCheckURI"),
        interval,
        healthy_threshold: count("HealthyThreshold"),
        unhealthy_threshold: count("UnhealthyThreshold"),
        bandwidth,
        scheduler: text(answer, "Scheduler").to_ascii_lowercase(),
    }
}

/// A listener's white list, as DescribeListenerAccessControlAttribute says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessControl {
    /// Whether it is enforced (`open_white_list`).
    pub enabled: bool,
    /// Its addresses and CIDR blocks, in SLB's order.
    pub items: Vec<String>,
}

/// A DescribeListenerAccessControlAttribute answer: `SourceItems` is one
/// comma-separated string.
#[must_use]
pub fn access_control(answer: &Value) -> AccessControl {
    AccessControl {
        enabled: text(answer, "AccessControlStatus") == "open_white_list",
        items: text(answer, "SourceItems")
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

/// One backend's health on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The health checks pass: it takes traffic.
    Normal,
    /// The health checks fail: it takes no traffic.
    Abnormal,
    /// No verdict: health checks off, the listener not running, or no
    /// check finished yet.
    Unavailable,
}

impl Health {
    /// SLB's `ServerHealthStatus`; anything undocumented is no verdict.
    #[must_use]
    pub fn of(status: &str) -> Self {
        match status.trim().to_ascii_lowercase().as_str() {
            "normal" => Self::Normal,
            "abnormal" => Self::Abnormal,
            _ => Self::Unavailable,
        }
    }
}

/// A backend's health on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnListener {
    /// The listener's port.
    pub listener_port: u16,
    /// `http`, `https`, `tcp` or `udp` (empty when SLB did not say).
    pub protocol: String,
    /// The backend port the listener sends to, if SLB said.
    pub backend_port: Option<u16>,
    /// The verdict.
    pub health: Health,
}

/// One backend server's health on every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// The instance id.
    pub server_id: String,
    /// Its private address (empty when SLB did not say).
    pub address: String,
    /// Per listener, in SLB's order.
    pub listeners: Vec<OnListener>,
}

impl BackendHealth {
    /// One verdict for the backend: abnormal if any listener finds it so,
    /// normal if every listener does, otherwise unavailable (no listener,
    /// or some without a verdict).
    #[must_use]
    pub fn overall(&self) -> Health {
        let all = |h| self.listeners.iter().all(|l| l.health == h);
        if self.listeners.iter().any(|l| l.health == Health::Abnormal) {
            Health::Abnormal
        } else if !self.listeners.is_empty() && all(Health::Normal) {
            Health::Normal
        } else {
            Health::Unavailable
        }
    }
}

/// DescribeHealthStatus's answer, grouped by backend in SLB's order.
#[must_use]
pub fn health(answer: &Value) -> Vec<BackendHealth> {
    let mut out: Vec<BackendHealth> = Vec::new();
    for row in list(answer, "BackendServers", "BackendServer") {
        let server_id = text(row, "ServerId");
        let Some(listener_port) = port(row, "ListenerPort") else {
            continue;
        };
        if server_id.is_empty() {
            continue;
        }
        let on = OnListener {
            listener_port,
            protocol: text(row, "Protocol").to_ascii_lowercase(),
            backend_port: port(row, "Port"),
            health: Health::of(&text(row, "ServerHealthStatus")),
        };
        let address = text(row, "ServerIp");
        match out.iter_mut().find(|b| b.server_id == server_id) {
            Some(backend) => {
                if backend.address.is_empty() {
                    backend.address = address;
                }
                backend.listeners.push(on);
            }
            None => out.push(BackendHealth {
                server_id,
                address,
                listeners: vec![on],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn health_rows_are_grouped_per_backend_with_numbers_either_way() {
        let answer = json!({"RequestId": "R", "BackendServers": {"BackendServer": [
            {"ServerId": "i-a", "ServerIp": "10.0.0.1", "Port": 8080, "ListenerPort": 80,
             "Protocol": "http", "ServerHealthStatus": "normal", "Type": "ecs"},
            {"ServerId": "i-b", "ServerIp": "10.0.0.2", "Port": "8080", "ListenerPort": "80",
             "Protocol": "http", "ServerHealthStatus": "abnormal"},
            {"ServerId": "i-a", "ServerIp": "10.0.0.1", "Port": 8080, "ListenerPort": 443,
             "Protocol": "TCP", "ServerHealthStatus": "normal"},
            {"ServerId": "i-c", "ListenerPort": 80, "ServerHealthStatus": "unavailable"},
            {"ServerId": "i-d", "ListenerPort": 80, "ServerHealthStatus": "checking"},
            {"ServerId": "", "ListenerPort": 80, "ServerHealthStatus": "normal"},
            {"ServerId": "i-e", "ListenerPort": 0, "ServerHealthStatus": "normal"}
        ]}});
        let health = health(&answer);
        let ids: Vec<&str> = health.iter().map(|b| b.server_id.as_str()).collect();
        assert_eq!(ids, ["i-a", "i-b", "i-c", "i-d"]);
        assert_eq!(health[0].address, "10.0.0.1");
        assert_eq!(
            health[0].listeners[1],
            OnListener {
                listener_port: 443,
                protocol: "tcp".to_owned(),
                backend_port: Some(8080),
                health: Health::Normal,
            }
        );
        assert_eq!(health[1].listeners[0].backend_port, Some(8080));
        let overall: Vec<Health> = health.iter().map(BackendHealth::overall).collect();
        assert_eq!(
            overall,
            [
                Health::Normal,
                Health::Abnormal,
                Health::Unavailable,
                Health::Unavailable
            ]
        );
        assert_eq!(health[2].address, "");
        assert_eq!(health[2].listeners[0].backend_port, None);
    }

    #[test]
    fn an_empty_health_answer_is_no_backends() {
        assert!(health(&json!({"RequestId": "R"})).is_empty());
        assert!(health(&json!({"BackendServers": {}})).is_empty());
    }

    #[test]
    fn attributes_read_either_listener_list_and_lenient_weights() {
        let answer = json!({
            "VpcId": "vpc-1",
            "ListenerPortsAndProtocal": {"ListenerPortAndProtocal": [
                {"ListenerPort": "80", "ListenerProtocal": "HTTP"}]},
            "BackendServers": {"BackendServer": [
                {"ServerId": "i-a", "Weight": "50", "Type": "ecs"},
                {"ServerId": "i-b", "Weight": 0},
                {"ServerId": "i-c"}]}
        });
        assert_eq!(
            listeners(&answer),
            [Listener {
                port: 80,
                protocol: "http".to_owned()
            }]
        );
        let weights: Vec<(String, u32, String)> = attached(&answer)
            .into_iter()
            .map(|b| (b.server_id, b.weight, b.kind))
            .collect();
        assert_eq!(
            weights,
            [
                ("i-a".to_owned(), 50, "ecs".to_owned()),
                ("i-b".to_owned(), 0, "ecs".to_owned()),
                ("i-c".to_owned(), 100, "ecs".to_owned())
            ]
        );
        let bare = json!({"ListenerPorts": {"ListenerPort": [443]}});
        assert_eq!(listeners(&bare)[0].port, 443);
        assert!(attached(&bare).is_empty());
    }

    #[test]
    fn listener_attributes_and_white_lists_read_leniently() {
        let http = listener_attribute(&json!({
            "BackendServerPort": "8080", "Status": "Running", "HealthCheck": "on",
            "HealthCheckURI": "/up", "HealthCheckInterval": "5", "HealthyThreshold": 3,
            "UnhealthyThreshold": "4", "Bandwidth": -1, "Scheduler": "WRR"
        }));
        assert_eq!(http.backend_port, Some(8080));
        assert!(http.checking());
        assert_eq!(
            (
                http.interval,
                http.healthy_threshold,
                http.unhealthy_threshold
            ),
            (Some(5), Some(3), Some(4))
        );
        assert_eq!((http.bandwidth, http.scheduler.as_str()), (Some(-1), "wrr"));
        let grouped = listener_attribute(&json!({
            "BackendServerPort": 80, "VServerGroupId": "rsp-1", "Status": "stopped",
            "HealthCheck": "on", "healthCheckInterval": 2
        }));
        assert_eq!(grouped.backend_port, None);
        assert!(!grouped.checking());
        assert_eq!(grouped.interval, Some(2));
        assert_eq!(
            listener_action("Describe", "tcp", "Attribute").as_deref(),
            Some("DescribeLoadBalancerTCPListenerAttribute")
        );
        assert_eq!(
            listener_action("Create", "http", "").as_deref(),
            Some("CreateLoadBalancerHTTPListener")
        );
        assert_eq!(listener_action("Create", "quic", ""), None);
        let acl = access_control(&json!({
            "AccessControlStatus": "open_white_list", "SourceItems": "10.0.0.1, 10.1.0.0/16,"
        }));
        assert!(acl.enabled);
        assert_eq!(acl.items, ["10.0.0.1", "10.1.0.0/16"]);
        let closed = access_control(&json!({"AccessControlStatus": "close", "SourceItems": ""}));
        assert_eq!(
            closed,
            AccessControl {
                enabled: false,
                items: vec![]
            }
        );
    }
}
