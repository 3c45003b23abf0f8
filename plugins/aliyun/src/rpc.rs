//! Aliyun's RPC API as the plugin speaks it: signed requests (signature V1,
//! HMAC-SHA1 through the host, so the secret never enters the plugin),
//! retries with backoff and a fresh nonce, and errors classified into what
//! DCP's task engine needs (kind, retryable, code, request id).
//!
//! Everything here is plain Rust over the [`Host`] trait, so it is tested
//! natively; `guest.rs` implements `Host` with the host's imports.

use serde::Deserialize;
use serde_json::Value;

/// The account's settings (the plugin's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// ECS endpoint, scheme included.
    pub ecs_endpoint: String,
    /// VPC endpoint, scheme included.
    pub vpc_endpoint: String,
    /// The region look-ups start from.
    pub default_region: String,
    /// Milliseconds one HTTP attempt may take.
    pub timeout_ms: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ecs_endpoint: "https://ecs.aliyuncs.com".to_owned(),
            vpc_endpoint: "https://vpc.aliyuncs.com".to_owned(),
            default_region: "cn-hangzhou".to_owned(),
            timeout_ms: 10_000,
        }
    }
}

/// The JSON Schema of [`Config`], for DCP's account form.
pub(crate) const CONFIG_SCHEMA: &str = r#"{"type":"object","additionalProperties":false,
"properties":{
"ecs_endpoint":{"type":"string","default":"https://ecs.aliyuncs.com","description":"ECS API endpoint"},
"vpc_endpoint":{"type":"string","default":"https://vpc.aliyuncs.com","description":"VPC API endpoint"},
"default_region":{"type":"string","default":"cn-hangzhou"},
"timeout_ms":{"type":"integer","minimum":100,"default":10000,"description":"per HTTP attempt"}}}"#;

impl Config {
    /// Parses and checks a configuration document.
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let config: Self = serde_json::from_str(text)
            .map_err(|e| Failure::invalid(format!("configuration: {e}")))?;
        for (field, url) in [
            ("ecs_endpoint", &config.ecs_endpoint),
            ("vpc_endpoint", &config.vpc_endpoint),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Failure::invalid(format!(
                    "{field}: {url:?} must start with https:// or http://"
                )));
            }
        }
        if config.timeout_ms < 100 {
            return Err(Failure::invalid("timeout_ms: must be at least 100"));
        }
        Ok(config)
    }
}

/// The two products the plugin calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    /// Elastic Compute Service.
    Ecs,
    /// Virtual Private Cloud.
    Vpc,
}

impl Product {
    fn version(self) -> &'static str {
        match self {
            Self::Ecs => "2014-05-26",
            Self::Vpc => "2016-04-28",
        }
    }
}

/// What a failure means to DCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Bad input; retrying will not help.
    InvalidInput,
    /// Does not exist.
    NotFound,
    /// Wrong state for the operation.
    Conflict,
    /// Credentials refused.
    Unauthorized,
    /// Slow down.
    Throttled,
    /// Unavailable for now.
    Unavailable,
    /// No answer in time.
    Timeout,
    /// Anything else.
    Internal,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// What it means.
    pub kind: Kind,
    /// For humans, naming the action.
    pub message: String,
    /// Aliyun's error code.
    pub code: Option<String>,
    /// Aliyun's request id.
    pub request_id: Option<String>,
    /// Whether the same call may succeed later.
    pub retryable: bool,
}

impl Failure {
    /// Bad input from the caller.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::InvalidInput,
            message: message.into(),
            code: None,
            request_id: None,
            retryable: false,
        }
    }

    /// A response that is not what the API documents.
    pub(crate) fn unexpected(action: &str, what: impl std::fmt::Display) -> Self {
        Self {
            kind: Kind::Internal,
            message: format!("{action}: unexpected response: {what}"),
            code: None,
            request_id: None,
            retryable: false,
        }
    }
}

/// Classifies an Aliyun error code (and HTTP status): Aliyun signals
/// throttling by code, mostly with status 400, so the code decides.
pub(crate) fn classify(status: u16, code: &str) -> (Kind, bool) {
    if code.contains("Throttling") {
        (Kind::Throttled, true)
    } else if matches!(code, "ServiceUnavailable" | "InternalError" | "SystemBusy") || status >= 500
    {
        (Kind::Unavailable, true)
    } else if code == "SignatureDoesNotMatch"
        || code == "IncompleteSignature"
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("InvalidTimeStamp")
        || code == "Forbidden.RAM"
    {
        (Kind::Unauthorized, false)
    } else if code.contains("NotFound") {
        (Kind::NotFound, false)
    } else if code.starts_with("IncorrectInstanceStatus")
        || code.starts_with("IncorrectVSwitchStatus")
        || code == "InvalidOperation.Conflict"
        || code == "LastTokenProcessing"
        || code == "KeyPair.AlreadyExist"
    {
        (Kind::Conflict, false)
    } else if code.starts_with("Invalid")
        || code.starts_with("Missing")
        || code.starts_with("IdempotentParameterMismatch")
        || code.starts_with("QuotaExceed")
        || code.starts_with("OperationDenied")
    {
        (Kind::InvalidInput, false)
    } else {
        (Kind::Internal, false)
    }
}

