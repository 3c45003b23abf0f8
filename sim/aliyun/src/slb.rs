//! SLB (`2014-05-15`, Classic Load Balancer): load balancers, HTTP and TCP
//! listeners, backend servers of the default server group, health and
//! listener white lists, with the codes of Aliyun's SLB docs (reference §3,
//! §5.8). The traffic itself is `traffic`'s.

use std::{net::Ipv4Addr, sync::Arc};

use rand::Rng;
use serde_json::{Value, json};

use crate::{
    balancers::{Backend, HealthCheck, Listener, ListenerStatus, LoadBalancer, Protocol},
    catalog,
    cloud::{Cloud, lock},
    params::Params,
    reply::{ApiError, seconds},
    tokens::Idempotency,
    world::{InstanceStatus, World},
};

/// Every action this endpoint answers; anything else is
/// `InvalidApi.NotFound`.
pub(crate) const ACTIONS: &[&str] = &[
    "CreateLoadBalancer",
    "DeleteLoadBalancer",
    "SetLoadBalancerStatus",
    "DescribeLoadBalancers",
    "DescribeLoadBalancerAttribute",
    "CreateLoadBalancerHTTPListener",
    "CreateLoadBalancerTCPListener",
    "SetLoadBalancerHTTPListenerAttribute",
    "SetLoadBalancerTCPListenerAttribute",
    "DescribeLoadBalancerHTTPListenerAttribute",
    "DescribeLoadBalancerTCPListenerAttribute",
    "StartLoadBalancerListener",
    "StopLoadBalancerListener",
    "DeleteLoadBalancerListener",
    "AddBackendServers",
    "RemoveBackendServers",
    "SetBackendServers",
    "DescribeHealthStatus",
    "SetListenerAccessControlStatus",
    "AddListenerWhiteListItem",
    "RemoveListenerWhiteListItem",
    "DescribeListenerAccessControlAttribute",
];

/// At most this many backend servers per Add/Remove/Set call.
const BACKENDS_PER_CALL: usize = 20;
/// At most this many white-list items per listener.
const WHITE_LIST_MAX: usize = 300;
/// At most this many ids in DescribeLoadBalancers' `LoadBalancerId`.
const IDS_PER_DESCRIBE: usize = 20;

/// Runs `action` for the caller `key_id`.
pub(crate) fn handle(
    cloud: &Arc<Cloud>,
    key_id: &str,
    action: &str,
    p: &Params,
) -> Result<Value, ApiError> {
    match action {
        "CreateLoadBalancer" => create_load_balancer(cloud, key_id, p),
        "DeleteLoadBalancer" => delete_load_balancer(cloud, p),
        "SetLoadBalancerStatus" => set_load_balancer_status(cloud, p),
        "DescribeLoadBalancers" => describe_load_balancers(cloud, p),
        "DescribeLoadBalancerAttribute" => describe_load_balancer_attribute(cloud, p),
        "CreateLoadBalancerHTTPListener" => create_listener(cloud, p, Protocol::Http),
        "CreateLoadBalancerTCPListener" => create_listener(cloud, p, Protocol::Tcp),
        "SetLoadBalancerHTTPListenerAttribute" => set_listener(cloud, p, Protocol::Http),
        "SetLoadBalancerTCPListenerAttribute" => set_listener(cloud, p, Protocol::Tcp),
        "DescribeLoadBalancerHTTPListenerAttribute" => describe_listener(cloud, p, Protocol::Http),
        "DescribeLoadBalancerTCPListenerAttribute" => describe_listener(cloud, p, Protocol::Tcp),
        "StartLoadBalancerListener" => start_listener(cloud, p),
        "StopLoadBalancerListener" => stop_listener(cloud, p),
        "DeleteLoadBalancerListener" => delete_listener(cloud, p),
        "AddBackendServers" => change_backends(cloud, p, Change::Add),
        "RemoveBackendServers" => change_backends(cloud, p, Change::Remove),
        "SetBackendServers" => change_backends(cloud, p, Change::Set),
        "DescribeHealthStatus" => describe_health_status(cloud, p),
        "SetListenerAccessControlStatus" => set_access_control(cloud, p),
        "AddListenerWhiteListItem" => change_white_list(cloud, p, true),
        "RemoveListenerWhiteListItem" => change_white_list(cloud, p, false),
        "DescribeListenerAccessControlAttribute" => describe_access_control(cloud, p),
        _ => Err(ApiError::api_not_found()),
    }
}

fn balancer_not_found() -> ApiError {
    ApiError::new(
        404,
        "InvalidLoadBalancerId.NotFound",
        "The specified LoadBalancerId does not exist.",
    )
}

fn listener_not_found() -> ApiError {
    ApiError::new(
        400,
        "InvalidParameter",
        "The specified resource does not exist.",
    )
}

fn configuring() -> ApiError {
    ApiError::new(
        400,
        "ServiceIsConfiguring",
        "A previous configuration of the load balancer is pending, please try again later.",
    )
}

