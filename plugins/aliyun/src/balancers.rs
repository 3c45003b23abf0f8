//! The `load-balancers` functions over SLB's (CLB's) actions, in plain Rust
//! types (`guest.rs` converts them to and from the WIT records). SLB's
//! answers are read by `aliyun_rpc::slb`, as the `slb` plugin reads them.
//!
//! Every input is checked before any call, errors naming the field as the
//! WIT record spells it. Every change is safe to repeat: creating a load
//! balancer carries a ClientToken derived from the idempotency key, and the
//! other changes are declarative — they read what SLB has and ask only for
//! the difference, so a retry after a lost reply converges instead of
//! failing or doing something twice.

use std::{collections::HashSet, net::Ipv4Addr};

use aliyun_rpc::{
    lenient::{number, rfc3339, text},
    slb::{self, AccessControl, Listener as Named, ListenerAttribute},
};
use serde_json::Value;

pub(crate) use aliyun_rpc::slb::Health;

use crate::{
    cloud::{client_token, machine, p},
    rpc::{Failure, Host, Kind, Product, Rpc},
};

/// How clients reach a load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressType {
    /// From the internet.
    Internet,
    /// From inside the cloud network.
    Intranet,
}

/// A load balancer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Forwards traffic.
    Active,
    /// Stopped by its owner.
    Inactive,
    /// Locked by Aliyun.
    Locked,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP.
    Http,
    /// TCP.
    Tcp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }

    fn of(protocol: &str) -> Option<Self> {
        match protocol {
            "http" => Some(Self::Http),
            "tcp" => Some(Self::Tcp),
            _ => None,
        }
    }
}

/// A listener's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerStatus {
    /// Accepts connections.
    Running,
    /// Accepts nothing.
    Stopped,
    /// Between stopped and running.
    Starting,
    /// Applying a change (or stopping).
    Configuring,
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadBalancer {
    /// `lb-…`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Region id.
    pub region: String,
    /// The address clients connect to.
    pub address: String,
    /// Internet or intranet.
    pub address_type: AddressType,
    /// Its state.
    pub status: Status,
    /// Its VPC; empty on the classic network.
    pub vpc_id: String,
    /// `LoadBalancerSpec`; empty for a shared one.
    pub spec: String,
    /// RFC 3339; empty when SLB does not say.
    pub created_at: String,
}

/// How a listener checks its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    /// Whether it checks (TCP listeners always do).
    pub enabled: bool,
    /// The path an HTTP check asks for; empty for TCP.
    pub uri: String,
    /// Seconds between checks, 1–50.
    pub interval_seconds: u32,
    /// 2–10.
    pub healthy_threshold: u32,
    /// 2–10.
    pub unhealthy_threshold: u32,
}

/// What a listener is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    /// 1–65535.
    pub port: u16,
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// 1–65535 (0 when it sends to a VServer group).
    pub backend_port: u16,
    /// Mbit/s, -1 for no cap.
    pub bandwidth_mbps: i32,
    /// `wrr`, `wlc` or `rr`.
    pub scheduler: String,
    /// Its health check.
    pub health_check: HealthCheck,
}

/// A listener and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    /// What it is.
    pub spec: ListenerSpec,
    /// Its state.
    pub status: ListenerStatus,
    /// Whether its white list is enforced.
    pub access_control: bool,
    /// Its white list.
    pub white_list: Vec<String>,
}

/// A backend server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendServer {
    /// The instance id.
    pub instance_id: String,
    /// Its private address; empty when the instance is gone.
    pub address: String,
    /// 0–100.
    pub weight: u32,
    /// Its health on each listener that checks: (listener port, verdict).
    pub health: Vec<(u16, Health)>,
}

/// A load balancer with its listeners and backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Detail {
    /// The load balancer.
    pub load_balancer: LoadBalancer,
    /// Its HTTP and TCP listeners, by port.
    pub listeners: Vec<Listener>,
    /// Its backend servers, by instance id.
    pub backends: Vec<BackendServer>,
}

/// A load balancer to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewLoadBalancer {
    /// Region id.
    pub region: String,
    /// 1–80 characters.
    pub name: String,
    /// Internet or intranet.
    pub address_type: AddressType,
    /// The vSwitch of an intranet load balancer in a VPC.
    pub subnet: Option<String>,
    /// `LoadBalancerSpec`; none for a shared one.
    pub spec: Option<String>,
}