/// A transport failure (no HTTP answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    /// Why.
    pub message: String,
    /// Whether it was a timeout.
    pub timed_out: bool,
    /// Whether the host refused the request (a capability not granted).
    pub refused: bool,
}

/// What the plugin needs from its host.
pub(crate) trait Host {
    /// The account's AccessKeyId.
    fn key_id(&self) -> Result<String, Failure>;
    /// HMAC-SHA1 of `data` keyed with `AccessKeySecret + "&"`.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure>;
    /// POSTs a form body; the status and body.
    fn post(&self, url: &str, body: String, timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault>;
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// When the call must end, in milliseconds since the Unix epoch.
    fn deadline_ms(&self) -> u64;
    /// A fresh unique nonce.
    fn nonce(&self) -> String;
    /// A random number below `bound` (jitter).
    fn random_below(&self, bound: u64) -> u64;
    /// Waits.
    fn sleep_ms(&self, ms: u64);
}

/// Time kept free before the call's deadline, to report the last error.
const DEADLINE_MARGIN_MS: u64 = 1_000;
/// First backoff step.
const BACKOFF_BASE_MS: u64 = 200;
/// Longest backoff step.
const BACKOFF_CAP_MS: u64 = 5_000;

/// The full-jitter backoff bound of attempt `n` (from 1).
pub(crate) fn backoff_bound(n: u32) -> u64 {
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << n.saturating_sub(1).min(16))
        .min(BACKOFF_CAP_MS)
}

/// Signed calls to Aliyun.
pub(crate) struct Rpc<'a, H: Host> {
    /// The host.
    pub host: &'a H,
    /// The account's settings.
    pub config: &'a Config,
}

impl<H: Host> Rpc<'_, H> {
    /// Calls `action` of `product` with `params`, retrying throttling,
    /// server errors and lost connections (re-signed with a fresh nonce
    /// and timestamp; the parameters — a `ClientToken` among them — stay
    /// the same) until the call's deadline draws near.
    pub(crate) fn call(
        &self,
        product: Product,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, Failure> {
        let endpoint = match product {
            Product::Ecs => &self.config.ecs_endpoint,
            Product::Vpc => &self.config.vpc_endpoint,
        };
        let url_base = format!("{}/", endpoint.trim_end_matches('/'));
        let body: String = params
            .iter()
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    aliyun_rpc::percent_encode(k),
                    aliyun_rpc::percent_encode(v)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        let key_id = self.host.key_id()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let common: Vec<(String, String)> = vec![
                ("AccessKeyId".to_owned(), key_id.clone()),
                ("Action".to_owned(), action.to_owned()),
                ("Format".to_owned(), "JSON".to_owned()),
                (
                    "SignatureMethod".to_owned(),
                    aliyun_rpc::SIGNATURE_METHOD.to_owned(),
                ),
                ("SignatureNonce".to_owned(), self.host.nonce()),
                (
                    "SignatureVersion".to_owned(),
                    aliyun_rpc::SIGNATURE_VERSION.to_owned(),
                ),
                (
                    "Timestamp".to_owned(),
                    aliyun_rpc::timestamp(self.host.now_unix()),
                ),
                ("Version".to_owned(), product.version().to_owned()),
            ];
            let signed: Vec<(String, String)> = common.iter().chain(params).cloned().collect();
            let signature = sign(self.host, "POST", &signed)?;
            let url = format!(
                "{url_base}?{}",
                aliyun_rpc::encode_query(&common, &signature)
            );
            let failure = match self.host.post(&url, body.clone(), self.config.timeout_ms) {
                Ok((200, bytes)) => {
                    return serde_json::from_slice(&bytes)
                        .map_err(|e| Failure::unexpected(action, format!("not JSON ({e})")));
                }
                Ok((status, bytes)) => error_of(action, status, &bytes),
                Err(fault) if fault.refused => Failure {
                    kind: Kind::Unauthorized,
                    message: format!("{action}: {}", fault.message),
                    code: None,
                    request_id: None,
                    retryable: false,
                },
                Err(fault) => Failure {
                    kind: if fault.timed_out {
                        Kind::Timeout
                    } else {
                        Kind::Unavailable
                    },
                    message: format!("{action}: no answer from {url_base}: {}", fault.message),
                    code: None,
                    request_id: None,
                    retryable: true,
                },
            };
            if !failure.retryable {
                return Err(failure);
            }
            let wait = self.host.random_below(backoff_bound(attempt) + 1);
            let deadline = self.host.deadline_ms();
            let next_try_ends =
                self.host.now_ms() + wait + u64::from(self.config.timeout_ms).min(2_000);
            if next_try_ends + DEADLINE_MARGIN_MS > deadline {
                return Err(failure);
            }
            self.host.sleep_ms(wait);
        }
    }
}