/// The caller's load balancer: it must exist in the request's region.
fn balancer<'w>(world: &'w mut World, p: &Params) -> Result<&'w mut LoadBalancer, ApiError> {
    let region = p.region()?;
    let id = p.required("LoadBalancerId")?;
    world
        .balancer_mut(id)
        .filter(|b| b.region.id == region.id)
        .ok_or_else(balancer_not_found)
}

/// A balancer whose listeners are all settled: Aliyun refuses changes while
/// an earlier one is still being applied.
fn settled<'w>(world: &'w mut World, p: &Params) -> Result<&'w mut LoadBalancer, ApiError> {
    let lb = balancer(world, p)?;
    if lb.listeners.iter().any(|l| l.status.transitional()) {
        return Err(configuring());
    }
    Ok(lb)
}

/// `ListenerPort` (1–65535), and the listener it names with the optional
/// `ListenerProtocol`.
fn listener_port(p: &Params) -> Result<u16, ApiError> {
    let port: u32 = p
        .number("ListenerPort")?
        .ok_or_else(|| ApiError::missing("ListenerPort"))?;
    port_value(port, "ListenerPort")
}

fn port_value(port: u32, name: &str) -> Result<u16, ApiError> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ApiError::invalid(name))
}

fn listener_of<'l>(lb: &'l mut LoadBalancer, p: &Params) -> Result<&'l mut Listener, ApiError> {
    let port = listener_port(p)?;
    let protocol = p
        .value("ListenerProtocol")
        .map(|v| Protocol::parse(v).ok_or_else(|| ApiError::invalid("ListenerProtocol")))
        .transpose()?;
    lb.listener_mut(port)
        .filter(|l| protocol.is_none_or(|want| l.protocol == want))
        .ok_or_else(listener_not_found)
}

/// One of `allowed`, or `default` when absent.
fn choice<'a>(
    p: &'a Params,
    name: &str,
    allowed: &[&str],
    default: &'a str,
) -> Result<&'a str, ApiError> {
    match p.value(name) {
        None => Ok(default),
        Some(v) if allowed.contains(&v) => Ok(v),
        Some(_) => Err(ApiError::invalid(name)),
    }
}

/// An optional number within `range`.
fn bounded(
    p: &Params,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, ApiError> {
    match p.number::<i64>(name)? {
        Some(n) if !range.contains(&n) => Err(ApiError::invalid(name)),
        n => Ok(n),
    }
}

fn create_load_balancer(cloud: &Arc<Cloud>, key_id: &str, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let token = Idempotency::of(key_id, p)?;
    let address_type = choice(p, "AddressType", &["internet", "intranet"], "internet")?;
    let (zone, vswitch, vpc) = match p.value("VSwitchId") {
        Some(id) => {
            let (r, z) = catalog::vswitch(id)
                .filter(|(r, _)| r.id == region.id)
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "InvalidVSwitchId.NotExist",
                        "The specified VSwitchId does not exist.",
                    )
                })?;
            if let Some(vpc) = p.value("VpcId")
                && vpc != r.vpc_id
            {
                return Err(ApiError::invalid("VpcId"));
            }
            (z, z.vswitch_id, r.vpc_id)
        }
        None => {
            let zone = match p.value("MasterZoneId") {
                Some(id) => region
                    .zones
                    .iter()
                    .find(|z| z.id == id)
                    .ok_or_else(|| ApiError::invalid("MasterZoneId"))?,
                None => &region.zones[0],
            };
            (zone, "", "")
        }
    };
    let name = p.value("LoadBalancerName").unwrap_or("").to_owned();
    if name.chars().count() > 80 {
        return Err(ApiError::invalid("LoadBalancerName"));
    }
    let spec = choice(
        p,
        "LoadBalancerSpec",
        &[
            "slb.s1.small",
            "slb.s2.small",
            "slb.s2.medium",
            "slb.s3.small",
            "slb.s3.medium",
            "slb.s3.large",
            "slb.s4.large",
        ],
        "",
    )?;
    let pay_type = choice(p, "PayType", &["PayOnDemand", "PrePay"], "PayOnDemand")?;
    let charge = choice(
        p,
        "InternetChargeType",
        &["paybytraffic", "paybybandwidth"],
        "paybytraffic",
    )?;
    let bandwidth = bounded(p, "Bandwidth", 1..=5120)?.unwrap_or(5120);

    let mut world = lock(&cloud.world);
    if let Some(answer) = token.replay(&world) {
        return answer;
    }
    let address = world.allocate_balancer_address().ok_or_else(|| {
        ApiError::new(
            400,
            "OrderFailed",
            "The order failed: no address is left for a load balancer.",
        )
    })?;
    let id = world.new_balancer_id(region);
    let name = if name.is_empty() {
        format!("auto_named_slb_{}", &id[3..11])
    } else {
        name
    };
    let reply = json!({
        "LoadBalancerId": id,
        "Address": address.to_string(),
        "LoadBalancerName": name,
        "VpcId": vpc,
        "VSwitchId": vswitch,
        "NetworkType": if vswitch.is_empty() { "classic" } else { "vpc" },
        "AddressIPVersion": "ipv4",
        "ResourceGroupId": "rg-acfmdcpsim0default",
        "OrderId": rand::thread_rng().gen_range(200_000_000_000_000_u64..300_000_000_000_000).to_string(),
    });
    world.load_balancers.push(LoadBalancer {
        id,
        name,
        region,
        zone,
        address,
        address_type: address_type.to_owned(),
        network_type: if vswitch.is_empty() { "classic" } else { "vpc" }.to_owned(),
        vpc_id: vpc.to_owned(),
        vswitch_id: vswitch.to_owned(),
        spec: spec.to_owned(),
        pay_type: pay_type.to_owned(),
        internet_charge_type: charge.to_owned(),
        bandwidth: u32::try_from(bandwidth).unwrap_or(5120),
        status: "active".to_owned(),
        created_at: cloud.clock.now(),
        listeners: Vec::new(),
        backends: Vec::new(),
        health: std::collections::HashMap::new(),
    });
    token.remember(&mut world, &reply);
    Ok(reply)
}

