//! Aliyun's RPC API as DCP's plugins speak it, whatever the product (ECS,
//! VPC, SLB): signed requests (signature V1, HMAC-SHA1 through the host, so
//! the secret never enters the plugin), retries with backoff and a fresh
//! nonce, and errors classified into what DCP's task engine needs (kind,
//! retryable, code, request id).
//!
//! Everything here is plain Rust over the [`Host`] trait, so it is tested
//! natively; a plugin implements `Host` with the host's imports
//! ([`crate::imports_host!`]), a test with an HTTP client and its own HMAC.

use serde_json::Value;

/// What a failure means to DCP (a plugin maps it onto the WIT `error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
pub struct Failure {
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
    /// A failure of `kind` without a code or request id.
    pub fn new(kind: Kind, message: impl Into<String>, retryable: bool) -> Self {
        Self {
            kind,
            message: message.into(),
            code: None,
            request_id: None,
            retryable,
        }
    }

    /// Bad input from the caller.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::InvalidInput, message, false)
    }

    /// A response that is not what the API documents.
    pub fn unexpected(action: &str, what: impl std::fmt::Display) -> Self {
        Self::new(
            Kind::Internal,
            format!("{action}: unexpected response: {what}"),
            false,
        )
    }
}

/// Classifies an Aliyun error code (and HTTP status): Aliyun signals
/// throttling by code, mostly with status 400, so the code decides.
///
/// SLB's busy codes (a previous change still being applied) are conflicts
/// worth retrying: the request was refused before it did anything.
#[must_use]
pub fn classify(status: u16, code: &str) -> (Kind, bool) {
    if code.contains("Throttling") {
        (Kind::Throttled, true)
    } else if matches!(code, "ServiceUnavailable" | "InternalError" | "SystemBusy") || status >= 500
    {
        (Kind::Unavailable, true)
    } else if matches!(
        code,
        "ServiceIsConfiguring"
            | "OperationBusy"
            | "ServiceIsStopping"
            | "BackendServer.configuring"
            | "OperationFailed.TokenIsProcessing"
    ) {
        (Kind::Conflict, true)
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
pub struct Fault {
    /// Why.
    pub message: String,
    /// Whether it was a timeout.
    pub timed_out: bool,
    /// Whether the host refused the request (a capability not granted).
    pub refused: bool,
}

/// What the client needs from its host.
pub trait Host {
    /// The account's AccessKeyId.
    ///
    /// # Errors
    ///
    /// The credential cannot be opened.
    fn key_id(&self) -> Result<String, Failure>;
    /// HMAC-SHA1 of `data` keyed with `AccessKeySecret + "&"`.
    ///
    /// # Errors
    ///
    /// The credential cannot be opened.
    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure>;
    /// POSTs a form body; the status and body.
    ///
    /// # Errors
    ///
    /// No HTTP answer came.
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
pub const DEADLINE_MARGIN_MS: u64 = 1_000;
/// First backoff step.
const BACKOFF_BASE_MS: u64 = 200;
/// Longest backoff step.
const BACKOFF_CAP_MS: u64 = 5_000;

/// The full-jitter backoff bound of attempt `n` (from 1).
#[must_use]
pub fn backoff_bound(n: u32) -> u64 {
    BACKOFF_BASE_MS
        .saturating_mul(1u64 << n.saturating_sub(1).min(16))
        .min(BACKOFF_CAP_MS)
}

/// One product's API: where it is and which version it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Api<'a> {
    /// The endpoint, scheme included (`https://slb.aliyuncs.com`).
    pub endpoint: &'a str,
    /// The API version (`2014-05-15` for SLB).
    pub version: &'a str,
}

/// Signed calls to Aliyun.
pub struct Client<'a, H: Host> {
    /// The host.
    pub host: &'a H,
    /// Milliseconds one HTTP attempt may take.
    pub timeout_ms: u32,
}

impl<H: Host> Client<'_, H> {
    /// Calls `action` of `api` with `params`, retrying throttling, server
    /// errors, busy codes and lost connections (re-signed with a fresh
    /// nonce and timestamp; the parameters — a `ClientToken` among them —
    /// stay the same) until the call's deadline draws near.
    ///
    /// Only for calls that are safe to repeat: reads, and changes carrying
    /// a `ClientToken`. A change without one whose reply may be lost after
    /// it took effect goes through [`Self::call_once`] and a fresh read.
    ///
    /// # Errors
    ///
    /// The last failure once it is not retryable or time is up.
    pub fn call(
        &self,
        api: Api<'_>,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, Failure> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.call_once(api, action, params) {
                Err(failure) if failure.retryable && self.pause(attempt) => {}
                done => return done,
            }
        }
    }

    /// One signed attempt at `action`: its answer, or the failure
    /// classified (a lost connection is `retryable`: whether the action
    /// took effect is unknown).
    ///
    /// # Errors
    ///
    /// Aliyun's error, a transport fault, or an answer that is not JSON.
    pub fn call_once(
        &self,
        api: Api<'_>,
        action: &str,
        params: &[(String, String)],
    ) -> Result<Value, Failure> {
        let url_base = format!("{}/", api.endpoint.trim_end_matches('/'));
        let body: String = params
            .iter()
            .map(|(k, v)| format!("{}={}", crate::percent_encode(k), crate::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let key_id = self.host.key_id()?;
        let common: Vec<(String, String)> = vec![
            ("AccessKeyId".to_owned(), key_id),
            ("Action".to_owned(), action.to_owned()),
            ("Format".to_owned(), "JSON".to_owned()),
            (
                "SignatureMethod".to_owned(),
                crate::SIGNATURE_METHOD.to_owned(),
            ),
            ("SignatureNonce".to_owned(), self.host.nonce()),
            (
                "SignatureVersion".to_owned(),
                crate::SIGNATURE_VERSION.to_owned(),
            ),
            (
                "Timestamp".to_owned(),
                crate::timestamp(self.host.now_unix()),
            ),
            ("Version".to_owned(), api.version.to_owned()),
        ];
        let signed: Vec<(String, String)> = common.iter().chain(params).cloned().collect();
        let signature = sign(self.host, "POST", &signed)?;
        let url = format!("{url_base}?{}", crate::encode_query(&common, &signature));
        match self.host.post(&url, body, self.timeout_ms) {
            Ok((200, bytes)) => serde_json::from_slice(&bytes)
                .map_err(|e| Failure::unexpected(action, format!("not JSON ({e})"))),
            Ok((status, bytes)) => Err(error_of(action, status, &bytes)),
            Err(fault) if fault.refused => Err(Failure::new(
                Kind::Unauthorized,
                format!("{action}: {}", fault.message),
                false,
            )),
            Err(fault) => Err(Failure::new(
                if fault.timed_out {
                    Kind::Timeout
                } else {
                    Kind::Unavailable
                },
                format!("{action}: no answer from {url_base}: {}", fault.message),
                true,
            )),
        }
    }

    /// Waits before attempt `attempt + 1` (full-jitter exponential
    /// backoff), if that attempt can still end before the call's deadline;
    /// false, without waiting, when it cannot.
    pub fn pause(&self, attempt: u32) -> bool {
        let wait = self.host.random_below(backoff_bound(attempt) + 1);
        let next_try_ends = self.host.now_ms() + wait + u64::from(self.timeout_ms).min(2_000);
        if next_try_ends + DEADLINE_MARGIN_MS > self.host.deadline_ms() {
            return false;
        }
        self.host.sleep_ms(wait);
        true
    }
}

/// Signs `params` for `method` with the host's HMAC: base64 of HMAC-SHA1
/// over the canonical string-to-sign.
///
/// # Errors
///
/// The host cannot sign (no credential).
pub fn sign<H: Host>(
    host: &H,
    method: &str,
    params: &[(String, String)],
) -> Result<String, Failure> {
    use base64::Engine as _;
    let mac = host.sign(crate::string_to_sign(method, params).as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(mac))
}

/// The failure an error response describes.
#[must_use]
pub fn error_of(action: &str, status: u16, body: &[u8]) -> Failure {
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

/// Implements [`Host`] over a plugin world's imports (`secrets` for the
/// signature, `http` for requests, `context` for the call id and deadline),
/// as a type `$name` with a `$name::open()` constructor opening the
/// credential called `account`; also defines `plugin_error(Failure)`, the
/// failure as the world's `PluginError`. Give the path of the world's SDK
/// module, e.g. `aliyun_rpc::imports_host!(Imports, dcp_plugin_sdk::balancer);`.
///
/// A macro, not a type, because every world's bindings have their own
/// copies of the import types; this crate itself stays free of bindings.
#[macro_export]
macro_rules! imports_host {
    ($name:ident, $($sdk:ident)::+) => {
        /// The host's imports as the RPC client needs them.
        struct $name {
            credential: Result<$($sdk)::+::secrets::Credential, $($sdk)::+::PluginError>,
        }

        /// Attempts made in this instance; with the call id, a unique nonce.
        static ATTEMPTS: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);

        impl $name {
            /// The imports, with the credential called `account`.
            fn open() -> Self {
                Self {
                    credential: $($sdk)::+::secrets::open("account"),
                }
            }

            fn unauthorized(e: &$($sdk)::+::PluginError) -> $crate::client::Failure {
                $crate::client::Failure::new(
                    $crate::client::Kind::Unauthorized,
                    e.message.clone(),
                    false,
                )
            }

            fn millis_now() -> u64 {
                ::std::time::SystemTime::now()
                    .duration_since(::std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
        }

        impl $crate::client::Host for $name {
            fn key_id(&self) -> Result<String, $crate::client::Failure> {
                self.credential
                    .as_ref()
                    .map($($sdk)::+::secrets::Credential::key_id)
                    .map_err(Self::unauthorized)
            }

            fn sign(&self, data: &[u8]) -> Result<Vec<u8>, $crate::client::Failure> {
                // Aliyun keys its HMAC with `AccessKeySecret + "&"`.
                self.credential
                    .as_ref()
                    .map(|c| c.hmac_with_key_suffix($($sdk)::+::secrets::HmacAlg::Sha1, "&", data))
                    .map_err(Self::unauthorized)
            }

            fn post(
                &self,
                url: &str,
                body: String,
                timeout_ms: u32,
            ) -> Result<(u16, Vec<u8>), $crate::client::Fault> {
                use $($sdk)::+::http;
                http::send(&http::Request {
                    method: http::Method::Post,
                    url: url.to_owned(),
                    headers: vec![(
                        "content-type".into(),
                        "application/x-www-form-urlencoded".into(),
                    )],
                    body: Some(body.into_bytes()),
                    timeout_ms: Some(timeout_ms),
                })
                .map(|r| (r.status, r.body))
                .map_err(|e| $crate::client::Fault {
                    timed_out: e.kind == $($sdk)::+::ErrorKind::Timeout,
                    refused: e.kind == $($sdk)::+::ErrorKind::Unauthorized,
                    message: e.message,
                })
            }

            fn now_unix(&self) -> u64 {
                Self::millis_now() / 1000
            }

            fn now_ms(&self) -> u64 {
                Self::millis_now()
            }

            fn deadline_ms(&self) -> u64 {
                $($sdk)::+::context::deadline_unix_ms()
            }

            fn nonce(&self) -> String {
                format!(
                    "{}-{}",
                    $($sdk)::+::context::call_id(),
                    ATTEMPTS.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed)
                )
            }

            fn random_below(&self, bound: u64) -> u64 {
                use ::std::hash::{BuildHasher as _, Hasher as _};
                // std seeds RandomState from WASI's random source.
                let mut hasher = ::std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u64(ATTEMPTS.load(::std::sync::atomic::Ordering::Relaxed));
                hasher.finish() % bound.max(1)
            }

            fn sleep_ms(&self, ms: u64) {
                ::std::thread::sleep(::std::time::Duration::from_millis(ms));
            }
        }

        /// A failure as the world's `PluginError`.
        fn plugin_error(f: $crate::client::Failure) -> $($sdk)::+::PluginError {
            use $($sdk)::+::ErrorKind;
            let kind = match f.kind {
                $crate::client::Kind::InvalidInput => ErrorKind::InvalidInput,
                $crate::client::Kind::NotFound => ErrorKind::NotFound,
                $crate::client::Kind::Conflict => ErrorKind::Conflict,
                $crate::client::Kind::Unauthorized => ErrorKind::Unauthorized,
                $crate::client::Kind::Throttled => ErrorKind::Throttled,
                $crate::client::Kind::Unavailable => ErrorKind::Unavailable,
                $crate::client::Kind::Timeout => ErrorKind::Timeout,
                $crate::client::Kind::Internal => ErrorKind::Internal,
            };
            $($sdk)::+::PluginError {
                kind,
                message: f.message,
                provider_code: f.code,
                request_id: f.request_id,
                retryable: f.retryable,
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::Scripted;

    const ECS: Api<'static> = Api {
        endpoint: "https://ecs.aliyuncs.com",
        version: "2014-05-26",
    };

    fn params_of(url: &str, body: &str) -> Vec<(String, String)> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let mut all = crate::parse_pairs(query);
        all.extend(crate::parse_pairs(body));
        all
    }

    #[test]
    fn signature_vectors_pass_through_the_client_signer() {
        for v in crate::vectors::ALL {
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
                400,
                r#"{"Code":"ServiceIsConfiguring","Message":"busy","RequestId":"R2"}"#.into(),
            )),
            Ok((
                200,
                r#"{"RequestId":"R3","InstanceIdSets":{"InstanceIdSet":["i-1"]}}"#.into(),
            )),
        ]);
        let client = Client {
            host: &host,
            timeout_ms: 10_000,
        };
        let params = vec![
            ("ClientToken".to_owned(), "tok".to_owned()),
            ("RegionId".to_owned(), "cn-hangzhou".to_owned()),
        ];
        let answer = client.call(ECS, "RunInstances", &params).unwrap();
        assert_eq!(answer["RequestId"], "R3");
        let sent = host.sent.borrow();
        assert_eq!(sent.len(), 4);
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
        assert_eq!(nonces.len(), 4, "a fresh nonce per attempt");
    }

    #[test]
    fn one_attempt_reports_a_lost_reply_as_retryable_without_retrying() {
        let host = Scripted::new(vec![Err(Fault {
            message: "connection closed".into(),
            timed_out: false,
            refused: false,
        })]);
        let client = Client {
            host: &host,
            timeout_ms: 10_000,
        };
        let err = client.call_once(ECS, "DeleteInstance", &[]).unwrap_err();
        assert_eq!((err.kind, err.retryable), (Kind::Unavailable, true));
        assert_eq!(host.sent.borrow().len(), 1);
    }

    #[test]
    fn errors_carry_code_and_request_id_and_stop_at_the_deadline() {
        let host = Scripted::new(vec![Ok((400, r#"{"Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation. server string to sign is:GET&%2F&AccessKeyId%3Dtestid","RequestId":"R9"}"#.into()))]);
        let client = Client {
            host: &host,
            timeout_ms: 10_000,
        };
        let err = client.call(ECS, "DescribeRegions", &[]).unwrap_err();
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
        let client = Client {
            host: &host,
            timeout_ms: 10_000,
        };
        let vpc = Api {
            endpoint: "https://vpc.aliyuncs.com/",
            version: "2016-04-28",
        };
        let err = client.call(vpc, "DescribeVpcs", &[]).unwrap_err();
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
            classify(400, "ServiceIsConfiguring"),
            (Kind::Conflict, true)
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
}