/// Signs `params` for `method` with the host's HMAC: base64 of HMAC-SHA1
/// over the canonical string-to-sign.
pub(crate) fn sign<H: Host>(
    host: &H,
    method: &str,
    params: &[(String, String)],
) -> Result<String, Failure> {
    use base64::Engine as _;
    let mac = host.sign(aliyun_rpc::string_to_sign(method, params).as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(mac))
}

/// The failure an error response describes.
pub(crate) fn error_of(action: &str, status: u16, body: &[u8]) -> Failure {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |name: &str| parsed.get(name).and_then(Value::as_str).map(str::to_owned);
    let (code, message) = match (field("Code"), field("Message")) {
        (Some(code), message) => (code, message.unwrap_or_default()),
        (None, _) => (
            format!("HTTP{status}"),
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    let (kind, retryable) = classify(status, &code);
    // A signature mismatch quotes the server's string-to-sign: noise to a
    // person, and it spells out the request's parameters.
    let message = match message.split_once("server string to sign is:") {
        Some((said, _)) => format!("{} check the account's AccessKey secret", said.trim_end()),
        None => message,
    };
    Failure {
        kind,
        message: format!("{action} failed: {code}: {message}"),
        code: Some(code),
        request_id: field("RequestId"),
        retryable,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;

    use hmac::{Hmac, Mac};

    use super::*;

    /// A host that answers from a script and records what was sent.
    pub(crate) struct Scripted {
        pub secret: String,
        pub replies: RefCell<Vec<Result<(u16, String), Fault>>>,
        pub sent: RefCell<Vec<(String, String)>>,
        pub clock_ms: RefCell<u64>,
        pub nonces: RefCell<u64>,
    }

    impl Scripted {
        pub(crate) fn new(replies: Vec<Result<(u16, String), Fault>>) -> Self {
            Self {
                secret: "testsecret".into(),
                replies: RefCell::new(replies.into_iter().rev().collect()),
                sent: RefCell::new(Vec::new()),
                clock_ms: RefCell::new(1_700_000_000_000),
                nonces: RefCell::new(0),
            }
        }
    }

    impl Host for Scripted {
        fn key_id(&self) -> Result<String, Failure> {
            Ok("testid".into())
        }
        fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure> {
            let mut mac =
                Hmac::<sha1::Sha1>::new_from_slice(format!("{}&", self.secret).as_bytes())
                    .expect("any key length");
            mac.update(data);
            Ok(mac.finalize().into_bytes().to_vec())
        }
        fn post(&self, url: &str, body: String, _timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault> {
            self.sent.borrow_mut().push((url.to_owned(), body));
            self.replies
                .borrow_mut()
                .pop()
                .expect("a scripted reply")
                .map(|(status, body)| (status, body.into_bytes()))
        }
        fn now_unix(&self) -> u64 {
            *self.clock_ms.borrow() / 1000
        }
        fn now_ms(&self) -> u64 {
            *self.clock_ms.borrow()
        }
        fn deadline_ms(&self) -> u64 {
            1_700_000_000_000 + 30_000
        }
        fn nonce(&self) -> String {
            *self.nonces.borrow_mut() += 1;
            format!("nonce-{}", self.nonces.borrow())
        }
        fn random_below(&self, bound: u64) -> u64 {
            bound / 2
        }
        fn sleep_ms(&self, ms: u64) {
            *self.clock_ms.borrow_mut() += ms;
        }
    }

    fn params_of(url: &str, body: &str) -> Vec<(String, String)> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut all = aliyun_rpc::parse_pairs(query);
        all.extend(aliyun_rpc::parse_pairs(body));
        all
    }

    #[test]
    fn signature_vectors_pass_through_the_plugin_signer() {
        for v in aliyun_rpc::vectors::ALL {
            let host = Scripted {
                secret: v.secret.into(),
                ..Scripted::new(vec![])
            };
            let params: Vec<(String, String)> = v
                .params
                .iter()
                .map(|(k, val)| ((*k).to_owned(), (*val).to_owned()))
                .collect();
            assert_eq!(
                sign(&host, v.method, &params).unwrap(),
                v.signature,
                "{v:?}"
            );
        }
    }

    #[test]
    fn requests_are_signed_over_query_and_body_and_retried_with_fresh_nonces() {
        let host = Scripted::new(vec![
            Ok((
                400,
                r#"{"Code":"Throttling.User","Message":"slow down","RequestId":"R1"}"#.into(),
            )),
            Err(Fault {
                message: "connection reset".into(),
                timed_out: false,
                refused: false,
            }),
            Ok((
                200,
                r#"{"RequestId":"R3","InstanceIdSets":{"InstanceIdSet":["i-1"]}}"#.into(),
            )),
        ]);
        let config = Config::default();
        let rpc = Rpc {
            host: &host,
            config: &config,
        };
        let params = vec![
            ("ClientToken".to_owned(), "tok".to_owned()),
            ("RegionId".to_owned(), "cn-hangzhou".to_owned()),
        ];
        let answer = rpc.call(Product::Ecs, "RunInstances", &params).unwrap();
        assert_eq!(answer["RequestId"], "R3");
        let sent = host.sent.borrow();
        assert_eq!(sent.len(), 3);
        let mut nonces = std::collections::BTreeSet::new();
        for (url, body) in sent.iter() {
            assert!(url.starts_with("https://ecs.aliyuncs.com/?"), "{url}");
            assert_eq!(
                body, "ClientToken=tok&RegionId=cn-hangzhou",
                "the same token every time"
            );
            let all = params_of(url, body);
            let get = |k: &str| {
                all.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            nonces.insert(get("SignatureNonce"));
            // The signature verifies over the union of query and body, for POST.
            let expected = sign(&host, "POST", &all).unwrap();
            assert_eq!(get("Signature"), expected);
            assert_eq!(get("Version"), "2014-05-26");
            assert_eq!(get("Format"), "JSON");
        }
        assert_eq!(nonces.len(), 3, "a fresh nonce per attempt");
    }

    #[test]
    fn errors_carry_code_and_request_id_and_stop_at_the_deadline() {
        let host = Scripted::new(vec![Ok((400, r#"{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:GET&%2F&AccessKeyId%3Dtestid","RequestId":"R9"}"#.into()))]);
        let config = Config::default();
        let rpc = Rpc {
            host: &host,
            config: &config,
        };
        let err = rpc.call(Product::Ecs, "DescribeRegions", &[]).unwrap_err();
        assert_eq!((err.kind, err.retryable), (Kind::Unauthorized, false));
        assert_eq!(
            (err.code.as_deref(), err.request_id.as_deref()),
            (Some("SignatureDoesNotMatch"), Some("R9"))
        );
        assert!(
            err.message
                .starts_with("DescribeRegions failed: SignatureDoesNotMatch"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("string to sign"), "{}", err.message);
        assert!(
            err.message
                .ends_with("check the account's AccessKey secret"),
            "{}",
            err.message
        );
        // A storm: retried until the deadline draws near, then the last error.
        let storm: Vec<_> = (0..100)
            .map(|_| {
                Ok((
                    503,
                    r#"{"Code":"ServiceUnavailable","Message":"busy","RequestId":"R"}"#.to_owned(),
                ))
            })
            .collect();
        let host = Scripted::new(storm);
        let rpc = Rpc {
            host: &host,
            config: &config,
        };
        let err = rpc.call(Product::Vpc, "DescribeVpcs", &[]).unwrap_err();
        assert_eq!((err.kind, err.retryable), (Kind::Unavailable, true));
        assert!(host.now_ms() < host.deadline_ms() - DEADLINE_MARGIN_MS + 2_000);
        assert!(host.sent.borrow().len() > 3);
        assert!(
            host.sent.borrow()[0]
                .0
                .starts_with("https://vpc.aliyuncs.com/?")
        );
    }

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify(400, "Throttling.User"), (Kind::Throttled, true));
        assert_eq!(
            classify(503, "ServiceUnavailable"),
            (Kind::Unavailable, true)
        );
        assert_eq!(classify(500, "Whatever"), (Kind::Unavailable, true));
        assert_eq!(
            classify(404, "InvalidInstanceId.NotFound"),
            (Kind::NotFound, false)
        );
        assert_eq!(
            classify(403, "IncorrectInstanceStatus"),
            (Kind::Conflict, false)
        );
        assert_eq!(
            classify(400, "IdempotentParameterMismatch"),
            (Kind::InvalidInput, false)
        );
        assert_eq!(
            classify(404, "InvalidAccessKeyId.NotFound"),
            (Kind::Unauthorized, false)
        );
        assert_eq!(backoff_bound(1), 200);
        assert_eq!(backoff_bound(10), 5_000);
    }

    #[test]
    fn configs_are_checked() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(
            Config::parse(r#"{"ecs_endpoint":"ftp://x"}"#)
                .unwrap_err()
                .message
                .contains("ecs_endpoint")
        );
        assert!(
            Config::parse(r#"{"endpoint":"x"}"#)
                .unwrap_err()
                .message
                .contains("unknown field")
        );
    }
}