fn delete_load_balancer(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let id = balancer(&mut world, p)?.id.clone();
    world.load_balancers.retain(|b| b.id != id);
    cloud.close_listeners(&id);
    Ok(json!({}))
}

fn set_load_balancer_status(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let status = p.required("LoadBalancerStatus")?;
    if !["active", "inactive"].contains(&status) {
        return Err(ApiError::invalid("LoadBalancerStatus"));
    }
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    if lb.status == status {
        return Ok(json!({}));
    }
    lb.status = status.to_owned();
    let id = lb.id.clone();
    let running: Vec<u16> = lb
        .listeners
        .iter()
        .filter(|l| l.status == ListenerStatus::Running)
        .map(|l| l.port)
        .collect();
    drop(world);
    if status == "inactive" {
        cloud.close_listeners(&id);
    } else {
        for port in running {
            let (cloud, id) = (Arc::clone(cloud), id.clone());
            tokio::spawn(async move { cloud.open_listener(&id, port).await });
        }
    }
    Ok(json!({}))
}

fn balancer_fields(lb: &LoadBalancer) -> serde_json::Map<String, Value> {
    let Value::Object(fields) = json!({
        "LoadBalancerId": lb.id,
        "LoadBalancerName": lb.name,
        "LoadBalancerStatus": lb.status,
        "Address": lb.address.to_string(),
        "AddressType": lb.address_type,
        "AddressIPVersion": "ipv4",
        "NetworkType": lb.network_type,
        "VpcId": lb.vpc_id,
        "VSwitchId": lb.vswitch_id,
        "RegionId": lb.region.id,
        "RegionIdAlias": lb.region.id,
        "MasterZoneId": lb.zone.id,
        "SlaveZoneId": lb.region.zones.iter().find(|z| z.id != lb.zone.id).map_or("", |z| z.id),
        "LoadBalancerSpec": lb.spec,
        "Bandwidth": lb.bandwidth,
        "InternetChargeType": lb.internet_charge_type,
        "PayType": lb.pay_type,
        "CreateTime": seconds(lb.created_at),
        "CreateTimeStamp": lb.created_at * 1000,
        "ResourceGroupId": "rg-acfmdcpsim0default",
        "Tags": { "Tag": [] },
    }) else {
        return serde_json::Map::new();
    };
    fields
}

fn describe_load_balancers(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let region = p.region()?;
    let page = p.page()?;
    let ids: Option<Vec<&str>> = p
        .value("LoadBalancerId")
        .map(|v| v.split(',').map(str::trim).collect());
    if ids.as_ref().is_some_and(|ids| ids.len() > IDS_PER_DESCRIBE) {
        return Err(ApiError::invalid("LoadBalancerId"));
    }
    let is = |name: &str, actual: &str| p.value(name).is_none_or(|v| v == actual);
    let world = lock(&cloud.world);
    let items: Vec<Value> = world
        .load_balancers
        .iter()
        .filter(|b| b.region.id == region.id)
        .filter(|b| ids.as_ref().is_none_or(|ids| ids.contains(&b.id.as_str())))
        .filter(|b| is("LoadBalancerName", &b.name))
        .filter(|b| is("AddressType", &b.address_type))
        .filter(|b| is("NetworkType", &b.network_type))
        .filter(|b| is("VpcId", &b.vpc_id))
        .filter(|b| is("VSwitchId", &b.vswitch_id))
        .filter(|b| is("Address", &b.address.to_string()))
        .filter(|b| is("LoadBalancerStatus", &b.status))
        .filter(|b| is("PayType", &b.pay_type))
        .filter(|b| {
            p.value("ServerId")
                .is_none_or(|s| b.backends.iter().any(|x| x.server_id == s))
        })
        .map(|b| Value::Object(balancer_fields(b)))
        .collect();
    Ok(Value::Object(page.answer(
        "LoadBalancers",
        "LoadBalancer",
        items,
    )))
}