/// The most white-list entries a listener holds.
pub(crate) const WHITE_LIST_MAX: usize = 300;
/// The most instance ids one DescribeInstances takes.
const IDS_PER_LOOKUP: usize = 100;
/// How often a white list is read and changed before a writer racing this
/// one is reported instead of chased.
const WHITE_LIST_ROUNDS: usize = 3;

/// `1..=64` characters, each `allowed`.
fn shaped(value: &str, allowed: impl Fn(u8) -> bool) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(allowed)
}

fn check_region(field: &str, region: &str) -> Result<(), Failure> {
    if shaped(region, |b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
    }) {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{field}: {region:?} is not a region id (e.g. cn-hangzhou)"
        )))
    }
}

/// An Aliyun resource id (`lb-…`, `vsw-…`, `slb.s1.small`).
fn check_id(field: &str, id: &str, example: &str) -> Result<(), Failure> {
    if shaped(id, |b| {
        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
    }) {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{field}: {id:?} is not an id (e.g. {example})"
        )))
    }
}

fn check_balancer(region: &str, id: &str) -> Result<(), Failure> {
    check_region("region", region)?;
    check_id("id", id, "lb-bp1o94dp5i6ea0000")
}

fn check_port(field: &str, port: u16) -> Result<(), Failure> {
    if port == 0 {
        return Err(Failure::invalid(format!(
            "{field}: 0 is not a port (1–65535)"
        )));
    }
    Ok(())
}

fn check_range(
    field: &str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<(), Failure> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{field}: {value} is not {}–{}",
            range.start(),
            range.end()
        )))
    }
}

/// Checks a listener spec; errors name the field as the WIT record does.
fn check_listener(spec: &ListenerSpec) -> Result<(), Failure> {
    check_port("spec.port", spec.port)?;
    check_port("spec.backend-port", spec.backend_port)?;
    if spec.bandwidth_mbps != -1 && !(1..=5120).contains(&spec.bandwidth_mbps) {
        return Err(Failure::invalid(format!(
            "spec.bandwidth-mbps: {} is neither -1 (no cap) nor 1–5120",
            spec.bandwidth_mbps
        )));
    }
    if !["wrr", "wlc", "rr"].contains(&spec.scheduler.as_str()) {
        return Err(Failure::invalid(format!(
            "spec.scheduler: {:?} is not wrr, wlc or rr",
            spec.scheduler
        )));
    }
    let check = &spec.health_check;
    check_range(
        "spec.health-check.interval-seconds",
        check.interval_seconds,
        1..=50,
    )?;
    check_range(
        "spec.health-check.healthy-threshold",
        check.healthy_threshold,
        2..=10,
    )?;
    check_range(
        "spec.health-check.unhealthy-threshold",
        check.unhealthy_threshold,
        2..=10,
    )?;
    if spec.protocol == Protocol::Http && check.enabled && !check.uri.is_empty() {
        // SLB's character set: the path goes into the probe's request line.
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-/.%?#&_=~".contains(c);
        if !check.uri.starts_with('/') || check.uri.len() > 80 || !check.uri.chars().all(allowed) {
            return Err(Failure::invalid(format!(
                "spec.health-check.uri: {:?} must start with / and have at most 80 of A–Z a–z 0–9 - / . % ? # & _ = ~",
                check.uri
            )));
        }
    }
    Ok(())
}

/// The white list asked for, in order and without repeats; errors name the
/// entry.
fn check_white_list(entries: &[String]) -> Result<Vec<String>, Failure> {
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let entry = entry.trim();
        let (base, bits) = entry.split_once('/').unwrap_or((entry, "32"));
        let base: Option<Ipv4Addr> = base.parse().ok();
        let bits: Option<u8> = bits.parse().ok().filter(|b| *b <= 32);
        let (Some(base), Some(_)) = (base, bits) else {
            return Err(Failure::invalid(format!(
                "entries[{i}]: {entry:?} is not an IPv4 address or CIDR block"
            )));
        };
        if base.is_unspecified() {
            // SLB refuses it: a white list that lets everyone in is none.
            return Err(Failure::invalid(format!(
                "entries[{i}]: {entry:?} lets everyone in; disable the white list instead"
            )));
        }
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_owned());
        }
    }
    if out.len() > WHITE_LIST_MAX {
        return Err(Failure::invalid(format!(
            "entries: {} entries, SLB holds at most {WHITE_LIST_MAX}",
            out.len()
        )));
    }
    Ok(out)
}

