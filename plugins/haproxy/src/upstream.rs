//! Upstreams as HAProxy sees them: backend names, server addresses and the
//! server names DCP gives them.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, Ipv6Addr},
};

use crate::Failure;

/// The most upstreams one call may carry (the node's answer about them must
/// fit the SSH output cap).
pub(crate) const MAX_UPSTREAMS: usize = 500;
/// The highest backend weight (the contract's 0–100; HAProxy takes 0–256).
const MAX_WEIGHT: u32 = 100;
/// What every server name DCP gives starts with; servers named otherwise
/// are the operator's own and left alone.
pub(crate) const SERVER_PREFIX: &str = "dcp_";

/// A backend, as the contract gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    /// An IPv4 or IPv6 literal, or a host name.
    pub(crate) address: String,
    /// Its port.
    pub(crate) port: u16,
    /// 0–100; 0 keeps it listed but sends it no new traffic (drain).
    pub(crate) weight: u32,
}

/// An upstream's desired members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// `[A-Za-z0-9_-]{1,64}`: the HAProxy backend of the same name.
    pub(crate) name: String,
    /// In DCP's order.
    pub(crate) backends: Vec<Backend>,
    /// DCP's revision of this membership.
    pub(crate) revision: u64,
}

/// A backend as an HAProxy server: its name and `<address>:<port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// `dcp_<address>_<port>`, every character of the address that is not a
    /// letter or digit made `_`.
    pub(crate) name: String,
    /// As `add server` and a `server` line take it (IPv6 in brackets).
    pub(crate) address: String,
    /// 0–100.
    pub(crate) weight: u32,
}

/// Checks an upstream name: it is an HAProxy backend name, put in Runtime
/// API commands and shell text.
pub(crate) fn check_name(name: &str) -> Result<(), Failure> {
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

/// The address in one canonical spelling — an IP literal (IPv6 without
/// brackets) or a host name of letters, digits, `.`, `-` and `_` — so one
/// backend has one server name.
pub(crate) fn canonical_address(address: &str) -> Result<String, Failure> {
    if let Ok(ip) = address.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    let unbracketed = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if let Ok(ip) = unbracketed.parse::<Ipv6Addr>() {
        return Ok(ip.to_string());
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
    Ok(name.to_ascii_lowercase())
}

/// The HAProxy server for a backend.
pub(crate) fn server(backend: &Backend) -> Result<Server, Failure> {
    let address = canonical_address(&backend.address)?;
    let (port, weight) = (backend.port, backend.weight);
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
    let flat: String = address
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    Ok(Server {
        name: format!("{SERVER_PREFIX}{flat}_{port}"),
        address: format!("{host}:{port}"),
        weight,
    })
}

/// An upstream's servers, in DCP's order; two backends that would share a
/// server name (the same address and port, or host names differing only
/// in `.`, `-` or `_`) are refused.
pub(crate) fn servers(upstream: &Upstream) -> Result<Vec<Server>, Failure> {
    let within =
        |f: Failure| Failure::invalid(format!("upstream {}: {}", upstream.name, f.message));
    check_name(&upstream.name)?;
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut servers = Vec::with_capacity(upstream.backends.len());
    for backend in &upstream.backends {
        let server = server(backend).map_err(within)?;
        if let Some(first) = seen.insert(server.name.clone(), server.address.clone()) {
            return Err(within(Failure::invalid(if first == server.address {
                format!("backend {} is listed twice", server.address)
            } else {
                format!(
                    "backends {first} and {} would both be HAProxy server {}",
                    server.address, server.name
                )
            })));
        }
        servers.push(server);
    }
    Ok(servers)
}

/// Checks a whole call's upstreams: names, duplicates, backends.
pub(crate) fn check_all(upstreams: &[Upstream]) -> Result<(), Failure> {
    if upstreams.len() > MAX_UPSTREAMS {
        return Err(Failure::invalid(format!(
            "upstreams: {} given, at most {MAX_UPSTREAMS} per call",
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
        servers(upstream)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(address: &str, port: u16, weight: u32) -> Backend {
        Backend {
            address: address.to_owned(),
            port,
            weight,
        }
    }

    #[test]
    fn servers_are_named_from_address_and_port() {
        let upstream = Upstream {
            name: "web_1".to_owned(),
            backends: vec![
                backend("10.0.0.5", 8080, 10),
                backend("2001:DB8::1", 80, 100),
                backend("[::1]", 81, 1),
                backend("API.internal.", 9000, 0),
            ],
            revision: 42,
        };
        let servers = servers(&upstream).unwrap();
        let got: Vec<(&str, &str, u32)> = servers
            .iter()
            .map(|s| (s.name.as_str(), s.address.as_str(), s.weight))
            .collect();
        assert_eq!(
            got,
            [
                ("dcp_10_0_0_5_8080", "10.0.0.5:8080", 10),
                ("dcp_2001_db8__1_80", "[2001:db8::1]:80", 100),
                ("dcp___1_81", "[::1]:81", 1),
                ("dcp_api_internal_9000", "api.internal:9000", 0),
            ]
        );
    }

    #[test]
    fn bad_names_and_backends_are_refused_by_name() {
        for name in ["", "a b", "a;b", "a/b", "ä", &"x".repeat(65)] {
            assert!(check_name(name).is_err(), "{name:?}");
        }
        check_name(&"x".repeat(64)).unwrap();
        check_name("A-z_0").unwrap();
        for (address, port, weight, words) in [
            ("10.0.0.5;", 80, 1, "10.0.0.5;"),
            ("$(reboot)", 80, 1, "host name"),
            ("a b", 80, 1, "host name"),
            ("a'b", 80, 1, "host name"),
            ("-x.example", 80, 1, "host name"),
            ("999.1.1.1", 80, 1, "IPv4"),
            ("", 80, 1, "1 to 253"),
            ("fe80::1%eth0", 80, 1, "host name"),
            ("10.0.0.5", 0, 1, "port 0"),
            ("10.0.0.5", 80, 101, "weight 101"),
        ] {
            let upstream = Upstream {
                name: "web".to_owned(),
                backends: vec![backend(address, port, weight)],
                revision: 1,
            };
            let message = servers(&upstream).unwrap_err().message;
            assert!(message.starts_with("upstream web: "), "{message}");
            assert!(message.contains(words), "{address}: {message}");
        }
        let twice = Upstream {
            name: "web".to_owned(),
            backends: vec![backend("10.0.0.1", 80, 1), backend("10.0.0.1", 80, 5)],
            revision: 1,
        };
        assert_eq!(
            servers(&twice).unwrap_err().message,
            "upstream web: backend 10.0.0.1:80 is listed twice"
        );
        let clash = Upstream {
            name: "web".to_owned(),
            backends: vec![backend("a-b.example", 80, 1), backend("a.b-example", 80, 1)],
            revision: 1,
        };
        assert!(
            servers(&clash)
                .unwrap_err()
                .message
                .contains("would both be HAProxy server dcp_a_b_example_80")
        );
        let empty = Upstream {
            name: "web".to_owned(),
            backends: Vec::new(),
            revision: 1,
        };
        let message = check_all(&[empty.clone(), empty]).unwrap_err().message;
        assert_eq!(message, "upstream web: listed twice");
    }
}