fn describe_load_balancer_attribute(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?.clone();
    let mut fields = balancer_fields(&lb);
    let ports: Vec<u16> = lb.listeners.iter().map(|l| l.port).collect();
    let with_protocol: Vec<Value> = lb
        .listeners
        .iter()
        .map(|l| {
            json!({
                "ListenerPort": l.port,
                "ListenerProtocol": l.protocol.as_str(),
                "Description": l.description,
            })
        })
        .collect();
    // The legacy misspelt list too, as Aliyun still answers it.
    let misspelt: Vec<Value> = lb
        .listeners
        .iter()
        .map(|l| json!({"ListenerPort": l.port, "ListenerProtocal": l.protocol.as_str()}))
        .collect();
    fields.insert("ListenerPorts".into(), json!({ "ListenerPort": ports }));
    fields.insert(
        "ListenerPortsAndProtocol".into(),
        json!({ "ListenerPortAndProtocol": with_protocol }),
    );
    fields.insert(
        "ListenerPortsAndProtocal".into(),
        json!({ "ListenerPortAndProtocal": misspelt }),
    );
    fields.insert(
        "BackendServers".into(),
        json!({ "BackendServer": backends_json(&world, &lb, false) }),
    );
    Ok(Value::Object(fields))
}

/// The backend list; `Weight` is a number in DescribeLoadBalancerAttribute
/// and a string in the answers of Add/Remove/Set, as on Aliyun.
fn backends_json(world: &World, lb: &LoadBalancer, weight_as_text: bool) -> Vec<Value> {
    lb.backends
        .iter()
        .map(|b| {
            let ip = world
                .instance(&b.server_id)
                .map(|i| i.private_ip.to_string())
                .unwrap_or_default();
            json!({
                "ServerId": b.server_id,
                "Weight": if weight_as_text { json!(b.weight.to_string()) } else { json!(b.weight) },
                "Type": b.kind,
                "ServerIp": ip,
                "VpcId": lb.vpc_id,
                "Description": b.description,
            })
        })
        .collect()
}

/// Listener settings as a create or set call gives them; `base` holds the
/// current ones (or the defaults).
fn listener_settings(p: &Params, base: &mut Listener, creating: bool) -> Result<(), ApiError> {
    let on_off = |name: &str| choice(p, name, &["on", "off"], "");
    if let Some(port) = p.number::<u32>("BackendServerPort")? {
        base.backend_port = port_value(port, "BackendServerPort")?;
    } else if creating {
        return Err(ApiError::missing_parameter("BackendServerPort"));
    }
    if let Some(b) = p.number::<i32>("Bandwidth")? {
        if b != -1 && !(1..=5120).contains(&b) {
            return Err(ApiError::invalid("Bandwidth"));
        }
        base.bandwidth = b;
    }
    let schedulers: &[&str] = match base.protocol {
        Protocol::Http => &["wrr", "wlc", "rr"],
        Protocol::Tcp => &["wrr", "wlc", "rr", "sch", "tch"],
    };
    base.scheduler = choice(p, "Scheduler", schedulers, &base.scheduler.clone())?.to_owned();
    let description = p.value("Description").unwrap_or(&base.description);
    if description.chars().count() > 80 {
        return Err(ApiError::invalid("Description"));
    }
    base.description = description.to_owned();
    let check = &mut base.health;
    if base.protocol == Protocol::Http {
        match on_off("HealthCheck")? {
            "" if creating => return Err(ApiError::missing("HealthCheck")),
            "" => {}
            v => check.enabled = v == "on",
        }
        match on_off("StickySession")? {
            "" if creating => return Err(ApiError::missing("StickySession")),
            "" => {}
            v => base.sticky_session = v.to_owned(),
        }
        base.sticky_session_type = choice(
            p,
            "StickySessionType",
            &["insert", "server"],
            &base.sticky_session_type.clone(),
        )?
        .to_owned();
        if base.sticky_session == "on" && base.sticky_session_type.is_empty() {
            return Err(ApiError::missing_parameter("StickySessionType"));
        }
        if let Some(t) = bounded(p, "CookieTimeout", 1..=86_400)? {
            base.cookie_timeout = u32::try_from(t).ok();
        }
        if let Some(c) = p.value("Cookie") {
            base.cookie = c.to_owned();
        }
        match on_off("XForwardedFor")? {
            "" => {}
            v => base.x_forwarded_for = v.to_owned(),
        }
    } else {
        check.kind = match p.value("HealthCheckType") {
            None => check.kind,
            Some(v) => match Protocol::parse(v) {
                Some(kind) => kind,
                None => return Err(ApiError::invalid("HealthCheckType")),
            },
        };
    }
    // Aliyun's character sets: they go into the probe's request line and
    // Host header, so nothing else may.
    if let Some(uri) = p.value("HealthCheckURI") {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-/.%?#&_=~".contains(c);
        if !uri.starts_with('/') || uri.len() > 80 || !uri.chars().all(allowed) {
            return Err(ApiError::invalid("HealthCheckURI"));
        }
        check.uri = uri.to_owned();
    }
    if let Some(domain) = p.value("HealthCheckDomain") {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-.".contains(c);
        if domain.len() > 80 || !domain.chars().all(allowed) {
            return Err(ApiError::invalid("HealthCheckDomain"));
        }
        check.domain = domain.to_owned();
    }
    if let Some(port) = p.number::<u32>("HealthCheckConnectPort")? {
        check.connect_port = Some(port_value(port, "HealthCheckConnectPort")?);
    }
    if let Some(n) = bounded(p, "HealthyThreshold", 2..=10)? {
        check.healthy_threshold = u32::try_from(n).unwrap_or(3);
    }
    if let Some(n) = bounded(p, "UnhealthyThreshold", 2..=10)? {
        check.unhealthy_threshold = u32::try_from(n).unwrap_or(3);
    }
    // HTTP says HealthCheckTimeout; TCP says HealthCheckConnectTimeout and
    // spells its interval `healthCheckInterval` (reference §3.2).
    let (timeout_name, interval_name) = match base.protocol {
        Protocol::Http => ("HealthCheckTimeout", "HealthCheckInterval"),
        Protocol::Tcp => ("HealthCheckConnectTimeout", "healthCheckInterval"),
    };
    if let Some(n) = bounded(p, timeout_name, 1..=300)? {
        check.timeout_secs = u32::try_from(n).unwrap_or(5);
    }
    let interval = match bounded(p, interval_name, 1..=50)? {
        Some(n) => Some(n),
        None => bounded(p, "HealthCheckInterval", 1..=50)?,
    };
    if let Some(n) = interval {
        check.interval_secs = u32::try_from(n).unwrap_or(2);
    }
    if let Some(codes) = p.value("HealthCheckHttpCode") {
        let codes: Vec<String> = codes.split(',').map(|c| c.trim().to_owned()).collect();
        let known = ["http_2xx", "http_3xx", "http_4xx", "http_5xx"];
        if codes.iter().any(|c| !known.contains(&c.as_str())) {
            return Err(ApiError::invalid("HealthCheckHttpCode"));
        }
        check.http_codes = codes;
    }
    Ok(())
}