fn check_new(spec: &NewLoadBalancer, key: &str) -> Result<(), Failure> {
    check_region("spec.region", &spec.region)?;
    let length = spec.name.chars().count();
    if !(1..=80).contains(&length) {
        return Err(Failure::invalid(format!(
            "spec.name: {length} characters, must be 1–80"
        )));
    }
    if let Some(subnet) = &spec.subnet {
        check_id("spec.subnet", subnet, "vsw-bp1dcpsim0zoneh0001")?;
        if spec.address_type == AddressType::Internet {
            return Err(Failure::invalid(
                "spec.subnet: only an intranet load balancer is placed in a subnet",
            ));
        }
    }
    if let Some(class) = &spec.spec {
        check_id("spec.spec", class, "slb.s1.small")?;
    }
    if key.is_empty() {
        return Err(Failure::invalid("idempotency-key: must not be empty"));
    }
    Ok(())
}

/// The ClientToken of CreateLoadBalancer for an idempotency key: its own
/// prefix, so a key DCP also used for RunInstances cannot meet that call's
/// token (Aliyun remembers tokens per account).
pub(crate) fn create_token(key: &str) -> String {
    client_token(&format!("slb-{key}"))
}

/// A load balancer from a DescribeLoadBalancers entry or a
/// DescribeLoadBalancerAttribute answer.
fn load_balancer(v: &Value, region: &str) -> LoadBalancer {
    let region_of = text(v, "RegionId");
    let created_at = rfc3339(&text(v, "CreateTime"))
        .or_else(|| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            number(v, "CreateTimeStamp")
                .filter(|ms| *ms > 0.0)
                .map(|ms| aliyun_rpc::timestamp((ms / 1000.0) as u64))
        })
        .unwrap_or_default();
    LoadBalancer {
        id: text(v, "LoadBalancerId"),
        name: text(v, "LoadBalancerName"),
        region: if region_of.is_empty() {
            region.to_owned()
        } else {
            region_of
        },
        address: text(v, "Address"),
        address_type: if text(v, "AddressType").eq_ignore_ascii_case("intranet") {
            AddressType::Intranet
        } else {
            AddressType::Internet
        },
        status: match text(v, "LoadBalancerStatus").to_ascii_lowercase().as_str() {
            "active" => Status::Active,
            "locked" => Status::Locked,
            _ => Status::Inactive,
        },
        vpc_id: text(v, "VpcId"),
        spec: text(v, "LoadBalancerSpec"),
        created_at,
    }
}

/// A listener's spec as SLB describes it.
fn described_spec(port: u16, protocol: Protocol, a: &ListenerAttribute) -> ListenerSpec {
    ListenerSpec {
        port,
        protocol,
        backend_port: a.backend_port.unwrap_or(0),
        bandwidth_mbps: a.bandwidth.unwrap_or(-1),
        scheduler: a.scheduler.clone(),
        health_check: HealthCheck {
            // SLB says `on` for TCP, which always checks.
            enabled: a.health_check || protocol == Protocol::Tcp,
            uri: match protocol {
                Protocol::Http => a.health_check_uri.clone(),
                Protocol::Tcp => String::new(),
            },
            interval_seconds: a.interval.unwrap_or(0),
            healthy_threshold: a.healthy_threshold.unwrap_or(0),
            unhealthy_threshold: a.unhealthy_threshold.unwrap_or(0),
        },
    }
}

/// How `existing` differs from `wanted`, field by field (as the WIT record
/// names them); empty when they are the same listener.
fn differences(wanted: &ListenerSpec, existing: &ListenerSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |field: &str, want: String, have: String| {
        if want != have {
            out.push(format!("{field} is {have}, not {want}"));
        }
    };
    differ(
        "protocol",
        wanted.protocol.as_str().to_owned(),
        existing.protocol.as_str().to_owned(),
    );
    differ(
        "backend-port",
        wanted.backend_port.to_string(),
        existing.backend_port.to_string(),
    );
    differ(
        "bandwidth-mbps",
        wanted.bandwidth_mbps.to_string(),
        existing.bandwidth_mbps.to_string(),
    );
    differ(
        "scheduler",
        wanted.scheduler.clone(),
        existing.scheduler.clone(),
    );
    let (w, e) = (&wanted.health_check, &existing.health_check);
    // TCP always checks; an HTTP check that is off has nothing else to compare.
    if wanted.protocol == Protocol::Http {
        differ(
            "health-check.enabled",
            w.enabled.to_string(),
            e.enabled.to_string(),
        );
    }
    if w.enabled || wanted.protocol == Protocol::Tcp {
        if wanted.protocol == Protocol::Http {
            differ("health-check.uri", uri_of(w), uri_of(e));
        }
        differ(
            "health-check.interval-seconds",
            w.interval_seconds.to_string(),
            e.interval_seconds.to_string(),
        );
        differ(
            "health-check.healthy-threshold",
            w.healthy_threshold.to_string(),
            e.healthy_threshold.to_string(),
        );
        differ(
            "health-check.unhealthy-threshold",
            w.unhealthy_threshold.to_string(),
            e.unhealthy_threshold.to_string(),
        );
    }
    out
}

