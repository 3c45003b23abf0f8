//! The canonical form of Aliyun's RPC-style OpenAPI (ECS, VPC, SLB), shared
//! by the `aliyun` plugin, which signs requests, and the simulator, which
//! verifies them. Keeping one implementation means the two can only agree
//! by both being right: the test vectors below come from Aliyun's docs and
//! SDKs (../shared/reference/aliyun-api.md §1.4), not from this code.
//!
//! The HMAC itself is not here: the plugin asks the host to compute it (the
//! secret never enters plugin memory) and the simulator uses its own.
//!
//! - [`client`]: the product-independent client every Aliyun plugin shares
//!   (`aliyun` for ECS/VPC, `slb` for SLB): signed calls over a [`client::Host`]
//!   trait, retries with backoff and a fresh nonce, errors classified;
//! - [`lenient`]: reading answers whose wrappers and number types vary;
//! - [`slb`]: SLB's answers (listeners, backends, listener attributes, white
//!   lists, health) as both plugins read them;
//! - `scripted` (feature `scripted`): a scripted [`client::Host`] for tests;
//! - `sim_host` (feature `sim-host`): a [`client::Host`] over reqwest for
//!   tests against the simulator.
//!
//! No WIT bindings here: the simulator uses this crate natively, and each
//! plugin implements the host over its own world's imports
//! ([`imports_host!`]).

pub mod client;
pub mod lenient;
#[cfg(any(test, feature = "scripted"))]
pub mod scripted;
#[cfg(feature = "sim-host")]
pub mod sim_host;
pub mod slb;

/// The signature method this crate canonicalizes for.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// The signature version this crate canonicalizes for.
pub const SIGNATURE_VERSION: &str = "1.0";

/// Percent-encodes `s` the way Aliyun signs it: UTF-8, RFC 3986 unreserved
/// characters (`A–Z a–z 0–9 - _ . ~`) literal, every other byte `%XY` in
/// uppercase hex — so a space is `%20` (never `+`) and `*` is `%2A`.
#[must_use]
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// Decodes `application/x-www-form-urlencoded` text (query strings and form
/// bodies): `+` is a space, `%XY` a byte. Malformed escapes are kept as they
/// are, as servers do; invalid UTF-8 is replaced.
#[must_use]
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| char::from(c).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `a=1&b=2` (a query string or form body) into decoded pairs, in order.
#[must_use]
pub fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(p), String::new()),
        })
        .collect()
}

/// The canonicalized query string: every parameter but `Signature`, empty
/// values kept as `k=`, names and values percent-encoded, sorted byte-wise
/// by name.
#[must_use]
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k.as_ref() != "Signature")
        .map(|(k, v)| (percent_encode(k.as_ref()), percent_encode(v.as_ref())))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// What signature V1 signs: `METHOD&%2F&percentEncode(canonical query)`.
/// The method is part of it, so a request signed for GET and sent as POST
/// does not verify.
#[must_use]
pub fn string_to_sign<K: AsRef<str>, V: AsRef<str>>(method: &str, params: &[(K, V)]) -> String {
    format!(
        "{}&%2F&{}",
        method.to_ascii_uppercase(),
        percent_encode(&canonical_query(params))
    )
}

/// The HMAC key for an AccessKeySecret: the secret followed by `&` (the
/// docs' formula omits the `&`; every SDK appends it).
#[must_use]
pub fn signing_key(secret: &str) -> String {
    format!("{secret}&")
}

/// The query string to send: the parameters and `Signature`, each
/// percent-encoded (so a `+` in the signature travels as `%2B`).
#[must_use]
pub fn encode_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)], signature: &str) -> String {
    let mut query: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k.as_ref()),
                percent_encode(v.as_ref())
            )
        })
        .collect();
    query.push(format!("Signature={}", percent_encode(signature)));
    query.join("&")
}

/// The `Timestamp` format: UTC `YYYY-MM-DDThh:mm:ssZ` from seconds since the epoch.
#[must_use]
pub fn timestamp(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Parses a `Timestamp` (`YYYY-MM-DDThh:mm:ssZ`) into seconds since the epoch.
#[must_use]
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + se)).ok()
}

// Howard Hinnant's civil-date algorithms: no date crate in a plugin for two functions.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// Aliyun's signature V1 test vectors (../shared/reference/aliyun-api.md
/// §1.4): A from the API docs, B from the Go SDK's tests, C made to cover
/// JSON, `*`, `~`, a space and non-ASCII. Every signer and verifier of DCP
/// is tested against these.
pub mod vectors {
    /// A request with its expected signature.
    #[derive(Debug, Clone, Copy)]
    pub struct Vector {
        /// The AccessKeySecret (the HMAC key is this plus `&`).
        pub secret: &'static str,
        /// The HTTP method signed.
        pub method: &'static str,
        /// Every parameter but `Signature`.
        pub params: &'static [(&'static str, &'static str)],
        /// The expected signature, base64.
        pub signature: &'static str,
    }

    const A_PARAMS: &[(&str, &str)] = &[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ];