fn new_listener(port: u16, protocol: Protocol) -> Listener {
    Listener {
        port,
        protocol,
        status: ListenerStatus::Stopped,
        generation: 0,
        backend_port: 0,
        bandwidth: -1,
        scheduler: "wrr".to_owned(),
        health: HealthCheck {
            // A TCP listener always checks its backends.
            enabled: protocol == Protocol::Tcp,
            kind: protocol,
            uri: "/".to_owned(),
            domain: String::new(),
            connect_port: None,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            timeout_secs: 5,
            interval_secs: 2,
            http_codes: vec!["http_2xx".to_owned()],
        },
        sticky_session: "off".to_owned(),
        sticky_session_type: String::new(),
        cookie_timeout: None,
        cookie: String::new(),
        x_forwarded_for: "on".to_owned(),
        description: String::new(),
        access_control: "close".to_owned(),
        white_list: Vec::new(),
    }
}

fn create_listener(cloud: &Arc<Cloud>, p: &Params, protocol: Protocol) -> Result<Value, ApiError> {
    let port = listener_port(p)?;
    if protocol == Protocol::Tcp && p.value("Bandwidth").is_none() {
        return Err(ApiError::missing("Bandwidth"));
    }
    let mut listener = new_listener(port, protocol);
    listener_settings(p, &mut listener, true)?;
    let mut world = lock(&cloud.world);
    let lb = settled(&mut world, p)?;
    if lb.listener(port).is_some() {
        return Err(ApiError::new(
            400,
            "ListenerAlreadyExists",
            "The specified listener already exists.",
        ));
    }
    lb.listeners.push(listener);
    Ok(json!({}))
}

fn set_listener(cloud: &Arc<Cloud>, p: &Params, protocol: Protocol) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = settled(&mut world, p)?;
    let id = lb.id.clone();
    let listener = listener_of(lb, p)?;
    if listener.protocol != protocol {
        return Err(listener_not_found());
    }
    let mut changed = listener.clone();
    listener_settings(p, &mut changed, false)?;
    *listener = changed;
    if listener.status == ListenerStatus::Running {
        // Applied over a moment, as on Aliyun; traffic keeps flowing.
        listener.status = ListenerStatus::Configuring;
        listener.generation += 1;
        let (port, generation) = (listener.port, listener.generation);
        cloud.settle_listener(id, port, generation, ListenerStatus::Running);
    }
    Ok(json!({}))
}

