//! The steps of `apply-upstreams` against SLB and ECS, over
//! `aliyun_rpc::client` (signing through the host, retries, errors
//! classified).
//!
//! Reads (DescribeLoadBalancerAttribute, the listeners, DescribeInstances,
//! DescribeHealthStatus) are retried by the client. Changes are not: an
//! Add/Remove/SetBackendServers whose reply is lost may have happened, so
//! every failed change is followed by a fresh read of the load balancer and
//! the next step computed from what SLB says it has — a lost reply never
//! adds a server twice or loses one, and SLB's busy answers
//! (`ServiceIsConfiguring`) and throttling are waited out with backoff.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
};

use aliyun_rpc::{
    client::{Api, Client, Failure, Host, Kind},
    lenient::{list, number, strings, text},
    slb::{self, BackendHealth, Health, Listener},
};
use serde_json::Value;

use crate::{
    Applied, Backend, Upstream,
    config::Config,
    plan::{self, Attached, Op, Wanted},
};

/// ECS's API version.
const ECS_VERSION: &str = "2014-05-26";
/// The most addresses one DescribeInstances filter takes, and its page size.
const LOOKUP: usize = 100;
/// How often the health of joining servers is read.
const HEALTH_POLL_MS: u64 = 500;
/// Time kept before the call's deadline to answer why servers still wait.
const DEADLINE_RESERVE_MS: u64 = 2_000;

/// What DescribeLoadBalancerAttribute says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    /// Its VPC (empty for the classic network).
    vpc_id: String,
    /// Its listeners.
    listeners: Vec<Listener>,
    /// The default server group.
    backends: Vec<Attached>,
}

fn state_of(answer: &Value) -> State {
    State {
        vpc_id: text(answer, "VpcId"),
        listeners: slb::listeners(answer),
        backends: slb::attached(answer),
    }
}

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// At most five ids, then how many more.
fn some_of(ids: &[&str]) -> String {
    let shown = ids.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match ids.len() {
        n if n > 5 => format!("{shown}, … {} more", n - 5),
        _ => shown,
    }
}

/// Checks the backends before any call: IPv4 addresses, each once, weights
/// 0–100. Answers them with their addresses in canonical form.
fn checked(backends: &[Backend]) -> Result<Vec<Backend>, Failure> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(backends.len());
    for b in backends {
        let address: Ipv4Addr = b.address.parse().map_err(|_| {
            Failure::invalid(format!(
                "backend {:?}: SLB's backends are ECS instances, found by their private IPv4 address",
                b.address
            ))
        })?;
        if b.weight > 100 {
            return Err(Failure::invalid(format!(
                "backend {address}:{}: weight {} is above SLB's 100",
                b.port, b.weight
            )));
        }
        if !seen.insert(address) {
            return Err(Failure::invalid(format!(
                "backend {address} is listed twice: SLB attaches an instance once, on the listeners' backend port"
            )));
        }
        out.push(Backend {
            address: address.to_string(),
            ..b.clone()
        });
    }
    Ok(out)
}

/// One SLB instance, reached through the client.
pub(crate) struct Slb<'a, H: Host> {
    /// Signed calls.
    pub(crate) client: Client<'a, H>,
    /// The settings.
    pub(crate) config: &'a Config,
}

