//! Upstreams as HAProxy sees them: backend names, server addresses and the
//! server names DCP gives them.

use std::collections::HashMap;

use balancer_kit::upstream::{self as kit, Address, Backend};
pub(crate) use balancer_kit::upstream::{Upstream, check_name};

use crate::Failure;

/// The most upstreams one call may carry (the node's answer about them must
/// fit the SSH output cap).
pub(crate) const MAX_UPSTREAMS: usize = 500;
/// What every server name DCP gives starts with; servers named otherwise
/// are the operator's own and left alone.
pub(crate) const SERVER_PREFIX: &str = "dcp_";

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

/// The address in one canonical spelling — an IP literal (IPv6 without
/// brackets) or a host name in lower case without a trailing `.` — so one
/// backend has one server name.
pub(crate) fn canonical_address(address: &str) -> Result<String, Failure> {
    Ok(match kit::parse_address(address)? {
        Address::V4(ip) => ip.to_string(),
        Address::V6(ip) => ip.to_string(),
        Address::Host(name) => name.to_ascii_lowercase(),
    })
}

/// The HAProxy server for a backend.
pub(crate) fn server(backend: &Backend) -> Result<Server, Failure> {
    let address = canonical_address(&backend.address)?;
    let (port, weight) = (backend.port, backend.weight);
    kit::check_port_and_weight(&address, port, weight)?;
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
    let within = |f: Failure| kit::within(&upstream.name, &f);
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
    kit::check_all(upstreams, MAX_UPSTREAMS, |upstream| {
        servers(upstream).map(drop)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_named_from_address_and_port() {
        let upstream = Upstream {
            name: "web_1".to_owned(),
            backends: vec![
                Backend::new("10.0.0.5", 8080, 10),
                Backend::new("2001:DB8::1", 80, 100),
                Backend::new("[::1]", 81, 1),
                Backend::new("API.internal.", 9000, 0),
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
        balancer_kit::testing::assert_bad_upstreams_refused(servers, check_all);
        let twice = Upstream {
            name: "web".to_owned(),
            backends: vec![
                Backend::new("10.0.0.1", 80, 1),
                Backend::new("10.0.0.1", 80, 5),
            ],
            revision: 1,
        };
        assert_eq!(
            servers(&twice).unwrap_err().message,
            "upstream web: backend 10.0.0.1:80 is listed twice"
        );
        let clash = Upstream {
            name: "web".to_owned(),
            backends: vec![
                Backend::new("a-b.example", 80, 1),
                Backend::new("a.b-example", 80, 1),
            ],
            revision: 1,
        };
        assert!(
            servers(&clash)
                .unwrap_err()
                .message
                .contains("would both be HAProxy server dcp_a_b_example_80")
        );
    }
}