fn describe_listener(
    cloud: &Arc<Cloud>,
    p: &Params,
    protocol: Protocol,
) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    let id = lb.id.clone();
    let l = listener_of(lb, p)?;
    if l.protocol != protocol {
        return Err(listener_not_found());
    }
    let mut body = json!({
        "LoadBalancerId": id,
        "ListenerPort": l.port,
        "BackendServerPort": l.backend_port,
        "Bandwidth": l.bandwidth,
        "Status": l.status.as_str(),
        "Scheduler": l.scheduler,
        "HealthyThreshold": l.health.healthy_threshold,
        "UnhealthyThreshold": l.health.unhealthy_threshold,
        "HealthCheckConnectPort": l.health.connect_port.unwrap_or(l.backend_port),
        "HealthCheckDomain": l.health.domain,
        "HealthCheckURI": l.health.uri,
        "HealthCheckHttpCode": l.health.http_codes.join(","),
        "HealthCheckInterval": l.health.interval_secs,
        "Description": l.description,
        "AclStatus": "off",
        "AclIds": { "AclId": [] },
        "Tags": { "Tag": [] },
    });
    let extra = match protocol {
        Protocol::Http => json!({
            "HealthCheck": if l.health.enabled { "on" } else { "off" },
            "HealthCheckTimeout": l.health.timeout_secs,
            "StickySession": l.sticky_session,
            "StickySessionType": l.sticky_session_type,
            "CookieTimeout": l.cookie_timeout.unwrap_or(0),
            "Cookie": l.cookie,
            "XForwardedFor": l.x_forwarded_for,
            "Rules": { "Rule": [] },
        }),
        Protocol::Tcp => json!({
            "HealthCheck": "on",
            "HealthCheckType": l.health.kind.as_str(),
            "HealthCheckConnectTimeout": l.health.timeout_secs,
            "SynProxy": "disable",
            "PortRanges": { "PortRange": [] },
        }),
    };
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    Ok(body)
}

fn start_listener(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    let id = lb.id.clone();
    let listener = listener_of(lb, p)?;
    match listener.status {
        ListenerStatus::Running => return Ok(json!({})),
        ListenerStatus::Stopped => {}
        _ => return Err(configuring()),
    }
    listener.status = ListenerStatus::Starting;
    listener.generation += 1;
    let (port, generation) = (listener.port, listener.generation);
    drop(world);
    let starter = Arc::clone(cloud);
    cloud.background(async move {
        let cloud = starter;
        if !cloud.sleep(cloud.delays.starting).await {
            return;
        }
        // It listens before it says so.
        let (current, active) = lock(&cloud.world)
            .balancer(&id)
            .map_or((false, false), |b| {
                let current = b.listener(port).is_some_and(|l| l.generation == generation);
                (current, b.status == "active")
            });
        if !current {
            return;
        }
        if active && !cloud.open_listener(&id, port).await {
            // Aliyun would not fail here; the log says why this host did.
            tracing::error!("listener {port} of {id} could not listen");
        }
        let mut world = lock(&cloud.world);
        match world.balancer_mut(&id).and_then(|b| b.listener_mut(port)) {
            Some(l) if l.generation == generation => l.status = ListenerStatus::Running,
            _ => {
                drop(world);
                cloud.close_listener(&id, port);
            }
        }
    });
    Ok(json!({}))
}

fn stop_listener(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    let id = lb.id.clone();
    let listener = listener_of(lb, p)?;
    match listener.status {
        ListenerStatus::Stopped => return Ok(json!({})),
        ListenerStatus::Running => {}
        _ => return Err(configuring()),
    }
    listener.status = ListenerStatus::Stopping;
    listener.generation += 1;
    let (port, generation) = (listener.port, listener.generation);
    drop(world);
    cloud.close_listener(&id, port);
    cloud.settle_listener(id, port, generation, ListenerStatus::Stopped);
    Ok(json!({}))
}

fn delete_listener(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    let listener = listener_of(lb, p)?;
    if listener.status.transitional() {
        return Err(configuring());
    }
    let port = listener.port;
    lb.listeners.retain(|l| l.port != port);
    lb.health.retain(|(p, _), _| *p != port);
    let id = lb.id.clone();
    drop(world);
    cloud.close_listener(&id, port);
    Ok(json!({}))
}

