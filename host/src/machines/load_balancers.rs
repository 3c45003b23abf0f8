//! A cloud account's own load balancers (OpenDCP's jupiter SLB pages),
//! through the account's provider plugin when it exports `load-balancers`.
//!
//! Inputs are checked here, whole, before the cloud is called, so a bad
//! request is a 422 naming its fields rather than the cloud's refusal. The
//! plugin's answers are the domain records; `api/` maps them.

use std::net::Ipv4Addr;

use dcp_api_types::{
    CloudLoadBalancerInput, LbAddressType, LbTargetStatus, ListenerHealthCheck, ListenerInput,
    ListenerProtocol, Scheduler,
};
use serde_json::Value;

use super::{Error, Machines, account_secrets};
use crate::{
    discovery,
    plugins::{self, CloudLoadBalancers, ErrorKind, Failure, WasmPlugin, cloud_lb},
    validate::{self, Checks, Invalid},
};

/// Most white-list entries a listener takes (Aliyun's limit).
pub const WHITE_LIST_MAX: usize = 300;
/// Longest load balancer name.
const NAME_MAX: usize = 80;

/// A discovery unit with a node on a load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedUnit {
    /// The unit's id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// A load balancer as the cloud describes it, with the discovery units
/// whose nodes push to it.
#[derive(Debug, Clone)]
pub struct Detail {
    /// What the cloud says.
    pub cloud: cloud_lb::LoadBalancerDetail,
    /// Units with a node on it.
    pub served_by: Vec<ServedUnit>,
}

impl Machines {
    /// The account's provider plugin, bound to the account, as the manager
    /// of its load balancers; 409 when the plugin does not manage them.
    async fn load_balancers_of(&self, account_id: i64) -> Result<WasmPlugin, Error> {
        let account = self.store.account(account_id).await?;
        let secrets = account_secrets(&self.vault, &account)?;
        // An inactive provider is a 503 (from here), a provider without
        // the export a 409.
        let plugin = self.bind_plugin(&account.provider, &account.config, secrets)?;
        if !plugin.manages_load_balancers() {
            return Err(Error::Conflict(format!(
                "account {:?}: its cloud-provider plugin {:?} does not manage load balancers",
                account.name, account.provider
            )));
        }
        Ok(plugin)
    }

    /// The load balancers of an account in `region`.
    pub async fn cloud_load_balancers(
        &self,
        account_id: i64,
        region: &str,
    ) -> Result<Vec<cloud_lb::LoadBalancer>, Error> {
        region_id(region)?;
        let cloud = self.load_balancers_of(account_id).await?;
        cloud.list_load_balancers(region).await.map_err(cloud_error)
    }

    /// One load balancer with its listeners, backends' health, and the
    /// discovery units that serve through it.
    pub async fn cloud_load_balancer(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
    ) -> Result<Detail, Error> {
        located(region, id)?;
        let cloud = self.load_balancers_of(account_id).await?;
        let detail = cloud
            .describe_load_balancer(region, id)
            .await
            .map_err(cloud_error)?;
        Ok(Detail {
            cloud: detail,
            served_by: self.units_on(account_id, id).await?,
        })
    }

    /// Creates a load balancer; `key` makes a retry answer the first one.
    pub async fn create_cloud_load_balancer(
        &self,
        account_id: i64,
        input: &CloudLoadBalancerInput,
        key: &str,
    ) -> Result<cloud_lb::LoadBalancer, Error> {
        let mut checks = Checks::default();
        checks.check(region_id(&input.region));
        checks.check(validate::name("name", &input.name, NAME_MAX));
        for (field, value) in [("subnet", &input.subnet), ("spec", &input.spec)] {
            if let Some(value) = value {
                checks.check(cloud_id(field, value));
            }
        }
        checks.finish()?;
        let cloud = self.load_balancers_of(account_id).await?;
        let spec = cloud_lb::LoadBalancerSpec {
            region: input.region.clone(),
            name: input.name.clone(),
            address_type: match input.address_type {
                LbAddressType::Internet => cloud_lb::AddressType::Internet,
                LbAddressType::Intranet => cloud_lb::AddressType::Intranet,
            },
            subnet: input.subnet.clone(),
            spec: input.spec.clone(),
        };
        cloud
            .create_load_balancer(&spec, key)
            .await
            .map_err(cloud_error)
    }

