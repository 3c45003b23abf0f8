//! Backend health as SLB's DescribeHealthStatus reports it: per backend
//! server, per listener port, `normal`, `abnormal` or `unavailable`.
//!
//! Ready for DCP's `check-state` (the unit's members as the balancer sees
//! them); the `balancer` WIT interface has no function to return it yet.

use aliyun_rpc::lenient::{list, text};
use serde_json::Value;

use crate::port;

/// One backend's health on one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
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
    pub(crate) fn of(status: &str) -> Self {
        match status.trim().to_ascii_lowercase().as_str() {
            "normal" => Self::Normal,
            "abnormal" => Self::Abnormal,
            _ => Self::Unavailable,
        }
    }
}

/// A backend's health on one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnListener {
    /// The listener's port.
    pub(crate) listener_port: u16,
    /// `http`, `https`, `tcp` or `udp` (empty when SLB did not say).
    pub(crate) protocol: String,
    /// The backend port the listener sends to, if SLB said.
    pub(crate) backend_port: Option<u16>,
    /// The verdict.
    pub(crate) health: Health,
}

/// One backend server's health on every listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendHealth {
    /// The instance id.
    pub(crate) server_id: String,
    /// Its private address (empty when SLB did not say).
    pub(crate) address: String,
    /// Per listener, in SLB's order.
    pub(crate) listeners: Vec<OnListener>,
}

impl BackendHealth {
    /// One verdict for the backend: abnormal if any listener finds it so,
    /// normal if every listener does, otherwise unavailable (no listener,
    /// or some without a verdict).
    pub(crate) fn overall(&self) -> Health {
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
pub(crate) fn of_answer(answer: &Value) -> Vec<BackendHealth> {
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
    fn rows_are_grouped_per_backend_with_numbers_either_way() {
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
        let health = of_answer(&answer);
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
    fn an_empty_answer_is_no_backends() {
        assert!(of_answer(&json!({"RequestId": "R"})).is_empty());
        assert!(of_answer(&json!({"BackendServers": {}})).is_empty());
    }
}
