//! Who is calling: the common signing parameters, the timestamp window on an
//! injectable clock, the access key, the signature and nonce replay — in the
//! order the gateway checks them, so a driver sees the error it would see.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{cloud::lock, options::Account, params::Params, reply::ApiError, signature};

/// How far a request's `Timestamp` may be from the server's clock, and how
/// long a nonce is remembered: a replay after that would be refused as
/// expired anyway.
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The server clock: the system clock plus an offset tests can set, so the
/// timestamp window can be crossed without waiting.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    /// Seconds since the epoch, as the simulated cloud sees them.
    pub(crate) fn now(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        system.saturating_add(self.offset_secs.load(Ordering::Relaxed))
    }

    pub(crate) fn set_offset(&self, secs: i64) {
        self.offset_secs.store(secs, Ordering::Relaxed);
    }
}

/// The accepted keys and the nonces already seen.
#[derive(Debug)]
pub(crate) struct Auth {
    accounts: HashMap<String, Account>,
    nonces: Mutex<Nonces>,
}

impl Auth {
    pub(crate) fn new(accounts: &[Account]) -> Self {
        Self {
            accounts: accounts
                .iter()
                .map(|a| (a.key_id.clone(), a.clone()))
                .collect(),
            nonces: Mutex::new(Nonces::default()),
        }
    }

    /// Checks a request signed for `method`; answers its AccessKeyId.
    pub(crate) fn authenticate(
        &self,
        clock: &Clock,
        method: &str,
        params: &Params,
    ) -> Result<String, ApiError> {
        let key_id = params.required("AccessKeyId")?;
        let sig_method = params.required("SignatureMethod")?;
        let sig_version = params.required("SignatureVersion")?;
        let nonce = params.required("SignatureNonce")?;
        let timestamp = params.required("Timestamp")?;
        let Some(signature) = params.value("Signature") else {
            return Err(ApiError::new(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            ));
        };
        if sig_method != aliyun_rpc::SIGNATURE_METHOD {
            return Err(ApiError::new(
                400,
                "InvalidSignatureMethod",
                "Specified signature method is not supported.",
            ));
        }
        if sig_version != aliyun_rpc::SIGNATURE_VERSION {
            return Err(ApiError::new(
                400,
                "InvalidSignatureVersion",
                "Specified signature version is not supported.",
            ));
        }
        let Some(sent) = aliyun_rpc::parse_timestamp(timestamp) else {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Format",
                "Specified time stamp or date value is not well formatted.",
            ));
        };
        let skew = i64::try_from(sent)
            .unwrap_or(i64::MAX)
            .abs_diff(clock.now());
        if skew > WINDOW.as_secs() {
            return Err(ApiError::new(
                400,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            ));
        }
        let Some(account) = self.accounts.get(key_id) else {
            return Err(ApiError::new(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ));
        };
        if !account.active {
            return Err(ApiError::new(
                400,
                "InvalidAccessKeyId.Inactive",
                "Specified access key is disabled.",
            ));
        }
        if let Err(sts) = signature::verify(&account.secret, method, &params.pairs(), signature) {
            return Err(ApiError::new(
                400,
                "SignatureDoesNotMatch",
                format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{sts}"
                ),
            ));
        }
        // Only after the signature: a forger must not be able to burn nonces.
        if !lock(&self.nonces).first_use(key_id, nonce) {
            return Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        Ok(key_id.to_owned())
    }
}

/// Nonces per key, remembered for [`WINDOW`].
#[derive(Debug, Default)]
struct Nonces {
    seen: HashSet<(String, String)>,
    by_age: VecDeque<(Instant, (String, String))>,
}

impl Nonces {
    fn first_use(&mut self, key_id: &str, nonce: &str) -> bool {
        let now = Instant::now();
        while let Some((at, _)) = self.by_age.front() {
            if now.duration_since(*at) < WINDOW {
                break;
            }
            if let Some((_, old)) = self.by_age.pop_front() {
                self.seen.remove(&old);
            }
        }
        let entry = (key_id.to_owned(), nonce.to_owned());
        if self.seen.contains(&entry) {
            return false;
        }
        self.seen.insert(entry.clone());
        self.by_age.push_back((now, entry));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_single_use_per_key() {
        let mut nonces = Nonces::default();
        assert!(nonces.first_use("k1", "n"));
        assert!(!nonces.first_use("k1", "n"));
        assert!(nonces.first_use("k2", "n"));
    }
}