    /// Deletes a load balancer no discovery unit serves through (409 naming
    /// the units); a gone one is not an error.
    pub async fn delete_cloud_load_balancer(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
    ) -> Result<(), Error> {
        located(region, id)?;
        let cloud = self.load_balancers_of(account_id).await?;
        let units = self.units_on(account_id, id).await?;
        if !units.is_empty() {
            let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
            return Err(Error::Conflict(format!(
                "load balancer {id} serves the discovery unit(s) {}: remove their nodes first",
                names.join(", ")
            )));
        }
        cloud
            .delete_load_balancer(region, id)
            .await
            .map_err(cloud_error)
    }

    /// Activates or stops a load balancer.
    pub async fn set_cloud_load_balancer_status(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
        status: LbTargetStatus,
    ) -> Result<(), Error> {
        located(region, id)?;
        let status = match status {
            LbTargetStatus::Active => cloud_lb::LoadBalancerStatus::Active,
            LbTargetStatus::Inactive => cloud_lb::LoadBalancerStatus::Inactive,
        };
        let cloud = self.load_balancers_of(account_id).await?;
        cloud
            .set_load_balancer_status(region, id, status)
            .await
            .map_err(cloud_error)
    }

    /// Creates a listener (stopped); the same listener again is not an error.
    pub async fn create_cloud_listener(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
        input: &ListenerInput,
    ) -> Result<(), Error> {
        located(region, id)?;
        let spec = listener_spec(input)?;
        let cloud = self.load_balancers_of(account_id).await?;
        cloud
            .create_listener(region, id, &spec)
            .await
            .map_err(cloud_error)
    }

    /// Starts or stops a listener.
    pub async fn set_cloud_listener_running(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
        port: u16,
        running: bool,
    ) -> Result<(), Error> {
        located(region, id)?;
        listener_port("port", port)?;
        let cloud = self.load_balancers_of(account_id).await?;
        cloud
            .set_listener_running(region, id, port, running)
            .await
            .map_err(cloud_error)
    }

    /// Deletes a listener; a gone one is not an error.
    pub async fn delete_cloud_listener(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
        port: u16,
    ) -> Result<(), Error> {
        located(region, id)?;
        listener_port("port", port)?;
        let cloud = self.load_balancers_of(account_id).await?;
        cloud
            .delete_listener(region, id, port)
            .await
            .map_err(cloud_error)
    }

    /// Makes a listener's white list exactly `entries`, enforced or not.
    pub async fn set_cloud_white_list(
        &self,
        account_id: i64,
        region: &str,
        id: &str,
        port: u16,
        enabled: bool,
        entries: &[String],
    ) -> Result<(), Error> {
        located(region, id)?;
        listener_port("port", port)?;
        white_list(entries)?;
        let cloud = self.load_balancers_of(account_id).await?;
        cloud
            .set_white_list(region, id, port, enabled, entries)
            .await
            .map_err(cloud_error)
    }

    /// The discovery units with a node of `account_id` on load balancer `id`.
    async fn units_on(&self, account_id: i64, id: &str) -> Result<Vec<ServedUnit>, Error> {
        let mut units: Vec<ServedUnit> = Vec::new();
        for node in self.store.account_lb_nodes(account_id).await? {
            let settings: Value =
                serde_json::from_str(&discovery::merged(&node.config, &node.settings))
                    .unwrap_or_default();
            let serves = settings.get("load_balancer_id").and_then(Value::as_str) == Some(id);
            if serves && units.last().is_none_or(|u| u.id != node.unit_id) {
                units.push(ServedUnit {
                    id: node.unit_id,
                    name: node.unit_name,
                });
            }
        }
        Ok(units)
    }
}

