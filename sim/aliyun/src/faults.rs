//! Injected failures (reference §5.6): throttling and server errors before
//! any side effect, replies lost after the side effect, and slow replies —
//! drawn from a seeded generator so a failing run can be replayed.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::reply::ApiError;

/// Which failures to inject, and how often (rates are probabilities per
/// authenticated request, 0.0–1.0). The default injects nothing.
///
/// As JSON (for `PUT /_sim/faults`) every field is optional and
/// `slow_reply` is given as `slow_reply_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Answer 400 `Throttling.User` before doing anything.
    pub throttle_rate: f64,
    /// Answer 503 `ServiceUnavailable` or 500 `InternalError` before doing
    /// anything.
    pub server_error_rate: f64,
    /// Actions whose reply may be lost after their effect happened.
    pub drop_reply_after_effect: Vec<String>,
    /// How often a listed action's reply is lost: the connection closes
    /// without an HTTP response, so the client sees a transport error.
    pub drop_rate: f64,
    /// How long a slow reply waits (after the effect, before answering).
    #[serde(rename = "slow_reply_ms", with = "millis")]
    pub slow_reply: Option<Duration>,
    /// How often a reply is slow.
    pub slow_rate: f64,
}

/// [`Faults`] and the generator that decides each request's fate.
#[derive(Debug)]
pub(crate) struct Injector {
    faults: Faults,
    rng: StdRng,
}

/// What happens to a reply once the action ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Aftermath {
    pub(crate) drop_reply: bool,
    pub(crate) delay: Option<Duration>,
}

impl Injector {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub(crate) fn set(&mut self, faults: Faults) {
        self.faults = faults;
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults.clone()
    }

    fn chance(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.gen_range(0.0..1.0) < rate
    }

    /// A failure to answer instead of running the action, if any.
    pub(crate) fn before(&mut self) -> Result<(), ApiError> {
        if self.chance(self.faults.throttle_rate) {
            return Err(ApiError::new(
                400,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ));
        }
        if self.chance(self.faults.server_error_rate) {
            return Err(if self.rng.gen_bool(0.5) {
                ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "The request has failed due to a temporary failure of the server.",
                )
            } else {
                ApiError::new(
                    500,
                    "InternalError",
                    "The request processing has failed due to some unknown error, exception or failure.",
                )
            });
        }
        Ok(())
    }

    /// What happens to the reply of `action`, which has run.
    pub(crate) fn after(&mut self, action: &str) -> Aftermath {
        let listed = self
            .faults
            .drop_reply_after_effect
            .iter()
            .any(|a| a == action);
        let drop_reply = listed && self.chance(self.faults.drop_rate);
        let (slow, slow_rate) = (self.faults.slow_reply, self.faults.slow_rate);
        let delay = slow.filter(|_| !drop_reply && self.chance(slow_rate));
        Aftermath { drop_reply, delay }
    }
}

/// `Option<Duration>` as whole milliseconds.
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` hands us a reference.
    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let faults = Faults {
            throttle_rate: 0.3,
            server_error_rate: 0.3,
            drop_reply_after_effect: vec!["RunInstances".to_owned()],
            drop_rate: 0.5,
            ..Faults::default()
        };
        let run = |seed| {
            let mut injector = Injector::new(seed);
            injector.set(faults.clone());
            (0..200)
                .map(|_| {
                    let before = injector.before().err().map(|e| e.code);
                    (before, injector.after("RunInstances").drop_reply)
                })
                .collect::<Vec<_>>()
        };
        let fates = run(7);
        assert_eq!(fates, run(7));
        assert_ne!(fates, run(8));
        for code in ["Throttling.User", "ServiceUnavailable", "InternalError"] {
            assert!(
                fates.iter().any(|(c, _)| c.as_deref() == Some(code)),
                "{code}"
            );
        }
        assert!(fates.iter().any(|(_, dropped)| *dropped));
        assert!(fates.iter().any(|(c, dropped)| c.is_none() && !dropped));
    }

    #[test]
    fn json_form_uses_milliseconds_and_defaults() {
        let faults: Faults =
            serde_json::from_str(r#"{"slow_reply_ms": 1500, "slow_rate": 1}"#).unwrap();
        assert_eq!(faults.slow_reply, Some(Duration::from_millis(1500)));
        assert_eq!(faults.throttle_rate, 0.0);
        let text = serde_json::to_string(&faults).unwrap();
        assert!(text.contains("\"slow_reply_ms\":1500"), "{text}");
        let mut injector = Injector::new(1);
        injector.set(faults);
        assert_eq!(injector.after("X").delay, Some(Duration::from_millis(1500)));
        assert_eq!(Injector::new(1).before(), Ok(()));
    }
}
