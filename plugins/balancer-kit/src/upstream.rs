//! The contract's upstreams and backends, and the checks every balancer
//! makes of them: an upstream's name, a backend's address, port and
//! weight, a whole call's upstreams.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::Failure;

/// The highest backend weight (the contract's 0–100).
pub const MAX_WEIGHT: u32 = 100;

/// A backend, as the contract gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// An IPv4 or IPv6 literal, or a host name.
    pub address: String,
    /// Its port.
    pub port: u16,
    /// 0–100; 0 keeps it listed but sends it no new traffic.
    pub weight: u32,
}

impl Backend {
    /// A backend at `address`:`port` with `weight`.
    pub fn new(address: &str, port: u16, weight: u32) -> Self {
        Self {
            address: address.to_owned(),
            port,
            weight,
        }
    }
}

/// An upstream's desired members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its name (`[A-Za-z0-9_-]{1,64}` where [`check_name`] checks it).
    pub name: String,
    /// In DCP's order.
    pub backends: Vec<Backend>,
    /// DCP's revision of this membership.
    pub revision: u64,
}

/// Checks an upstream name: it becomes a file name, a balancer's
/// identifier, shell text.
pub fn check_name(name: &str) -> Result<(), Failure> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "upstream name {name:?}: must be 1 to 64 letters, digits, _ or -"
        )))
    }
}

/// A backend address, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address<'a> {
    /// An IPv4 literal.
    V4(Ipv4Addr),
    /// An IPv6 literal, given with or without brackets.
    V6(Ipv6Addr),
    /// A host name of letters, digits, `.`, `-` and `_`, without the
    /// trailing `.` it may be given with.
    Host(&'a str),
}

/// Checks a backend address: an IP literal (IPv6 with or without
/// brackets) or a host name of letters, digits, `.`, `-` and `_`.
pub fn parse_address(address: &str) -> Result<Address<'_>, Failure> {
    if let Ok(ip) = address.parse::<Ipv4Addr>() {
        return Ok(Address::V4(ip));
    }
    let unbracketed = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if let Ok(ip) = unbracketed.parse::<Ipv6Addr>() {
        return Ok(Address::V6(ip));
    }
    let bad = |why: &str| Failure::invalid(format!("backend address {address:?}: {why}"));
    let name = address.strip_suffix('.').unwrap_or(address);
    if name.is_empty() || name.len() > 253 {
        return Err(bad(
            "must be an IP address or a host name of 1 to 253 characters",
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("is not a valid IPv4 address"));
    }
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        if !ok {
            return Err(bad(
                "must be an IP address or a host name (labels of letters, digits, - and _)",
            ));
        }
    }
    Ok(Address::Host(name))
}

/// Checks a backend's port and weight; `address` names it.
pub fn check_port_and_weight(address: &str, port: u16, weight: u32) -> Result<(), Failure> {
    if port == 0 {
        return Err(Failure::invalid(format!(
            "backend {address}: port 0 is not a port"
        )));
    }
    if weight > MAX_WEIGHT {
        return Err(Failure::invalid(format!(
            "backend {address}:{port}: weight {weight} is above {MAX_WEIGHT}"
        )));
    }
    Ok(())
}

/// `failure` about something in `upstream`, saying so.
pub fn within(upstream: &str, failure: &Failure) -> Failure {
    Failure::invalid(format!("upstream {upstream}: {}", failure.message))
}

/// Checks a whole call's upstreams: at most `max` of them, names, each
/// listed once, and each upstream by `check` (its backends).
pub fn check_all(
    upstreams: &[Upstream],
    max: usize,
    mut check: impl FnMut(&Upstream) -> Result<(), Failure>,
) -> Result<(), Failure> {
    if upstreams.len() > max {
        return Err(Failure::invalid(format!(
            "upstreams: {} given, at most {max} per call",
            upstreams.len()
        )));
    }
    let mut seen = HashSet::new();
    for upstream in upstreams {
        check_name(&upstream.name)?;
        if !seen.insert(upstream.name.as_str()) {
            return Err(Failure::invalid(format!(
                "upstream {}: listed twice",
                upstream.name
            )));
        }
        check(upstream)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ip_literals_or_host_names() {
        assert_eq!(
            parse_address("10.0.0.5").unwrap(),
            Address::V4(Ipv4Addr::new(10, 0, 0, 5))
        );
        assert_eq!(
            parse_address("[::1]").unwrap(),
            Address::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            parse_address("2001:db8::1").unwrap(),
            parse_address("[2001:db8::1]").unwrap()
        );
        assert_eq!(
            parse_address("API.internal.").unwrap(),
            Address::Host("API.internal")
        );
        check_name(&"x".repeat(64)).unwrap();
        check_name("A-z_0").unwrap();
    }

    /// What every plugin checks of an upstream, alone.
    fn check(upstream: &Upstream) -> Result<(), Failure> {
        check_name(&upstream.name)?;
        for backend in &upstream.backends {
            let within = |f: Failure| within(&upstream.name, &f);
            parse_address(&backend.address).map_err(within)?;
            check_port_and_weight(&backend.address, backend.port, backend.weight)
                .map_err(within)?;
        }
        Ok(())
    }

    #[test]
    fn bad_upstreams_are_refused_by_name() {
        crate::testing::assert_bad_upstreams_refused(check, |upstreams| {
            check_all(upstreams, 5, check)
        });
        let web = Upstream {
            name: "web".to_owned(),
            backends: Vec::new(),
            revision: 1,
        };
        let many = check_all(&[web.clone(), web], 1, check);
        assert_eq!(
            many.unwrap_err().message,
            "upstreams: 2 given, at most 1 per call"
        );
    }
}
