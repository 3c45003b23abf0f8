//! Signature V1 (HMAC-SHA1) verification. The canonical form — encoding,
//! sorting, string-to-sign, the `secret&` key — is `aliyun-rpc`'s, the same
//! code DCP's plugin signs with, itself pinned by Aliyun's published
//! vectors; only the HMAC is computed here.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

fn mac(secret: &str, string_to_sign: &str) -> HmacSha1 {
    // HMAC accepts keys of any length, so this cannot fail; the fallback
    // keeps the code free of unwraps all the same.
    let mut mac = HmacSha1::new_from_slice(aliyun_rpc::signing_key(secret).as_bytes())
        .unwrap_or_else(|_| HmacSha1::new(&Default::default()));
    mac.update(string_to_sign.as_bytes());
    mac
}

/// The signature of `params` (any `Signature` among them is ignored) sent
/// with `method`; the gateway only verifies, so only tests sign.
#[cfg(test)]
fn sign(secret: &str, method: &str, params: &[(&str, &str)]) -> String {
    let sts = aliyun_rpc::string_to_sign(method, params);
    STANDARD.encode(mac(secret, &sts).finalize().into_bytes())
}

/// Checks `signature` against `params` as received with `method`. On a
/// mismatch answers the server's string-to-sign, which Aliyun puts in the
/// error message so a client can diff it against its own.
pub(crate) fn verify(
    secret: &str,
    method: &str,
    params: &[(&str, &str)],
    signature: &str,
) -> Result<(), String> {
    let sts = aliyun_rpc::string_to_sign(method, params);
    let expected = mac(secret, &sts);
    match STANDARD.decode(signature) {
        // verify_slice compares in constant time.
        Ok(given) if expected.verify_slice(&given).is_ok() => Ok(()),
        _ => Err(sts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR_A: &[(&str, &str)] = &[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ];

    fn with_signature<'a>(params: &[(&'a str, &'a str)], sig: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut all = params.to_vec();
        all.push(("Signature", sig));
        all
    }

    #[test]
    fn vector_a_verifies_for_its_method_only() {
        let get = with_signature(VECTOR_A, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
        verify("testsecret", "GET", &get, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=").unwrap();
        verify(
            "testsecret",
            "POST",
            VECTOR_A,
            "MxbnVAM4w6sft9xjVpe/GCKueuk=",
        )
        .unwrap();
        let sts = verify("testsecret", "POST", &get, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=").unwrap_err();
        assert!(sts.starts_with("POST&%2F&AccessKeyId%3Dtestid%26"), "{sts}");
        assert!(verify("wrong", "GET", &get, "OLeaidS1JvxuMvnyHOwuJ+uX5qY=").is_err());
        assert!(verify("testsecret", "GET", &get, "not base64!").is_err());
        assert_eq!(
            sign("testsecret", "GET", &get),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    #[test]
    fn vector_b_empty_values_and_a_space_verify() {
        let mut params = vec![
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
        verify(
            "accessKeySecret",
            "GET",
            &params,
            "7loPmFjvDnzOVnQeQNj85S6nFGY=",
        )
        .unwrap();
        params.push(("SecurityToken", "accessKeyStsToken"));
        verify(
            "accessKeySecret",
            "GET",
            &params,
            "5Nxdcler+ihqWqv0Hr2On4PsBf4=",
        )
        .unwrap();
    }

    #[test]
    fn vector_c_json_star_tilde_space_non_ascii_verify() {
        let params = [
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
        verify("testsecret", "GET", &params, "A72Pf8yZWQbypBNLGVTvqBZO/W4=").unwrap();
        // One changed byte anywhere breaks it.
        let mut tampered = params;
        tampered[4].1 = "web server*~ 中 ";
        assert!(
            verify(
                "testsecret",
                "GET",
                &tampered,
                "A72Pf8yZWQbypBNLGVTvqBZO/W4="
            )
            .is_err()
        );
    }

    #[test]
    fn awkward_values_round_trip_through_the_wire_form() {
        // Sign, encode as a query, decode as the gateway does, verify.
        for value in ["a+b/c=d&e", "*~", " ", "中文", "", "100%"] {
            let params = [("AccessKeyId", "k"), ("Name", value)];
            let sig = sign("s", "POST", &params);
            let query = aliyun_rpc::encode_query(&params, &sig);
            let decoded = aliyun_rpc::parse_pairs(&query);
            let pairs: Vec<(&str, &str)> = decoded
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            verify("s", "POST", &pairs, &sig).unwrap();
        }
    }
}
