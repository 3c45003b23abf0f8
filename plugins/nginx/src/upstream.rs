//! Upstreams as nginx files: names, backend addresses, the rendered block
//! and the revision stamped in its first line.

use std::fmt::Write as _;

use balancer_kit::upstream::{self as kit, Address};
pub(crate) use balancer_kit::upstream::{Upstream, check_name};

use crate::Failure;

/// The most upstreams one call may carry (the node's answer about them must
/// fit the SSH output cap).
pub(crate) const MAX_UPSTREAMS: usize = 1000;
/// What the first line of every upstream file starts with.
const HEADER: &str = "# Managed by DCP: upstream ";

/// The address as nginx's `server` takes it before `:port`: an IP literal
/// (IPv6 in brackets) or the host name as given.
pub(crate) fn server_address(address: &str) -> Result<String, Failure> {
    Ok(match kit::parse_address(address)? {
        Address::V4(ip) => ip.to_string(),
        Address::V6(ip) => format!("[{ip}]"),
        Address::Host(_) => address.to_owned(),
    })
}

/// Checks a whole call's upstreams: names, duplicates, backends.
pub(crate) fn check_all(upstreams: &[Upstream]) -> Result<(), Failure> {
    kit::check_all(upstreams, MAX_UPSTREAMS, |upstream| {
        render(upstream).map(drop)
    })
}

/// The upstream's file, exactly as the node gets it. The first line carries
/// the revision ([`revision_of`] reads it back).
pub(crate) fn render(upstream: &Upstream) -> Result<String, Failure> {
    check_name(&upstream.name)?;
    let mut text = format!(
        "{HEADER}{}, revision {}. Changes made here are overwritten.\nupstream {} {{\n",
        upstream.name, upstream.revision, upstream.name
    );
    if upstream.backends.is_empty() {
        // nginx refuses an upstream block without servers; one that is down
        // keeps the configuration valid and answers requests with 502.
        text.push_str(
            "    # No backends: a placeholder that is down, so requests get 502.\n    \
             server 127.0.0.1:9 down;\n",
        );
    }
    for backend in &upstream.backends {
        let within = |f: Failure| kit::within(&upstream.name, &f);
        let address = server_address(&backend.address).map_err(within)?;
        let (port, weight) = (backend.port, backend.weight);
        kit::check_port_and_weight(&address, port, weight).map_err(within)?;
        // nginx's weight starts at 1: weight 0 is a listed server taking
        // no traffic. max_fails=0: DCP's health checks decide, not nginx's
        // passive failure counting.
        let _ = if weight == 0 {
            writeln!(text, "    server {address}:{port} down;")
        } else {
            writeln!(
                text,
                "    server {address}:{port} weight={weight} max_fails=0;"
            )
        };
    }
    text.push_str("}\n");
    Ok(text)
}

/// The revision an upstream file's first line says it is, if it is one of
/// DCP's.
pub(crate) fn revision_of(first_line: &str) -> Option<u64> {
    let rest = first_line.strip_prefix(HEADER)?;
    let (_, rest) = rest.split_once(", revision ")?;
    let digits: &str = rest.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use balancer_kit::upstream::Backend;

    use super::*;

    #[test]
    fn renders_the_exact_format() {
        let upstream = Upstream {
            name: "web_1".to_owned(),
            backends: vec![
                Backend::new("10.0.0.5", 8080, 10),
                Backend::new("2001:db8::1", 80, 100),
                Backend::new("[::1]", 81, 1),
                Backend::new("api.internal", 9000, 0),
            ],
            revision: 42,
        };
        assert_eq!(
            render(&upstream).unwrap(),
            "# Managed by DCP: upstream web_1, revision 42. Changes made here are overwritten.\n\
             upstream web_1 {\n    \
             server 10.0.0.5:8080 weight=10 max_fails=0;\n    \
             server [2001:db8::1]:80 weight=100 max_fails=0;\n    \
             server [::1]:81 weight=1 max_fails=0;\n    \
             server api.internal:9000 down;\n\
             }\n"
        );
    }

    #[test]
    fn an_empty_upstream_is_a_placeholder_that_is_down() {
        let upstream = Upstream {
            name: "default_upstream".to_owned(),
            backends: Vec::new(),
            revision: 0,
        };
        // The test harness starts every nginx with this very file
        // (tests/src/nginx.rs), so DCP's first push replaces it.
        assert_eq!(
            render(&upstream).unwrap(),
            include_str!("../../../tests/fixtures/nginx/default_upstream.conf")
        );
    }

    #[test]
    fn the_revision_is_read_back_from_the_first_line() {
        for revision in [0, 7, u64::MAX] {
            let text = render(&Upstream {
                name: "a".to_owned(),
                backends: Vec::new(),
                revision,
            })
            .unwrap();
            assert_eq!(revision_of(text.lines().next().unwrap()), Some(revision));
        }
        assert_eq!(revision_of("upstream a {"), None);
        assert_eq!(
            revision_of("# Managed by DCP: upstream a, revision x."),
            None
        );
        assert_eq!(revision_of(""), None);
    }

    #[test]
    fn bad_names_and_backends_are_refused_by_name() {
        balancer_kit::testing::assert_bad_upstreams_refused(render, check_all);
    }
}