/// What the cloud's answer means to the caller: a missing thing is a 404,
/// a clash a 409, a refused input a 422; anything else is the cloud's
/// failure (502).
fn cloud_error(e: plugins::Error) -> Error {
    match &e.failure {
        Failure::Plugin(p) => match p.kind {
            ErrorKind::NotFound => Error::Missing(p.message.clone()),
            ErrorKind::Conflict => Error::Conflict(p.message.clone()),
            ErrorKind::InvalidInput => Invalid::new("body", p.message.clone()).into(),
            _ => Error::Cloud(e),
        },
        _ => Error::Cloud(e),
    }
}

/// A region id: `cn-hangzhou`.
fn region_id(region: &str) -> Result<(), Invalid> {
    let ok = (1..=64).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            "region",
            "must be a region id: 1–64 lowercase letters, digits and '-' (e.g. cn-hangzhou)",
        ))
    }
}

/// A cloud's id of something: `lb-bp1o94dp5i6ea0000`, `vsw-…`, `slb.s1.small`.
fn cloud_id(field: &'static str, value: &str) -> Result<(), Invalid> {
    let ok = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "must be 1–64 letters, digits, '.', '_' and '-'",
        ))
    }
}

/// A load balancer's region and id.
fn located(region: &str, id: &str) -> Result<(), Invalid> {
    let mut checks = Checks::default();
    checks.check(region_id(region));
    checks.check(cloud_id("lb", id));
    checks.finish()
}

fn listener_port(field: &'static str, port: u16) -> Result<(), Invalid> {
    if port == 0 {
        Err(Invalid::new(field, "must be between 1 and 65535"))
    } else {
        Ok(())
    }
}

fn in_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), Invalid> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!("must be between {min} and {max}"),
        ))
    }
}

/// A listener as the plugin takes it, after checking every field.
fn listener_spec(input: &ListenerInput) -> Result<cloud_lb::ListenerSpec, Invalid> {
    let ListenerHealthCheck {
        enabled,
        uri,
        interval_seconds,
        healthy_threshold,
        unhealthy_threshold,
    } = &input.health_check;
    let mut checks = Checks::default();
    checks.check(listener_port("port", input.port));
    checks.check(listener_port("backend_port", input.backend_port));
    if !(input.bandwidth_mbps == -1 || (1..=5120).contains(&input.bandwidth_mbps)) {
        checks.check(Err(Invalid::new(
            "bandwidth_mbps",
            "must be -1 (no cap) or between 1 and 5120",
        )));
    }
    checks.check(in_range(
        "health_check.interval_seconds",
        *interval_seconds,
        1,
        50,
    ));
    checks.check(in_range(
        "health_check.healthy_threshold",
        *healthy_threshold,
        2,
        10,
    ));
    checks.check(in_range(
        "health_check.unhealthy_threshold",
        *unhealthy_threshold,
        2,
        10,
    ));
    let http = input.protocol == ListenerProtocol::Http;
    if http
        && (!uri.starts_with('/') || uri.len() > 80 || !uri.bytes().all(|b| b.is_ascii_graphic()))
    {
        checks.check(Err(Invalid::new(
            "health_check.uri",
            "must start with '/' and be at most 80 printable ASCII characters",
        )));
    }
    checks.finish()?;
    Ok(cloud_lb::ListenerSpec {
        port: input.port,
        protocol: if http {
            cloud_lb::ListenerProtocol::Http
        } else {
            cloud_lb::ListenerProtocol::Tcp
        },
        backend_port: input.backend_port,
        bandwidth_mbps: input.bandwidth_mbps,
        scheduler: match input.scheduler {
            Scheduler::Wrr => "wrr",
            Scheduler::Wlc => "wlc",
            Scheduler::Rr => "rr",
        }
        .to_owned(),
        health_check: cloud_lb::HealthCheck {
            // A TCP listener always checks on the cloud's side.
            enabled: *enabled || !http,
            uri: if http { uri.clone() } else { String::new() },
            interval_seconds: *interval_seconds,
            healthy_threshold: *healthy_threshold,
            unhealthy_threshold: *unhealthy_threshold,
        },
    })
}