impl Cloud {
    /// After the stopping or configuring delay, moves the listener to `to`
    /// unless it changed since `generation`.
    fn settle_listener(
        self: &Arc<Self>,
        lb: String,
        port: u16,
        generation: u64,
        to: ListenerStatus,
    ) {
        let cloud = Arc::clone(self);
        self.background(async move {
            if !cloud.sleep(cloud.delays.stopping).await {
                return;
            }
            let mut world = lock(&cloud.world);
            if let Some(l) = world.balancer_mut(&lb).and_then(|b| b.listener_mut(port))
                && l.generation == generation
            {
                l.status = to;
            }
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
    Set,
}

/// `BackendServers`: a JSON array of objects (strict JSON, or the
/// single-quoted form terraform sends), at most 20, each with a `ServerId`;
/// later duplicates of a server are ignored.
fn backend_list(p: &Params, change: Change) -> Result<Vec<Backend>, ApiError> {
    let text = p.required("BackendServers")?;
    let parsed: Value = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&text.replace('\'', "\"")))
        .map_err(|_| ApiError::invalid("BackendServers"))?;
    let Value::Array(items) = parsed else {
        return Err(ApiError::invalid("BackendServers"));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("BackendServers"));
    }
    if items.len() > BACKENDS_PER_CALL {
        return Err(ApiError::new(
            400,
            "TooManyBackendServers",
            format!(
                "The total number of input real servers exceeds max supported number: {BACKENDS_PER_CALL}"
            ),
        ));
    }
    let mut list: Vec<Backend> = Vec::new();
    for item in items {
        let text = |name: &str| -> Option<String> {
            match item.get(name)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let server_id = text("ServerId")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::missing_parameter("BackendServers.ServerId"))?;
        let weight = match text("Weight") {
            None if change == Change::Set => {
                return Err(ApiError::missing_parameter("BackendServers.Weight"));
            }
            None => 100,
            Some(w) => w
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|w| *w <= 100)
                .ok_or_else(|| {
                    ApiError::new(
                        400,
                        "InvalidWeight.Malformed",
                        "The specified Weight is invalid.",
                    )
                })?,
        };
        let kind = text("Type").unwrap_or_else(|| "ecs".to_owned());
        if kind != "ecs" {
            // ENI and ECI backends are not simulated.
            return Err(ApiError::invalid("BackendServers.Type"));
        }
        let description = text("Description").unwrap_or_default();
        if description.chars().count() > 80 {
            return Err(ApiError::invalid("BackendServers.Description"));
        }
        if !list.iter().any(|b| b.server_id == server_id) {
            list.push(Backend {
                server_id,
                weight,
                kind,
                description,
            });
        }
    }
    Ok(list)
}

fn change_backends(cloud: &Arc<Cloud>, p: &Params, change: Change) -> Result<Value, ApiError> {
    let asked = backend_list(p, change)?;
    let mut world = lock(&cloud.world);
    let region = p.region()?;
    if change == Change::Add {
        let usable = |b: &Backend| {
            world.instance(&b.server_id).is_some_and(|i| {
                i.region.id == region.id && !i.deleting && i.status == InstanceStatus::Running
            })
        };
        if let Some(b) = asked.iter().find(|b| !usable(b)) {
            return Err(ApiError::new(
                400,
                "ObtainIpFail",
                format!(
                    "The specified BackendServers is invalid; some of the specified backend servers do not exist or are not running: {}.",
                    b.server_id
                ),
            ));
        }
    }
    let lb = settled(&mut world, p)?;
    for b in &asked {
        let attached = lb.backends.iter().any(|x| x.server_id == b.server_id);
        match change {
            // Aliyun's docs name no code for this one (reference: "an
            // error is reported").
            Change::Add if attached => {
                return Err(ApiError::new(
                    400,
                    "InvalidParameter",
                    format!("The backend server {} has already been added.", b.server_id),
                ));
            }
            Change::Remove | Change::Set if !attached => {
                return Err(ApiError::new(
                    400,
                    "InvalidServerId.NotFound",
                    format!("The specified server is not found: {}.", b.server_id),
                ));
            }
            _ => {}
        }
    }
    match change {
        Change::Add => lb.backends.extend(asked),
        Change::Remove => {
            lb.backends
                .retain(|x| !asked.iter().any(|b| b.server_id == x.server_id));
            lb.health
                .retain(|(_, server), _| !asked.iter().any(|b| &b.server_id == server));
        }
        Change::Set => {
            for b in asked {
                if let Some(x) = lb.backends.iter_mut().find(|x| x.server_id == b.server_id) {
                    x.weight = b.weight;
                    if !b.description.is_empty() {
                        x.description = b.description;
                    }
                }
            }
        }
    }
    let lb = lb.clone();
    Ok(json!({
        "LoadBalancerId": lb.id,
        "BackendServers": { "BackendServer": backends_json(&world, &lb, true) },
    }))
}

fn describe_health_status(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let port = p
        .number::<u32>("ListenerPort")?
        .map(|n| port_value(n, "ListenerPort"))
        .transpose()?;
    let protocol = p
        .value("ListenerProtocol")
        .map(|v| Protocol::parse(v).ok_or_else(|| ApiError::invalid("ListenerProtocol")))
        .transpose()?;
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?.clone();
    let mut rows = Vec::new();
    for l in lb
        .listeners
        .iter()
        .filter(|l| port.is_none_or(|p| p == l.port))
        .filter(|l| protocol.is_none_or(|p| p == l.protocol))
    {
        for b in &lb.backends {
            let ip = world
                .instance(&b.server_id)
                .map(|i| i.private_ip.to_string())
                .unwrap_or_default();
            rows.push(json!({
                "ServerId": b.server_id,
                "ServerIp": ip,
                "Port": l.backend_port,
                "ListenerPort": l.port,
                "Protocol": l.protocol.as_str(),
                "ServerHealthStatus": lb.health_of(l.port, &b.server_id).as_str(),
                "Type": b.kind,
                "EniHost": "",
            }));
        }
    }
    Ok(json!({ "BackendServers": { "BackendServer": rows } }))
}