    const B_PARAMS: &[(&str, &str)] = &[
        ("AccessKeyId", "accessKeyId"),
        ("Action", ""),
        ("Format", "JSON"),
        ("RegionId", "regionId"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "MOCK_UUID"),
        ("SignatureType", ""),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "mock date"),
        ("Version", ""),
    ];

    const B_STS_PARAMS: &[(&str, &str)] = &[
        ("AccessKeyId", "accessKeyId"),
        ("Action", ""),
        ("Format", "JSON"),
        ("RegionId", "regionId"),
        ("SecurityToken", "accessKeyStsToken"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "MOCK_UUID"),
        ("SignatureType", ""),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "mock date"),
        ("Version", ""),
    ];

    const C_PARAMS: &[(&str, &str)] = &[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeInstances"),
        ("Format", "JSON"),
        ("InstanceIds", r#"["i-abc","i-def"]"#),
        ("InstanceName", "web server*~ 中"),
        ("PageNumber", "1"),
        ("PageSize", "100"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "c1f6a6e2-1f3b-4a4e-8a0e-000000000001"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2024-01-02T03:04:05Z"),
        ("Version", "2014-05-26"),
    ];

    /// A: the documentation's DescribeRegions, GET.
    pub const A_GET: Vector = Vector {
        secret: "testsecret",
        method: "GET",
        params: A_PARAMS,
        signature: "OLeaidS1JvxuMvnyHOwuJ+uX5qY=",
    };
    /// A sent as POST: the method is signed.
    pub const A_POST: Vector = Vector {
        method: "POST",
        signature: "MxbnVAM4w6sft9xjVpe/GCKueuk=",
        ..A_GET
    };
    /// B: empty values and a space (Go SDK).
    pub const B: Vector = Vector {
        secret: "accessKeySecret",
        method: "GET",
        params: B_PARAMS,
        signature: "7loPmFjvDnzOVnQeQNj85S6nFGY=",
    };
    /// B with an STS token, which is signed too.
    pub const B_STS: Vector = Vector {
        params: B_STS_PARAMS,
        signature: "5Nxdcler+ihqWqv0Hr2On4PsBf4=",
        ..B
    };
    /// C: JSON, `*`, `~`, a space and non-ASCII.
    pub const C: Vector = Vector {
        secret: "testsecret",
        method: "GET",
        params: C_PARAMS,
        signature: "A72Pf8yZWQbypBNLGVTvqBZO/W4=",
    };
    /// Every vector.
    pub const ALL: [Vector; 5] = [A_GET, A_POST, B, B_STS, C];
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};

    use super::*;

    fn sign(secret: &str, method: &str, params: &[(&str, &str)]) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(signing_key(secret).as_bytes()).unwrap();
        mac.update(string_to_sign(method, params).as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    #[test]
    fn every_vector_signs_as_published() {
        for v in vectors::ALL {
            assert_eq!(sign(v.secret, v.method, v.params), v.signature, "{v:?}");
        }
        assert_eq!(
            string_to_sign("GET", vectors::A_GET.params),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert!(
            encode_query(vectors::A_GET.params, vectors::A_GET.signature)
                .ends_with("&Signature=OLeaidS1JvxuMvnyHOwuJ%2BuX5qY%3D")
        );
        let b = string_to_sign("GET", vectors::B.params);
        assert!(
            b.contains("Action%3D%26") && b.contains("Timestamp%3Dmock%2520date"),
            "{b}"
        );
        assert!(string_to_sign("GET", vectors::C.params).contains(
            "InstanceIds%3D%255B%2522i-abc%2522%252C%2522i-def%2522%255D%26InstanceName%3Dweb%2520server%252A~%2520%25E4%25B8%25AD"
        ));
    }

    #[test]
    fn signature_is_excluded_and_order_does_not_matter() {
        let mut shuffled: Vec<(&str, &str)> = vectors::A_GET.params.iter().rev().copied().collect();
        shuffled.push(("Signature", "whatever"));
        assert_eq!(
            string_to_sign("GET", &shuffled),
            string_to_sign("get", vectors::A_GET.params)
        );
    }

    #[test]
    fn form_decoding_round_trips_what_we_encode() {
        for value in ["a+b/c=d&e*f~g h", "中文", "", "100%", "%zz"] {
            let query = encode_query(&[("K", value)], "s+/=");
            let pairs = parse_pairs(&query);
            if value == "%zz" {
                assert_eq!(pairs[0].1, "%zz");
            } else {
                assert_eq!(pairs[0], ("K".to_owned(), value.to_owned()));
            }
            assert_eq!(pairs[1], ("Signature".to_owned(), "s+/=".to_owned()));
        }
        assert_eq!(form_decode("a+b%20c"), "a b c");
    }

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(timestamp(1_456_231_584), "2016-02-23T12:46:24Z");
        assert_eq!(parse_timestamp("2016-02-23T12:46:24Z"), Some(1_456_231_584));
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00Z")
                .map(timestamp)
                .as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        for bad in [
            "2016-02-23 12:46:24",
            "2016-13-01T00:00:00Z",
            "mock date",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