impl<H: Host> Slb<'_, H> {
    fn slb(&self) -> Api<'_> {
        Api {
            endpoint: &self.config.slb_endpoint,
            version: slb::VERSION,
        }
    }

    fn ecs(&self) -> Api<'_> {
        Api {
            endpoint: &self.config.ecs_endpoint,
            version: ECS_VERSION,
        }
    }

    fn balancer_params(&self) -> Vec<(String, String)> {
        vec![
            pair("RegionId", &self.config.region),
            pair("LoadBalancerId", &self.config.load_balancer_id),
        ]
    }

    /// The load balancer as SLB has it now.
    fn read(&self) -> Result<State, Failure> {
        let answer = self.client.call(
            self.slb(),
            "DescribeLoadBalancerAttribute",
            &self.balancer_params(),
        )?;
        Ok(state_of(&answer))
    }

    /// Each listener with the backend port it sends to (none for a listener
    /// of a VServer group, or of a protocol SLB did not name), and whether
    /// it is running with health checks on (its backends take traffic only
    /// once they pass).
    fn backend_ports(
        &self,
        listeners: &[Listener],
    ) -> Result<Vec<(Listener, Option<u16>, bool)>, Failure> {
        let mut out = Vec::new();
        for l in listeners {
            let Some(action) = slb::listener_action("Describe", &l.protocol, "Attribute") else {
                out.push((l.clone(), None, false));
                continue;
            };
            let mut params = self.balancer_params();
            params.push(pair("ListenerPort", l.port.to_string()));
            let attribute =
                slb::listener_attribute(&self.client.call(self.slb(), &action, &params)?);
            let (backend_port, checks) = (attribute.backend_port, attribute.checking());
            out.push((l.clone(), backend_port, checks));
        }
        Ok(out)
    }

    /// The instances of the region (and VPC, when given) with these private
    /// addresses, by address: DescribeInstances filtered by
    /// `PrivateIpAddresses`, at most 100 addresses a call, every page.
    fn instances(
        &self,
        addresses: &[&str],
        vpc_id: &str,
    ) -> Result<HashMap<String, Vec<(String, String)>>, Failure> {
        let mut found: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for chunk in addresses.chunks(LOOKUP) {
            let wanted: HashSet<&str> = chunk.iter().copied().collect();
            let filter = serde_json::to_string(chunk)
                .map_err(|e| Failure::unexpected("DescribeInstances", e))?;
            let mut seen = 0usize;
            for page in 1..=100u32 {
                let mut params = vec![
                    pair("RegionId", &self.config.region),
                    pair("PrivateIpAddresses", filter.as_str()),
                    pair("PageNumber", page.to_string()),
                    pair("PageSize", LOOKUP.to_string()),
                ];
                if !vpc_id.is_empty() {
                    params.push(pair("VpcId", vpc_id));
                }
                let answer = self.client.call(self.ecs(), "DescribeInstances", &params)?;
                let items = list(&answer, "Instances", "Instance");
                seen += items.len();
                for i in items {
                    let vpc = i.get("VpcAttributes").unwrap_or(&Value::Null);
                    let mut ips = strings(vpc, "PrivateIpAddress", "IpAddress");
                    ips.extend(strings(i, "InnerIpAddress", "IpAddress"));
                    for ip in ips.into_iter().filter(|ip| wanted.contains(ip.as_str())) {
                        found
                            .entry(ip)
                            .or_default()
                            .push((text(i, "InstanceId"), text(i, "Status")));
                    }
                }
                let total = number(&answer, "TotalCount").unwrap_or(0.0);
                #[allow(clippy::cast_precision_loss)]
                let done = items.len() < LOOKUP || seen as f64 >= total;
                if done {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The backends' health on each listener (DescribeHealthStatus).
    pub(crate) fn health(&self) -> Result<Vec<BackendHealth>, Failure> {
        let answer =
            self.client
                .call(self.slb(), "DescribeHealthStatus", &self.balancer_params())?;
        Ok(slb::health(&answer))
    }

    /// Makes the load balancer's default server group hold exactly the
    /// members of the configured upstream (one of `upstreams`; none of them
    /// changes nothing).
    pub(crate) fn apply(&self, upstreams: &[Upstream]) -> Result<Applied, Failure> {
        let (name, lb) = (&self.config.upstream, &self.config.load_balancer_id);
        let Some(upstream) = upstreams.iter().find(|u| &u.name == name) else {
            let given: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            return Ok(Applied {
                changed: false,
                log: format!(
                    "upstream {name} is not among those given ({}): load balancer {lb} left as it is",
                    if given.is_empty() {
                        "none".to_owned()
                    } else {
                        given.join(", ")
                    }
                ),
            });
        };
        let backends = checked(&upstream.backends)?;
        let mut log = vec![format!(
            "upstream {name}, revision {}: {} backends for load balancer {lb} in {} \
             (SLB keeps no revision: its backend servers are the state, and this call makes them match)",
            upstream.revision,
            backends.len(),
            self.config.region
        )];
        let state = self.read()?;
        let checking = self.check_ports(&backends, &state.listeners, &mut log)?;
        let addresses: Vec<&str> = backends.iter().map(|b| b.address.as_str()).collect();
        let found = if addresses.is_empty() {
            HashMap::new()
        } else {
            self.instances(&addresses, &state.vpc_id)?
        };
        let mut wanted = Vec::with_capacity(backends.len());
        let mut status = HashMap::new();
        let missing: Vec<&str> = addresses
            .iter()
            .copied()
            .filter(|a| !found.contains_key(*a))
            .collect();
        if !missing.is_empty() {
            let place = if state.vpc_id.is_empty() {
                self.config.region.clone()
            } else {
                format!("{} (VPC {})", self.config.region, state.vpc_id)
            };
            return Err(Failure::invalid(format!(
                "no ECS instance in {place} has the private address {}: SLB attaches instances, found by their address",
                some_of(&missing)
            )));
        }
        for b in &backends {
            let instances = &found[&b.address];
            if let [(id, instance_status)] = instances.as_slice() {
                status.insert(id.clone(), instance_status.clone());
                wanted.push(Wanted {
                    server_id: id.clone(),
                    weight: b.weight,
                    address: b.address.clone(),
                });
            } else {
                let ids: Vec<&str> = instances.iter().map(|(id, _)| id.as_str()).collect();
                return Err(Failure::invalid(format!(
                    "backend {}: several instances have this address ({}); give the load balancer a VPC",
                    b.address,
                    ids.join(", ")
                )));
            }
        }
        let mut ids: Vec<&str> = wanted.iter().map(|w| w.server_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != wanted.len() {
            return Err(Failure::invalid(
                "two backend addresses belong to one instance: SLB attaches an instance once",
            ));
        }
        if !wanted.is_empty() {
            log.push(format!(
                "{} addresses are {} ECS instances",
                addresses.len(),
                wanted.len()
            ));
        }
        // Servers that take no traffic now and should: new, or back from 0.
        let serving: HashSet<&str> = state
            .backends
            .iter()
            .filter(|a| a.weight > 0)
            .map(|a| a.server_id.as_str())
            .collect();
        let joining: Vec<String> = wanted
            .iter()
            .filter(|w| w.weight > 0 && !serving.contains(w.server_id.as_str()))
            .map(|w| w.server_id.clone())
            .collect();
        let mut applied = self.converge(&wanted, &status, state.backends, log)?;
        let joining: Vec<&str> = joining.iter().map(String::as_str).collect();
        let mut log = vec![std::mem::take(&mut applied.log)];
        self.wait_serving(&joining, &checking, &mut log)?;
        applied.log = log.join("\n");
        Ok(applied)
    }

    /// Every backend's port must be one the listeners send to. Answers the
    /// ports of the running listeners that health-check their backends.
    fn check_ports(
        &self,
        backends: &[Backend],
        listeners: &[Listener],
        log: &mut Vec<String>,
    ) -> Result<Vec<u16>, Failure> {
        if listeners.is_empty() {
            log.push(
                "the load balancer has no listeners yet: backend ports not checked".to_owned(),
            );
            return Ok(Vec::new());
        }
        let ports = self.backend_ports(listeners)?;
        let checking: Vec<u16> = ports
            .iter()
            .filter(|(_, to, checks)| *checks && to.is_some())
            .map(|(l, _, _)| l.port)
            .collect();
        let said: Vec<String> = ports
            .iter()
            .map(|(l, to, _)| match (l.protocol.as_str(), to) {
                ("", _) => format!("listener {} (protocol unknown)", l.port),
                (p, Some(to)) => format!("listener {}/{p} → {to}", l.port),
                (p, None) => format!("listener {}/{p} → a VServer group", l.port),
            })
            .collect();
        let used: BTreeSet<u16> = ports.iter().filter_map(|(_, to, _)| *to).collect();
        if used.is_empty() {
            log.push(format!("{}: backend ports not checked", said.join(", ")));
            return Ok(checking);
        }
        let used_text = used
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" or ");
        if let Some(b) = backends.iter().find(|b| !used.contains(&b.port)) {
            return Err(Failure::invalid(format!(
                "backend {}:{}: SLB will send to port {used_text} ({}), not {}; \
                 change the backends' port or the listener's BackendServerPort",
                b.address,
                b.port,
                said.join(", "),
                b.port
            )));
        }
        log.push(said.join(", "));
        Ok(checking)
    }

    /// Waits until every server of `joining` passes the health checks of
    /// every listener in `checking`: a registered backend is one the load
    /// balancer sends traffic to, and SLB sends it none before that — so a
    /// rolling deploy that took the next node out as soon as this one was
    /// attached would leave no healthy backend. Gives up at the call's
    /// deadline with the servers still failing and SLB's verdict.
    fn wait_serving(
        &self,
        joining: &[&str],
        checking: &[u16],
        log: &mut Vec<String>,
    ) -> Result<(), Failure> {
        if joining.is_empty() || checking.is_empty() {
            return Ok(());
        }
        let host = self.client.host;
        let started = host.now_ms();
        loop {
            let health = self.health()?;
            let waiting: Vec<String> = joining
                .iter()
                .filter_map(|id| {
                    let verdicts: Vec<String> = checking
                        .iter()
                        .filter_map(|port| {
                            let on = health.iter().find(|b| b.server_id == *id).and_then(|b| {
                                b.listeners.iter().find(|l| l.listener_port == *port)
                            });
                            match on.map(|l| l.health) {
                                Some(Health::Normal) => None,
                                Some(Health::Abnormal) => Some(format!("abnormal on {port}")),
                                _ => Some(format!("no verdict yet on {port}")),
                            }
                        })
                        .collect();
                    (!verdicts.is_empty()).then(|| format!("{id} ({})", verdicts.join(", ")))
                })
                .collect();
            if waiting.is_empty() {
                log.push(format!(
                    "{} new backend servers pass the health checks of listeners {}: taking traffic after {} ms",
                    joining.len(),
                    checking.iter().map(u16::to_string).collect::<Vec<_>>().join(", "),
                    host.now_ms().saturating_sub(started)
                ));
                return Ok(());
            }
            if host.now_ms() + HEALTH_POLL_MS + DEADLINE_RESERVE_MS > host.deadline_ms() {
                return Err(Failure::new(
                    Kind::Unavailable,
                    format!(
                        "attached, but SLB sends no traffic to {} yet: its health checks have not passed \
                         (the backend servers stay attached and take traffic once they pass)",
                        waiting.join("; ")
                    ),
                    true,
                ));
            }
            host.sleep_ms(HEALTH_POLL_MS);
        }
    }

    /// Applies the steps from `attached` to `wanted` one call at a time,
    /// reading the load balancer again after each, until nothing is left.
    fn converge(
        &self,
        wanted: &[Wanted],
        status: &HashMap<String, String>,
        attached: Vec<Attached>,
        mut log: Vec<String>,
    ) -> Result<Applied, Failure> {
        let before = attached.clone();
        let mut current = attached;
        let limit = plan::steps(wanted, &current).len() * 4 + 40;
        let description = format!("dcp-{}", self.config.upstream);
        let (mut calls, mut failures) = (0usize, 0u32);
        while let Some(step) = plan::steps(wanted, &current).into_iter().next() {
            if calls >= limit {
                return Err(Failure::new(
                    Kind::Internal,
                    format!(
                        "load balancer {}: backends still differ after {calls} changes:\n{}",
                        self.config.load_balancer_id,
                        log.join("\n")
                    ),
                    true,
                ));
            }
            calls += 1;
            if step.op == Op::Add {
                for (id, _, _) in &step.servers {
                    let state = status.get(id).map_or("", String::as_str);
                    if state != "Running" {
                        let address = wanted
                            .iter()
                            .find(|w| &w.server_id == id)
                            .map_or("", |w| w.address.as_str());
                        return Err(Failure::new(
                            Kind::Conflict,
                            format!(
                                "backend {address} ({id}) is {state}: SLB attaches running instances only"
                            ),
                            true,
                        ));
                    }
                }
            }
            let action = step.op.action();
            let mut params = self.balancer_params();
            params.push(pair("BackendServers", step.backend_servers(&description)));
            let ids = step.ids();
            match self.client.call_once(self.slb(), action, &params) {
                Ok(_) => {
                    failures = 0;
                    log.push(format!("{action}: {} ({})", ids.len(), some_of(&ids)));
                }
                Err(failure) => {
                    failures += 1;
                    log.push(format!(
                        "{} ({} servers); reading the load balancer again",
                        failure.message,
                        ids.len()
                    ));
                    if failure.retryable && !self.client.pause(failures) {
                        return Err(failure);
                    }
                    current = self.read()?.backends;
                    // A refusal that the state explains (another writer got
                    // there first) is over; one it does not is the answer.
                    let next = plan::steps(wanted, &current).into_iter().next();
                    if !failure.retryable && next.as_ref() == Some(&step) {
                        return Err(failure);
                    }
                    continue;
                }
            }
            current = self.read()?.backends;
        }
        let (added, reweighted, removed) = plan::changes(&before, &current);
        let changed = added + reweighted + removed > 0;
        log.push(if changed {
            format!(
                "done: {added} added, {reweighted} re-weighted, {removed} removed; \
                 the load balancer has {} backend servers",
                current.len()
            )
        } else {
            format!(
                "nothing to change: the load balancer already has these {} backend servers",
                current.len()
            )
        });
        Ok(Applied {
            changed,
            log: log.join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(address: &str, weight: u32) -> Backend {
        Backend {
            address: address.to_owned(),
            port: 8080,
            weight,
        }
    }

    #[test]
    fn backends_are_checked_before_any_call() {
        let ok = checked(&[backend("10.0.0.1", 0), backend("10.0.0.2", 100)]).unwrap();
        assert_eq!(ok.len(), 2);
        let message = |b: &[Backend]| checked(b).unwrap_err().message;
        assert!(message(&[backend("web-1.local", 1)]).contains("\"web-1.local\""));
        assert!(message(&[backend("10.0.0.1", 101)]).contains("weight 101"));
        assert!(
            message(&[backend("10.0.0.1", 1), backend("10.0.0.1", 2)]).contains("listed twice")
        );
    }
}
