//! Which addresses a plugin's HTTP request may reach.
//!
//! A grant names an origin (`https://ecs.aliyuncs.com`); a request must match
//! one. Even then, private, loopback, link-local, metadata and other
//! special-purpose addresses are refused unless the grant says so explicitly
//! (tests grant the loopback simulator) — and the check runs on the
//! *resolved* addresses, so a public name pointing at 127.0.0.1 or
//! 169.254.169.254 is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::Url;

/// An origin a plugin may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginGrant {
    /// `http` or `https`.
    pub scheme: String,
    /// Host name or address, lowercase.
    pub host: String,
    /// The port (the scheme's default when the grant named none).
    pub port: u16,
    /// Whether the origin may resolve to non-public addresses.
    pub allow_private: bool,
}

impl OriginGrant {
    /// Parses `scheme://host[:port]`; a trailing `#private` allows
    /// non-public addresses (e.g. `http://127.20.0.5:8080#private`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (origin, allow_private) = match spec.strip_suffix("#private") {
            Some(origin) => (origin, true),
            None => (spec, false),
        };
        let url = Url::parse(origin).map_err(|e| format!("{spec:?} is not an origin: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "{spec:?}: only http and https origins can be granted"
            ));
        }
        if url.path() != "/" || url.query().is_some() {
            return Err(format!(
                "{spec:?}: grant an origin (scheme://host:port), not a path"
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("{spec:?} has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("{spec:?} has no port"))?;
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host: host.to_ascii_lowercase(),
            port,
            allow_private,
        })
    }

    /// Whether `url` is on this origin.
    #[must_use]
    pub fn matches(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&self.host))
            && url.port_or_known_default() == Some(self.port)
    }
}

impl std::fmt::Display for OriginGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)?;
        if self.allow_private {
            f.write_str("#private")?;
        }
        Ok(())
    }
}

/// Why an address is not public, if it is not.
#[must_use]
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata")
            } else if seg[0] & 0xff00 == 0xff00 {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        // 169.254.169.254 (AWS, GCP, Azure, OpenStack metadata) lives here.
        Some("link-local (cloud metadata)")
    } else if ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata (Aliyun)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Some("special-purpose")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.20.0.5",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["47.96.1.1", "8.8.8.8", "2400:3200::1"] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn grants_match_whole_origins() {
        let grant = OriginGrant::parse("https://ecs.aliyuncs.com").unwrap();
        assert_eq!(grant.port, 443);
        assert!(!grant.allow_private);
        let url = |s| Url::parse(s).unwrap();
        assert!(grant.matches(&url("https://ECS.aliyuncs.com/?Action=DescribeRegions")));
        assert!(!grant.matches(&url("http://ecs.aliyuncs.com/")));
        assert!(!grant.matches(&url("https://ecs.aliyuncs.com:8443/")));
        assert!(!grant.matches(&url("https://ecs.aliyuncs.com.evil.example/")));
        let local = OriginGrant::parse("http://127.0.0.1:9000#private").unwrap();
        assert!(local.allow_private && local.matches(&url("http://127.0.0.1:9000/x")));
        assert!(OriginGrant::parse("file:///etc/passwd").is_err());
        assert!(OriginGrant::parse("https://a.example/path").is_err());
    }
}