fn set_access_control(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let status = p.required("AccessControlStatus")?;
    if !["open_white_list", "close"].contains(&status) {
        return Err(ApiError::invalid("AccessControlStatus"));
    }
    let mut world = lock(&cloud.world);
    let lb = settled(&mut world, p)?;
    listener_of(lb, p)?.access_control = status.to_owned();
    Ok(json!({}))
}

/// `SourceItems`: addresses and CIDR blocks, comma-separated.
fn source_items(p: &Params) -> Result<Vec<String>, ApiError> {
    let items: Vec<String> = p
        .required("SourceItems")?
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    // Everyone (0.0.0.0, 0.0.0.0/0) is no white list: Aliyun refuses it.
    let valid = |item: &str| {
        let (base, bits) = item.split_once('/').unwrap_or((item, "32"));
        base.parse::<Ipv4Addr>().is_ok_and(|b| !b.is_unspecified())
            && bits.parse::<u8>().is_ok_and(|b| b <= 32)
    };
    if items.is_empty() {
        return Err(ApiError::invalid("SourceItems"));
    }
    if items.iter().any(|i| !valid(i)) {
        return Err(ApiError::new(
            400,
            "IpListItemFormatError",
            "please check the ip list item format error.",
        ));
    }
    Ok(items)
}

fn change_white_list(cloud: &Arc<Cloud>, p: &Params, add: bool) -> Result<Value, ApiError> {
    let items = source_items(p)?;
    let mut world = lock(&cloud.world);
    let lb = settled(&mut world, p)?;
    let listener = listener_of(lb, p)?;
    if add {
        let fresh: Vec<String> = items
            .into_iter()
            .filter(|i| !listener.white_list.contains(i))
            .collect();
        if listener.white_list.len() + fresh.len() > WHITE_LIST_MAX {
            return Err(ApiError::new(
                400,
                "SourceItemsQuotaOverLimit",
                format!("The maximum number of SourceItems ({WHITE_LIST_MAX}) is exceeded."),
            ));
        }
        listener.white_list.extend(fresh);
    } else {
        listener.white_list.retain(|i| !items.contains(i));
    }
    Ok(json!({}))
}

fn describe_access_control(cloud: &Arc<Cloud>, p: &Params) -> Result<Value, ApiError> {
    let mut world = lock(&cloud.world);
    let lb = balancer(&mut world, p)?;
    let id = lb.id.clone();
    let l = listener_of(lb, p)?;
    Ok(json!({
        "LoadBalancerId": id,
        "ListenerPort": l.port,
        "AccessControlStatus": l.access_control,
        "SourceItems": l.white_list.join(","),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::params;

    #[test]
    fn backend_lists_take_both_quotings_and_hold_twenty() {
        let strict = params(&[(
            "BackendServers",
            r#"[{"ServerId":"i-a","Weight":"50"},{"ServerId":"i-a"}]"#,
        )]);
        let list = backend_list(&strict, Change::Add).unwrap();
        assert_eq!(list.len(), 1, "a later duplicate is ignored");
        assert_eq!(list[0].weight, 50);
        let terraform = params(&[(
            "BackendServers",
            "[{'ServerId':'i-b','Weight':'100', 'Type': 'ecs'}]",
        )]);
        assert_eq!(
            backend_list(&terraform, Change::Add).unwrap()[0].server_id,
            "i-b"
        );
        let many: Vec<String> = (0..21)
            .map(|i| format!(r#"{{"ServerId":"i-{i}"}}"#))
            .collect();
        let many = params(&[("BackendServers", &format!("[{}]", many.join(",")))]);
        assert_eq!(
            backend_list(&many, Change::Add).unwrap_err().code,
            "TooManyBackendServers"
        );
        let heavy = params(&[("BackendServers", r#"[{"ServerId":"i-a","Weight":"101"}]"#)]);
        assert!(backend_list(&heavy, Change::Add).is_err());
        let unweighed = params(&[("BackendServers", r#"[{"ServerId":"i-a"}]"#)]);
        assert!(
            backend_list(&unweighed, Change::Set).is_err(),
            "Set needs a weight"
        );
    }

    #[test]
    fn white_list_items_are_addresses_or_blocks() {
        let ok = params(&[("SourceItems", "127.27.9.9, 127.28.0.0/16")]);
        assert_eq!(source_items(&ok).unwrap().len(), 2);
        for bad in ["", "127.27.9.9/40", "host.example", "127.27.9", "0.0.0.0/0"] {
            assert!(
                source_items(&params(&[("SourceItems", bad)])).is_err(),
                "{bad}"
            );
        }
    }
}
