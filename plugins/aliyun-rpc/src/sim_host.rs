//! A [`Host`] for tests against a real endpoint (the Aliyun simulator,
//! in-process): reqwest on the test's tokio runtime, the test's own HMAC,
//! and a record of every request and how it was answered. Enabled by the
//! `sim-host` feature, for the simulator tests of the Aliyun plugins.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::{
    client::{Failure, Fault, Host},
    lenient::text,
};

/// Nonces unique in this process (each test may have its own simulator).
static NONCES: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One request as the endpoint answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its `Action`.
    pub action: String,
    /// Its body's parameters (the call's own, without the signed common ones).
    pub params: Vec<(String, String)>,
    /// The error code answered; `lost` when no reply came.
    pub code: Option<String>,
}

impl Sent {
    /// A parameter's value.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The host of a test.
#[derive(Debug)]
pub struct SimHost {
    /// The runtime requests are sent on (not the calling thread's).
    pub runtime: tokio::runtime::Handle,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// The AccessKeyId.
    pub key_id: String,
    /// The AccessKeySecret its HMAC uses.
    pub secret: String,
    /// Every request so far.
    pub sent: Mutex<Vec<Sent>>,
    /// When the current call must end (Unix ms); 0: always 30 s away, as
    /// if each request began a call of its own.
    pub deadline: AtomicU64,
}

impl SimHost {
    /// A host sending on `runtime` with these credentials.
    #[must_use]
    pub fn new(runtime: tokio::runtime::Handle, key_id: &str, secret: &str) -> Self {
        Self {
            runtime,
            http: reqwest::Client::new(),
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
            sent: Mutex::new(Vec::new()),
            deadline: AtomicU64::new(0),
        }
    }

    /// Makes the calls from now on end `after` from now, as DCP's deadline
    /// for one plugin call does.
    pub fn deadline_in(&self, after: Duration) {
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.deadline
            .store(now_ms().saturating_add(after), Ordering::Relaxed);
    }

    /// What was sent since the last look, and forgets it.
    pub fn take_sent(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Host for SimHost {
    fn key_id(&self) -> Result<String, Failure> {
        Ok(self.key_id.clone())
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure> {
        let key = crate::signing_key(&self.secret);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes())
            .map_err(|e| Failure::invalid(format!("HMAC key: {e}")))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    fn post(&self, url: &str, body: String, timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault> {
        let query = url.split_once('?').map_or("", |(_, q)| q);
        let action = crate::parse_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v)
            .unwrap_or_default();
        let params = crate::parse_pairs(&body);
        let reply = self.runtime.block_on(async {
            let response = self
                .http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .timeout(Duration::from_millis(timeout_ms.into()))
                .send()
                .await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.bytes().await?.to_vec()))
        });
        let code = match &reply {
            Ok((200, _)) => None,
            Ok((_, body)) => Some(
                serde_json::from_slice::<Value>(body)
                    .map(|v| text(&v, "Code"))
                    .unwrap_or_default(),
            ),
            Err(_) => Some("lost".to_owned()),
        };
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Sent {
                action,
                params,
                code,
            });
        reply.map_err(|e| Fault {
            timed_out: e.is_timeout(),
            refused: false,
            // As DCP's host says it: no URL (it carries the signature).
            message: e.without_url().to_string(),
        })
    }

    fn now_unix(&self) -> u64 {
        now_ms() / 1000
    }

    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn deadline_ms(&self) -> u64 {
        match self.deadline.load(Ordering::Relaxed) {
            // As long as DCP gives one plugin call.
            0 => now_ms() + 30_000,
            fixed => fixed,
        }
    }

    fn nonce(&self) -> String {
        format!("sim-test-{}", NONCES.fetch_add(1, Ordering::Relaxed))
    }

    fn random_below(&self, bound: u64) -> u64 {
        bound / 2
    }

    fn sleep_ms(&self, ms: u64) {
        // The client's backoff between attempts, not a test waiting.
        std::thread::sleep(Duration::from_millis(ms));
    }
}
