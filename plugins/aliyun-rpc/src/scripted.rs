//! A [`Host`] for tests that answers from a script and records what was
//! sent, on a virtual clock (sleeping advances it). Enabled by the
//! `scripted` feature, for the tests of crates built on [`crate::client`].

use std::cell::RefCell;

use hmac::{Hmac, Mac};

use crate::client::{Failure, Fault, Host};

/// A scripted host.
#[derive(Debug)]
pub struct Scripted {
    /// The AccessKeySecret its HMAC uses.
    pub secret: String,
    /// The replies still to give, the next one last.
    pub replies: RefCell<Vec<Result<(u16, String), Fault>>>,
    /// Every request sent: the URL and the body.
    pub sent: RefCell<Vec<(String, String)>>,
    /// The virtual clock, in milliseconds since the Unix epoch.
    pub clock_ms: RefCell<u64>,
    /// Nonces handed out so far.
    pub nonces: RefCell<u64>,
}

/// Where the virtual clock starts; the deadline is 30 s later.
const START_MS: u64 = 1_700_000_000_000;

impl Scripted {
    /// A host giving `replies` in order, with the secret `testsecret`.
    #[must_use]
    pub fn new(replies: Vec<Result<(u16, String), Fault>>) -> Self {
        Self {
            secret: "testsecret".into(),
            replies: RefCell::new(replies.into_iter().rev().collect()),
            sent: RefCell::new(Vec::new()),
            clock_ms: RefCell::new(START_MS),
            nonces: RefCell::new(0),
        }
    }

    /// The parameters of request `i`: its query and its body, decoded.
    #[must_use]
    pub fn sent_params(&self, i: usize) -> Vec<(String, String)> {
        let (url, body) = self.sent.borrow()[i].clone();
        let mut all = crate::parse_pairs(url.split_once('?').map_or("", |(_, q)| q));
        all.extend(crate::parse_pairs(&body));
        all
    }
}

impl Host for Scripted {
    fn key_id(&self) -> Result<String, Failure> {
        Ok("testid".into())
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut mac =
            Hmac::<sha1::Sha1>::new_from_slice(crate::signing_key(&self.secret).as_bytes())
                .map_err(|e| Failure::invalid(format!("HMAC key: {e}")))?;
        mac.update(data);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    #[allow(clippy::panic)]
    fn post(&self, url: &str, body: String, _timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault> {
        self.sent.borrow_mut().push((url.to_owned(), body));
        let Some(reply) = self.replies.borrow_mut().pop() else {
            panic!("no scripted reply left for {url}");
        };
        reply.map(|(status, body)| (status, body.into_bytes()))
    }

    fn now_unix(&self) -> u64 {
        *self.clock_ms.borrow() / 1000
    }

    fn now_ms(&self) -> u64 {
        *self.clock_ms.borrow()
    }

    fn deadline_ms(&self) -> u64 {
        START_MS + 30_000
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
