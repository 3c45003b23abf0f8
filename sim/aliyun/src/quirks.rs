//! Lenient-parsing fodder (reference §2.0, §5.9): the real API now and then
//! answers a number as a string and leaves out a list wrapper that would be
//! empty. A driver that only works with the tidy form breaks on the first
//! such answer, so the simulator gives it some — seeded, to be replayable.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::Value;

/// Numeric fields the SDKs are known to receive either way.
const NUMBERS: &[&str] = &[
    "TotalCount",
    "PageNumber",
    "PageSize",
    "Cpu",
    "Memory",
    "CpuCoreCount",
    "MemorySize",
    "InternetMaxBandwidthOut",
    "InternetMaxBandwidthIn",
    "TradePrice",
    "Size",
    "AvailableIpAddressCount",
    "Bandwidth",
];

/// Decides, per answer, whether and where to be quirky.
#[derive(Debug)]
pub(crate) struct Quirks {
    enabled: bool,
    rng: StdRng,
}

impl Quirks {
    /// How often an answer is quirky at all, and then how often each
    /// eligible field is.
    const ANSWER_RATE: f64 = 0.5;
    const FIELD_RATE: f64 = 0.5;

    pub(crate) fn new(enabled: bool, seed: u64) -> Self {
        Self {
            enabled,
            // Its own stream: quirks must not shift which requests fail.
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
        }
    }

    /// Perhaps roughens `body`, a success answer.
    pub(crate) fn apply(&mut self, body: &mut Value) {
        if self.enabled && self.rng.gen_bool(Self::ANSWER_RATE) {
            self.walk(body);
        }
    }

    fn walk(&mut self, value: &mut Value) {
        match value {
            Value::Object(members) => {
                let keys: Vec<String> = members.keys().cloned().collect();
                for key in keys {
                    let empty_wrapper = matches!(
                        members.get(&key),
                        Some(Value::Object(inner))
                            if inner.len() == 1
                                && inner.values().all(|v| v.as_array().is_some_and(Vec::is_empty))
                    );
                    if empty_wrapper && self.rng.gen_bool(Self::FIELD_RATE) {
                        members.remove(&key);
                        continue;
                    }
                    let Some(member) = members.get_mut(&key) else {
                        continue;
                    };
                    if let Value::Number(n) = member {
                        if NUMBERS.contains(&key.as_str()) && self.rng.gen_bool(Self::FIELD_RATE) {
                            *member = Value::String(n.to_string());
                        }
                    } else {
                        self.walk(member);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn quirks_only_touch_known_numbers_and_empty_wrappers() {
        let tidy = json!({
            "TotalCount": 1,
            "Name": "n",
            "Instances": {"Instance": [{
                "Cpu": 2,
                "SerialNumber": 7,
                "InnerIpAddress": {"IpAddress": []},
                "PublicIpAddress": {"IpAddress": ["127.21.128.1"]},
            }]},
        });
        let mut quirks = Quirks::new(true, 3);
        let (mut stringly, mut omitted) = (false, false);
        for _ in 0..50 {
            let mut body = tidy.clone();
            quirks.apply(&mut body);
            let instance = &body["Instances"]["Instance"][0];
            stringly |= body["TotalCount"] == "1" || instance["Cpu"] == "2";
            omitted |= instance.get("InnerIpAddress").is_none();
            assert_eq!(instance["SerialNumber"], 7);
            assert_eq!(instance["PublicIpAddress"]["IpAddress"][0], "127.21.128.1");
            assert_eq!(body["Name"], "n");
        }
        assert!(stringly && omitted);
        let mut body = tidy.clone();
        Quirks::new(false, 3).apply(&mut body);
        assert_eq!(body, tidy);
    }
}