/// White-list entries: IPv4 addresses or CIDR blocks, at most
/// [`WHITE_LIST_MAX`] (a repeated one is kept once by the plugin).
fn white_list(entries: &[String]) -> Result<(), Invalid> {
    if entries.len() > WHITE_LIST_MAX {
        return Err(Invalid::new(
            "entries",
            format!("takes at most {WHITE_LIST_MAX} entries"),
        ));
    }
    for (i, entry) in entries.iter().enumerate() {
        let (address, bits) = match entry.split_once('/') {
            Some((address, bits)) => (address, Some(bits)),
            None => (entry.as_str(), None),
        };
        let bits_ok = bits.is_none_or(|b| {
            (1..=2).contains(&b.len())
                && !b.starts_with('0')
                && b.bytes().all(|c| c.is_ascii_digit())
                && b.parse::<u8>().is_ok_and(|b| (1..=32).contains(&b))
        });
        if address.parse::<Ipv4Addr>().is_err() || !bits_ok {
            return Err(Invalid::new(
                format!("entries[{i}]"),
                format!(
                    "{entry:?} is not an IPv4 address or CIDR block of 1–32 bits (e.g. 10.0.0.0/8)"
                ),
            ));
        }
        // SLB refuses "everyone"; 0.0.0.0/8 is no client's address.
        if address.starts_with("0.") {
            return Err(Invalid::new(
                format!("entries[{i}]"),
                format!("{entry:?} is in 0.0.0.0/8: a white list names who may connect"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(protocol: ListenerProtocol) -> ListenerInput {
        ListenerInput {
            port: 80,
            protocol,
            backend_port: 8080,
            bandwidth_mbps: -1,
            scheduler: Scheduler::Wrr,
            health_check: ListenerHealthCheck::default(),
        }
    }

    #[test]
    fn a_listener_names_every_broken_field_at_once() {
        let mut input = listener(ListenerProtocol::Http);
        input.port = 0;
        input.bandwidth_mbps = 0;
        input.health_check.interval_seconds = 51;
        input.health_check.uri = "healthz".into();
        let err = listener_spec(&input).unwrap_err();
        let mut fields = vec![err.field.to_string()];
        fields.extend(err.also.iter().map(|i| i.field.to_string()));
        assert_eq!(
            fields,
            [
                "port",
                "bandwidth_mbps",
                "health_check.interval_seconds",
                "health_check.uri"
            ]
        );
    }

    #[test]
    fn a_tcp_listener_always_checks_and_sends_no_uri() {
        let mut input = listener(ListenerProtocol::Tcp);
        input.health_check.enabled = false;
        input.health_check.uri = "not a path".into();
        let spec = listener_spec(&input).unwrap();
        assert!(spec.health_check.enabled);
        assert_eq!(spec.health_check.uri, "");
        assert_eq!(spec.scheduler, "wrr");
    }

    #[test]
    fn white_list_entries_are_ipv4_addresses_or_blocks_named_by_index() {
        assert!(white_list(&["10.0.0.0/8".into(), "127.0.0.1".into()]).is_ok());
        for (bad, why) in [
            ("10.0.0.0/33", "not an IPv4"),
            ("10.0.0.0/0", "not an IPv4"),
            ("10.0.0.0/+8", "not an IPv4"),
            ("10.0.0.0/08", "not an IPv4"),
            ("0.0.0.0", "0.0.0.0/8"),
            ("example.com", "not an IPv4"),
            ("::1", "not an IPv4"),
        ] {
            let err = white_list(&["10.0.0.1".into(), bad.into()]).unwrap_err();
            assert_eq!(err.field, "entries[1]", "{bad}");
            assert!(err.message.contains(why), "{bad}: {}", err.message);
        }
        let many: Vec<String> = (0..=WHITE_LIST_MAX)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        assert_eq!(white_list(&many).unwrap_err().field, "entries");
    }

    #[test]
    fn ids_and_regions_are_checked_together() {
        let err = located("CN HZ", "lb-1;rm").unwrap_err();
        assert_eq!(err.field, "region");
        assert_eq!(err.also[0].field, "lb");
    }
}
