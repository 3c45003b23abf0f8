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

    fn with_signature<'a>(params: &[(&'a str, &'a str)], sig: &'a str) -> Vec<(&'a str, &'a str)> {
        let mut all = params.to_vec();
        all.push(("Signature", sig));
        all
    }

    #[test]
    fn every_published_vector_verifies() {
        for v in aliyun_rpc::vectors::ALL {
            let with_sig = with_signature(v.params, v.signature);
            verify(v.secret, v.method, &with_sig, v.signature).unwrap();
            assert_eq!(sign(v.secret, v.method, v.params), v.signature, "{v:?}");
            // The wrong secret, the wrong method, one changed byte: refused.
            assert!(verify("wrong", v.method, v.params, v.signature).is_err());
            let other = if v.method == "GET" { "POST" } else { "GET" };
            assert!(verify(v.secret, other, v.params, v.signature).is_err());
            let mut tampered = v.params.to_vec();
            tampered[0].1 = "tampered";
            assert!(verify(v.secret, v.method, &tampered, v.signature).is_err());
        }
        let a = aliyun_rpc::vectors::A_GET;
        let sts = verify(a.secret, "POST", a.params, a.signature).unwrap_err();
        assert!(sts.starts_with("POST&%2F&AccessKeyId%3Dtestid%26"), "{sts}");
        assert!(verify(a.secret, "GET", a.params, "not base64!").is_err());
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