/// The path an HTTP check asks for: `/` when none is given, as SLB does.
fn uri_of(check: &HealthCheck) -> String {
    if check.uri.is_empty() {
        "/".to_owned()
    } else {
        check.uri.clone()
    }
}

fn listener_status(status: &str) -> ListenerStatus {
    match status {
        "running" => ListenerStatus::Running,
        "stopped" => ListenerStatus::Stopped,
        "starting" => ListenerStatus::Starting,
        // `configuring`, `stopping`, and anything SLB adds: a change underway.
        _ => ListenerStatus::Configuring,
    }
}

/// The account's load balancers.
pub(crate) struct Balancers<'a, H: Host> {
    /// Signed calls.
    pub rpc: Rpc<'a, H>,
}

impl<H: Host> Balancers<'_, H> {
    fn call(&self, action: &str, params: &[(String, String)]) -> Result<Value, Failure> {
        self.rpc.call(Product::Slb, action, params)
    }

    fn ids(region: &str, id: &str) -> Vec<(String, String)> {
        vec![p("RegionId", region), p("LoadBalancerId", id)]
    }

    fn listener_params(region: &str, id: &str, port: u16) -> Vec<(String, String)> {
        let mut params = Self::ids(region, id);
        params.push(p("ListenerPort", port.to_string()));
        params
    }

    /// DescribeLoadBalancerAttribute; a load balancer that is not there is
    /// `not-found`, saying which.
    fn attribute(&self, region: &str, id: &str) -> Result<Value, Failure> {
        self.call("DescribeLoadBalancerAttribute", &Self::ids(region, id))
            .map_err(|e| {
                if e.code.as_deref() == Some("InvalidLoadBalancerId.NotFound") {
                    Failure {
                        message: format!(
                            "load balancer {id} does not exist in region {region} ({})",
                            e.message
                        ),
                        ..e
                    }
                } else {
                    e
                }
            })
    }

    /// The listener on `port`, if there is one.
    fn named_listener(&self, region: &str, id: &str, port: u16) -> Result<Option<Named>, Failure> {
        let answer = self.attribute(region, id)?;
        Ok(slb::listeners(&answer).into_iter().find(|l| l.port == port))
    }

    fn listener_attribute(
        &self,
        region: &str,
        id: &str,
        listener: &Named,
    ) -> Result<ListenerAttribute, Failure> {
        let action =
            slb::listener_action("Describe", &listener.protocol, "Attribute").ok_or_else(|| {
                Failure::new(
                    Kind::Conflict,
                    format!(
                        "listener {} of {id} speaks {:?}, which DCP does not manage",
                        listener.port, listener.protocol
                    ),
                    false,
                )
            })?;
        let answer = self.call(&action, &Self::listener_params(region, id, listener.port))?;
        Ok(slb::listener_attribute(&answer))
    }

    fn white_list(&self, region: &str, id: &str, port: u16) -> Result<AccessControl, Failure> {
        let answer = self.call(
            "DescribeListenerAccessControlAttribute",
            &Self::listener_params(region, id, port),
        )?;
        Ok(slb::access_control(&answer))
    }

    /// The load balancers of a region, every page.
    pub(crate) fn list(&self, region: &str) -> Result<Vec<LoadBalancer>, Failure> {
        check_region("region", region)?;
        let items = self.rpc.all_pages(
            Product::Slb,
            "DescribeLoadBalancers",
            &[p("RegionId", region)],
            "LoadBalancers",
            "LoadBalancer",
        )?;
        Ok(items.iter().map(|v| load_balancer(v, region)).collect())
    }

    /// One load balancer with its listeners, their white lists, and its
    /// backends with their addresses and health.
    pub(crate) fn describe(&self, region: &str, id: &str) -> Result<Detail, Failure> {
        check_balancer(region, id)?;
        let answer = self.attribute(region, id)?;
        let load_balancer = load_balancer(&answer, region);
        let mut listeners = Vec::new();
        // HTTPS and UDP listeners have no place in the WIT records: left out.
        for named in slb::listeners(&answer) {
            let Some(protocol) = Protocol::of(&named.protocol) else {
                continue;
            };
            let attribute = self.listener_attribute(region, id, &named)?;
            let acl = self.white_list(region, id, named.port)?;
            listeners.push(Listener {
                spec: described_spec(named.port, protocol, &attribute),
                status: listener_status(&attribute.status),
                access_control: acl.enabled,
                white_list: acl.items,
            });
        }
        listeners.sort_by_key(|l| l.spec.port);
        let attached = slb::attached(&answer);
        let mut backends = Vec::with_capacity(attached.len());
        if !attached.is_empty() {
            let health = slb::health(&self.call("DescribeHealthStatus", &Self::ids(region, id))?);
            let ids: Vec<&str> = attached.iter().map(|a| a.server_id.as_str()).collect();
            let addresses = self.addresses(region, &ids)?;
            let checking: Vec<u16> = listeners
                .iter()
                .filter(|l| l.spec.health_check.enabled)
                .map(|l| l.spec.port)
                .collect();
            for a in attached {
                let rows = health.iter().find(|b| b.server_id == a.server_id);
                let verdicts = checking
                    .iter()
                    .map(|port| {
                        let on = rows
                            .and_then(|b| b.listeners.iter().find(|l| l.listener_port == *port));
                        (*port, on.map_or(Health::Unavailable, |l| l.health))
                    })
                    .collect();
                backends.push(BackendServer {
                    address: addresses
                        .iter()
                        .find(|(i, _)| *i == a.server_id)
                        .map(|(_, ip)| ip.clone())
                        .unwrap_or_default(),
                    instance_id: a.server_id,
                    weight: a.weight,
                    health: verdicts,
                });
            }
        }
        backends.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(Detail {
            load_balancer,
            listeners,
            backends,
        })
    }

    /// The first private address of each instance of `ids` that exists:
    /// DescribeInstances by `InstanceIds`, at most 100 a call.
    fn addresses(&self, region: &str, ids: &[&str]) -> Result<Vec<(String, String)>, Failure> {
        let mut out = Vec::new();
        for chunk in ids.chunks(IDS_PER_LOOKUP) {
            let filter = serde_json::to_string(chunk)
                .map_err(|e| Failure::unexpected("DescribeInstances", e))?;
            let instances = self.rpc.all_pages(
                Product::Ecs,
                "DescribeInstances",
                &[p("RegionId", region), p("InstanceIds", filter)],
                "Instances",
                "Instance",
            )?;
            for i in &instances {
                let m = machine(i, region);
                if let Some(ip) = m.private_ips.into_iter().next() {
                    out.push((m.id, ip));
                }
            }
        }
        Ok(out)
    }

    /// Creates a load balancer; the same `key` never creates a second one
    /// (its ClientToken makes SLB answer a retry with the first), and the
    /// answer is the load balancer as SLB then describes it.
    pub(crate) fn create(
        &self,
        spec: &NewLoadBalancer,
        key: &str,
    ) -> Result<LoadBalancer, Failure> {
        check_new(spec, key)?;
        let mut params = vec![
            p("RegionId", &*spec.region),
            p("LoadBalancerName", &*spec.name),
            p(
                "AddressType",
                match spec.address_type {
                    AddressType::Internet => "internet",
                    AddressType::Intranet => "intranet",
                },
            ),
            p("PayType", "PayOnDemand"),
            p("ClientToken", create_token(key)),
        ];
        if let Some(subnet) = &spec.subnet {
            params.push(p("VSwitchId", &**subnet));
        }
        if let Some(class) = &spec.spec {
            params.push(p("LoadBalancerSpec", &**class));
        }
        // Retried with the same token by the client: a lost reply answers
        // the load balancer it created.
        let answer = self.call("CreateLoadBalancer", &params)?;
        let id = text(&answer, "LoadBalancerId");
        if id.is_empty() {
            return Err(Failure::unexpected(
                "CreateLoadBalancer",
                "no LoadBalancerId",
            ));
        }
        Ok(load_balancer(
            &self.attribute(&spec.region, &id)?,
            &spec.region,
        ))
    }

    /// Deletes a load balancer with its listeners; one that is gone is deleted.
    pub(crate) fn delete(&self, region: &str, id: &str) -> Result<(), Failure> {
        check_balancer(region, id)?;
        match self.call("DeleteLoadBalancer", &Self::ids(region, id)) {
            Err(e) if e.code.as_deref() != Some("InvalidLoadBalancerId.NotFound") => Err(e),
            _ => Ok(()),
        }
    }

    /// Activates or stops a load balancer (`locked` is Aliyun's to set).
    pub(crate) fn set_status(&self, region: &str, id: &str, status: Status) -> Result<(), Failure> {
        check_balancer(region, id)?;
        let status = match status {
            Status::Active => "active",
            Status::Inactive => "inactive",
            Status::Locked => {
                return Err(Failure::invalid(
                    "status: locked is set by Aliyun (e.g. an overdue account), not by DCP; use active or inactive",
                ));
            }
        };
        let mut params = Self::ids(region, id);
        params.push(p("LoadBalancerStatus", status));
        self.call("SetLoadBalancerStatus", &params).map(drop)
    }

    /// Creates a listener, stopped; one with the same spec is there
    /// already, one with another spec is a conflict naming the differences.
    pub(crate) fn create_listener(
        &self,
        region: &str,
        id: &str,
        spec: &ListenerSpec,
    ) -> Result<(), Failure> {
        check_balancer(region, id)?;
        check_listener(spec)?;
        let check = &spec.health_check;
        let mut params = Self::listener_params(region, id, spec.port);
        params.extend([
            p("BackendServerPort", spec.backend_port.to_string()),
            p("Bandwidth", spec.bandwidth_mbps.to_string()),
            p("Scheduler", &*spec.scheduler),
            p("HealthCheckInterval", check.interval_seconds.to_string()),
            p("HealthyThreshold", check.healthy_threshold.to_string()),
            p("UnhealthyThreshold", check.unhealthy_threshold.to_string()),
        ]);
        if spec.protocol == Protocol::Http {
            params.push(p("HealthCheck", if check.enabled { "on" } else { "off" }));
            params.push(p("StickySession", "off"));
            if check.enabled {
                params.push(p("HealthCheckURI", uri_of(check)));
            }
        }
        let action = match spec.protocol {
            Protocol::Http => "CreateLoadBalancerHTTPListener",
            Protocol::Tcp => "CreateLoadBalancerTCPListener",
        };
        // A retry whose first attempt's reply was lost meets the listener
        // that attempt made, and so does a repeated call: both end here.
        match self.call(action, &params) {
            Err(e) if e.code.as_deref() == Some("ListenerAlreadyExists") => {
                self.same_listener(region, id, spec)
            }
            done => done.map(drop),
        }
    }

    /// Ok when the listener on the spec's port is the spec; a conflict
    /// naming what differs otherwise.
    fn same_listener(&self, region: &str, id: &str, spec: &ListenerSpec) -> Result<(), Failure> {
        let conflict = |what: String| {
            Failure::new(
                Kind::Conflict,
                format!(
                    "listener {} of {id} exists with another spec: {what}",
                    spec.port
                ),
                false,
            )
        };
        let Some(named) = self.named_listener(region, id, spec.port)? else {
            // Deleted since: the create may be tried again.
            return Err(Failure::new(
                Kind::Conflict,
                format!(
                    "listener {} of {id} was deleted while being created",
                    spec.port
                ),
                true,
            ));
        };
        if Protocol::of(&named.protocol) != Some(spec.protocol) {
            return Err(conflict(format!(
                "protocol is {}, not {}",
                named.protocol,
                spec.protocol.as_str()
            )));
        }
        let attribute = self.listener_attribute(region, id, &named)?;
        let existing = described_spec(spec.port, spec.protocol, &attribute);
        let differ = differences(spec, &existing);
        if differ.is_empty() {
            Ok(())
        } else {
            Err(conflict(differ.join(", ")))
        }
    }

    /// Starts or stops a listener; one already so is left as it is.
    pub(crate) fn set_listener_running(
        &self,
        region: &str,
        id: &str,
        port: u16,
        running: bool,
    ) -> Result<(), Failure> {
        check_balancer(region, id)?;
        check_port("port", port)?;
        let Some(named) = self.named_listener(region, id, port)? else {
            return Err(Failure::new(
                Kind::NotFound,
                format!("load balancer {id} has no listener on port {port}"),
                false,
            ));
        };
        let status = self.listener_attribute(region, id, &named)?.status;
        let (done, action) = if running {
            ("running", "StartLoadBalancerListener")
        } else {
            ("stopped", "StopLoadBalancerListener")
        };
        if status == done {
            return Ok(());
        }
        // SLB answers a listener still starting or stopping with a busy
        // code, which the client waits out.
        self.call(action, &Self::listener_params(region, id, port))
            .map(drop)
    }

    /// Deletes a listener; one that is gone (or whose load balancer is) is
    /// deleted.
    pub(crate) fn delete_listener(&self, region: &str, id: &str, port: u16) -> Result<(), Failure> {
        check_balancer(region, id)?;
        check_port("port", port)?;
        let exists = |this: &Self| match this.named_listener(region, id, port) {
            Ok(found) => Ok(found.is_some()),
            Err(e) if e.code.as_deref() == Some("InvalidLoadBalancerId.NotFound") => Ok(false),
            Err(e) => Err(e),
        };
        if !exists(self)? {
            return Ok(());
        }
        match self.call(
            "DeleteLoadBalancerListener",
            &Self::listener_params(region, id, port),
        ) {
            Ok(_) => Ok(()),
            // SLB's "does not exist" is a plain InvalidParameter: whether a
            // retry after a lost reply met its own deletion only a fresh
            // read tells.
            Err(e) => match exists(self) {
                Ok(false) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Makes a listener's white list exactly `entries` and turns its
    /// enforcement on or off. Wanted clients are never shut out on the
    /// way: enforcement goes off first and on last, and entries are added
    /// before others are removed unless that would overflow the list.
    pub(crate) fn set_white_list(
        &self,
        region: &str,
        id: &str,
        port: u16,
        enabled: bool,
        entries: &[String],
    ) -> Result<(), Failure> {
        check_balancer(region, id)?;
        check_port("port", port)?;
        let wanted = check_white_list(entries)?;
        if self.named_listener(region, id, port)?.is_none() {
            return Err(Failure::new(
                Kind::NotFound,
                format!("load balancer {id} has no listener on port {port}"),
                false,
            ));
        }
        let params = Self::listener_params(region, id, port);
        let with = |name: &str, value: String| {
            let mut params = params.clone();
            params.push(p(name, value));
            params
        };
        for _ in 0..WHITE_LIST_ROUNDS {
            let acl = self.white_list(region, id, port)?;
            let have: HashSet<&str> = acl.items.iter().map(String::as_str).collect();
            let want: HashSet<&str> = wanted.iter().map(String::as_str).collect();
            let add: Vec<&str> = wanted
                .iter()
                .map(String::as_str)
                .filter(|e| !have.contains(e))
                .collect();
            let remove: Vec<&str> = acl
                .items
                .iter()
                .map(String::as_str)
                .filter(|e| !want.contains(e))
                .collect();
            if add.is_empty() && remove.is_empty() && acl.enabled == enabled {
                return Ok(());
            }
            if !enabled && acl.enabled {
                self.call(
                    "SetListenerAccessControlStatus",
                    &with("AccessControlStatus", "close".to_owned()),
                )?;
            }
            let remove_first = acl.items.len() + add.len() > WHITE_LIST_MAX;
            let changes = if remove_first {
                [
                    ("RemoveListenerWhiteListItem", &remove),
                    ("AddListenerWhiteListItem", &add),
                ]
            } else {
                [
                    ("AddListenerWhiteListItem", &add),
                    ("RemoveListenerWhiteListItem", &remove),
                ]
            };
            // Adding what is there and removing what is not change
            // nothing, so the client's retries are safe.
            for (action, items) in changes {
                if !items.is_empty() {
                    self.call(action, &with("SourceItems", items.join(",")))?;
                }
            }
            if enabled && !acl.enabled {
                self.call(
                    "SetListenerAccessControlStatus",
                    &with("AccessControlStatus", "open_white_list".to_owned()),
                )?;
            }
        }
        Err(Failure::new(
            Kind::Conflict,
            format!(
                "the white list of listener {port} of {id} kept changing under this call ({WHITE_LIST_ROUNDS} rounds)"
            ),
            true,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ListenerSpec {
        crate::sim_tests::http(80, 8080)
    }

    #[test]
    fn listener_specs_are_checked_field_by_field() {
        assert!(check_listener(&spec()).is_ok());
        let message = |change: &dyn Fn(&mut ListenerSpec)| {
            let mut s = spec();
            change(&mut s);
            check_listener(&s).unwrap_err().message
        };
        for (field, change) in [
            (
                "spec.port",
                &(|s: &mut ListenerSpec| s.port = 0) as &dyn Fn(&mut ListenerSpec),
            ),
            ("spec.backend-port", &|s| s.backend_port = 0),
            ("spec.bandwidth-mbps", &|s| s.bandwidth_mbps = 0),
            ("spec.bandwidth-mbps", &|s| s.bandwidth_mbps = 5121),
            ("spec.scheduler", &|s| s.scheduler = "sch".to_owned()),
            ("spec.health-check.interval-seconds", &|s| {
                s.health_check.interval_seconds = 51;
            }),
            ("spec.health-check.healthy-threshold", &|s| {
                s.health_check.healthy_threshold = 1;
            }),
            ("spec.health-check.unhealthy-threshold", &|s| {
                s.health_check.unhealthy_threshold = 11;
            }),
            ("spec.health-check.uri", &|s| {
                s.health_check.uri = "health".to_owned();
            }),
        ] {
            let m = message(change);
            assert!(m.starts_with(field), "{field}: {m}");
        }
    }

    #[test]
    fn white_lists_are_addresses_or_blocks_without_repeats() {
        let ok = check_white_list(&[
            " 10.0.0.1".to_owned(),
            "10.1.0.0/16".to_owned(),
            "10.0.0.1".to_owned(),
        ])
        .unwrap();
        assert_eq!(ok, ["10.0.0.1", "10.1.0.0/16"]);
        for (bad, at) in [
            ("10.0.0.1/33", "entries[1]"),
            ("host.example", "entries[1]"),
            ("10.0.0", "entries[1]"),
            ("0.0.0.0/0", "entries[1]"),
        ] {
            let m = check_white_list(&["10.0.0.9".to_owned(), bad.to_owned()])
                .unwrap_err()
                .message;
            assert!(m.starts_with(at), "{bad}: {m}");
        }
        let many: Vec<String> = (0..301)
            .map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1))
            .collect();
        assert!(
            check_white_list(&many)
                .unwrap_err()
                .message
                .starts_with("entries:")
        );
        assert_eq!(check_white_list(&many[..300]).unwrap().len(), 300);
    }

    #[test]
    fn differences_name_fields_and_ignore_what_does_not_apply() {
        let wanted = spec();
        assert!(differences(&wanted, &wanted).is_empty());
        let mut other = spec();
        other.backend_port = 9090;
        other.scheduler = "wlc".to_owned();
        assert_eq!(
            differences(&wanted, &other),
            [
                "backend-port is 9090, not 8080",
                "scheduler is wlc, not wrr"
            ]
        );
        // An HTTP check that is off compares nothing else; the path `/` is the default.
        let (mut off, mut off_too) = (spec(), spec());
        off.health_check.enabled = false;
        off_too.health_check = HealthCheck {
            enabled: false,
            uri: "/".to_owned(),
            interval_seconds: 9,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        assert!(differences(&off, &off_too).is_empty());
        let mut root = spec();
        root.health_check.uri = String::new();
        let mut slash = spec();
        slash.health_check.uri = "/".to_owned();
        assert!(differences(&root, &slash).is_empty());
    }

    #[test]
    fn create_tokens_are_aliyun_shaped_and_distinct_from_run_instances() {
        assert_eq!(create_token("k-1"), "slb-k-1");
        assert_ne!(create_token("k-1"), client_token("k-1"));
        let long = create_token(&"x".repeat(64));
        assert!(long.len() <= 64 && long.is_ascii(), "{long}");
        assert_eq!(long, create_token(&"x".repeat(64)));
    }

    #[test]
    fn new_load_balancers_are_checked() {
        let good = NewLoadBalancer {
            region: "cn-hangzhou".to_owned(),
            name: "web".to_owned(),
            address_type: AddressType::Intranet,
            subnet: Some("vsw-1".to_owned()),
            spec: Some("slb.s1.small".to_owned()),
        };
        assert!(check_new(&good, "k").is_ok());
        let message = |s: NewLoadBalancer, key: &str| check_new(&s, key).unwrap_err().message;
        assert!(message(good.clone(), "").starts_with("idempotency-key"));
        for (field, bad) in [
            (
                "spec.region",
                NewLoadBalancer {
                    region: "CN HZ".to_owned(),
                    ..good.clone()
                },
            ),
            (
                "spec.name",
                NewLoadBalancer {
                    name: String::new(),
                    ..good.clone()
                },
            ),
            (
                "spec.name",
                NewLoadBalancer {
                    name: "n".repeat(81),
                    ..good.clone()
                },
            ),
            (
                "spec.subnet",
                NewLoadBalancer {
                    subnet: Some("vsw 1".to_owned()),
                    ..good.clone()
                },
            ),
            (
                "spec.subnet",
                NewLoadBalancer {
                    address_type: AddressType::Internet,
                    ..good.clone()
                },
            ),
            (
                "spec.spec",
                NewLoadBalancer {
                    spec: Some("slb/s1".to_owned()),
                    ..good.clone()
                },
            ),
        ] {
            let m = message(bad, "k");
            assert!(m.starts_with(field), "{field}: {m}");
        }
    }
}
