//! Which addresses a plugin's HTTP request may reach.
//!
//! A grant names an origin (`https://ecs.aliyuncs.com`); a request must match
//! one. Even then, private, loopback, link-local, metadata and other
//! special-purpose addresses are refused unless the grant says so explicitly
//! (tests grant the loopback simulator) — and the check runs on the
//! *resolved* addresses, so a public name pointing at 127.0.0.1 or
//! 169.254.169.254 is refused too, as is an IPv6 address that leads to such
//! an IPv4 address (NAT64, 6to4, Teredo, mapped or compatible). The request
//! then goes straight to the checked address, never through a proxy.

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

/// Why an address is not public, if it is not. An IPv6 address that carries
/// an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is judged by the
/// IPv4 address it leads to, so no encoding of 127.0.0.1 or 10.0.0.1 gets
/// through.
#[must_use]
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
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
    } else if ip.is_unspecified() || a == 0 {
        Some("\"this network\" (0.0.0.0/8)")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else if matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) {
        Some("documentation")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if (a, b, c) == (192, 0, 0) || (a, b, c) == (192, 88, 99) {
        // IETF protocol assignments; the retired 6to4 relay anycast.
        Some("special-purpose")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    let octets = ip.octets();
    // The IPv4 address in octets `at..at + 4`, each bit inverted if `flip`.
    let v4_at = |at: usize, flip: u8| {
        Ipv4Addr::new(
            octets[at] ^ flip,
            octets[at + 1] ^ flip,
            octets[at + 2] ^ flip,
            octets[at + 3] ^ flip,
        )
    };
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    // ::a.b.c.d (compatible, deprecated), ::ffff:a.b.c.d (mapped),
    // ::ffff:0:a.b.c.d (SIIT translated), 64:ff9b::a.b.c.d (NAT64): the
    // IPv4 address is the last 32 bits.
    if matches!(
        seg[..6],
        [0, 0, 0, 0, 0, 0 | 0xffff] | [0, 0, 0, 0, 0xffff, 0] | [0x64, 0xff9b, 0, 0, 0, 0]
    ) {
        return non_public_v4(v4_at(12, 0));
    }
    if seg[0] == 0x2002 {
        // 6to4: the IPv4 address follows the 16-bit prefix.
        return non_public_v4(v4_at(2, 0));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo: the server's IPv4 address, then the client's, inverted.
        return non_public_v4(v4_at(4, 0)).or_else(|| non_public_v4(v4_at(12, 0xff)));
    }
    if seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2] == 1 {
        // Local-use NAT64 (64:ff9b:1::/48): where the IPv4 address sits
        // depends on the operator's prefix length, so it cannot be judged.
        Some("local-use NAT64")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if seg[0] & 0xff00 == 0xff00 {
        Some("multicast")
    } else if (seg[0] == 0x2001 && seg[1] == 0x0db8) || (seg[0] == 0x3fff && seg[1] < 0x1000) {
        // 2001:db8::/32 and 3fff::/20.
        Some("documentation")
    } else if seg[0] == 0x2001 && seg[1] == 2 && seg[2] == 0 {
        Some("benchmarking")
    } else if seg[0] == 0x2001 && (seg[1] & 0xfff0 == 0x10 || seg[1] & 0xfff0 == 0x20) {
        // ORCHID (2001:10::/28, 2001:20::/28): identifiers, not locators.
        Some("special-purpose")
    } else if seg[0] & 0xe000 != 0x2000 {
        // Only 2000::/3 is global unicast; the rest (discard-only 100::/64,
        // the reserved ::/8 beyond the forms above, …) is not public.
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_not_public() {
        // (address, why) for every special-purpose range, and the IPv6
        // forms that carry an IPv4 address judged by that address.
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.20.0.5", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.100.100.200", "metadata"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.254", "carrier-grade NAT"),
            ("0.0.0.0", "this network"),
            ("0.1.2.3", "this network"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.7", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.7", "documentation"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking"),
            ("192.0.0.8", "special-purpose"),
            ("192.88.99.1", "special-purpose"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.0.0.1", "private"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::ffff:0:192.168.0.1", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::10.1.1.1", "private"),
            ("64:ff9b:1::8.8.8.8", "local-use NAT64"),
            ("64:ff9b:1:ffff::1", "local-use NAT64"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a00:1::1", "private"),
            ("2002:a9fe:a9fe::1", "link-local"),
            // Teredo, server 65.54.227.120: client 127.0.0.1 and 10.0.0.1
            // (stored inverted), and a private server.
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
            ("2001:0:a00:1:8000:63bf:3fff:fdd2", "private"),
            ("2001:2::1", "benchmarking"),
            ("2001:2:0:ffff::1", "benchmarking"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:10::1", "special-purpose"),
            ("2001:20::1", "special-purpose"),
            ("fc00::1", "unique local"),
            ("fd00:ec2::254", "unique local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("100::1", "reserved"),
            ("1::1", "reserved"),
            ("4000::1", "reserved"),
        ] {
            let found = non_public(ip.parse().unwrap());
            assert!(
                found.is_some_and(|f| f.contains(why)),
                "{ip}: expected {why}, got {found:?}"
            );
        }
        // Public, including every embedding of a public IPv4 address.
        for ip in [
            "47.96.1.1",
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "2400:3200::1",
            "2001:4860:4860::8888",
            "2001:3::1",
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        ] {
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
