//! The plugin's settings: which load balancer, in which region, serving
//! which DCP upstream, and where Aliyun's APIs are.

use aliyun_rpc::client::Failure;
use serde::Deserialize;

/// The settings (the unit's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// SLB endpoint, scheme included.
    #[serde(default = "default_slb_endpoint")]
    pub(crate) slb_endpoint: String,
    /// ECS endpoint, scheme included (instances are found there).
    #[serde(default = "default_ecs_endpoint")]
    pub(crate) ecs_endpoint: String,
    /// The region of the load balancer and its backends.
    #[serde(default = "default_region")]
    pub(crate) region: String,
    /// The SLB instance, `lb-…`.
    pub(crate) load_balancer_id: String,
    /// The DCP upstream this load balancer serves.
    pub(crate) upstream: String,
    /// Milliseconds one HTTP attempt may take.
    #[serde(default = "default_timeout_ms")]
    pub(crate) timeout_ms: u32,
}

fn default_slb_endpoint() -> String {
    "https://slb.aliyuncs.com".to_owned()
}

fn default_ecs_endpoint() -> String {
    "https://ecs.aliyuncs.com".to_owned()
}

fn default_region() -> String {
    "cn-hangzhou".to_owned()
}

fn default_timeout_ms() -> u32 {
    10_000
}

/// The JSON Schema of [`Config`], for DCP's unit form.
pub(crate) const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,
"required":["load_balancer_id","upstream"],
"properties":{
"load_balancer_id":{"type":"string","minLength":1,"maxLength":64,"pattern":"^[A-Za-z0-9._-]+$","description":"the SLB instance, e.g. lb-bp1o94dp5i6ea0000"},
"upstream":{"type":"string","minLength":1,"maxLength":64,"pattern":"^[A-Za-z0-9_-]+$","description":"the DCP upstream whose members become the load balancer's backend servers"},
"region":{"type":"string","default":"cn-hangzhou","pattern":"^[a-z0-9-]{1,64}$","description":"the load balancer's region"},
"slb_endpoint":{"type":"string","default":"https://slb.aliyuncs.com","description":"SLB API endpoint"},
"ecs_endpoint":{"type":"string","default":"https://ecs.aliyuncs.com","description":"ECS API endpoint (backend addresses are looked up there)"},
"timeout_ms":{"type":"integer","minimum":100,"maximum":60000,"default":10000,"description":"per HTTP attempt"}}}"#;

fn all_of(value: &str, allowed: impl Fn(u8) -> bool) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(allowed)
}

impl Config {
    /// Parses and checks a configuration document; errors name the field.
    pub(crate) fn parse(text: &str) -> Result<Self, Failure> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let config: Self = serde_json::from_str(text)
            .map_err(|e| Failure::invalid(format!("configuration: {e}")))?;
        for (field, url) in [
            ("slb_endpoint", &config.slb_endpoint),
            ("ecs_endpoint", &config.ecs_endpoint),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Failure::invalid(format!(
                    "{field}: {url:?} must start with https:// or http://"
                )));
            }
        }
        if !all_of(&config.region, |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
        }) {
            return Err(Failure::invalid(format!(
                "region: {:?} is not a region id (e.g. cn-hangzhou)",
                config.region
            )));
        }
        if !all_of(&config.load_balancer_id, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
        }) {
            return Err(Failure::invalid(format!(
                "load_balancer_id: {:?} is not a load balancer id (e.g. lb-bp1o94dp5i6ea0000)",
                config.load_balancer_id
            )));
        }
        if !all_of(&config.upstream, |b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
        }) {
            return Err(Failure::invalid(format!(
                "upstream: {:?} must be 1 to 64 letters, digits, _ or -",
                config.upstream
            )));
        }
        if !(100..=60_000).contains(&config.timeout_ms) {
            return Err(Failure::invalid("timeout_ms: must be 100 to 60000"));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn message(text: &str) -> String {
        Config::parse(text).unwrap_err().message
    }

    #[test]
    fn the_two_required_fields_are_enough_and_defaults_fill_the_rest() {
        let config = Config::parse(r#"{"load_balancer_id":"lb-1","upstream":"web"}"#).unwrap();
        assert_eq!(config.slb_endpoint, "https://slb.aliyuncs.com");
        assert_eq!(config.ecs_endpoint, "https://ecs.aliyuncs.com");
        assert_eq!(config.region, "cn-hangzhou");
        assert_eq!(config.timeout_ms, 10_000);
    }

    #[test]
    fn errors_name_the_field() {
        assert!(message("").contains("load_balancer_id"), "{}", message(""));
        assert!(message(r#"{"load_balancer_id":"lb-1"}"#).contains("upstream"));
        assert!(
            message(r#"{"load_balancer_id":"lb-1","upstream":"web","port":1}"#)
                .contains("unknown field `port`")
        );
        for (field, value) in [
            ("slb_endpoint", r#""ftp://x""#),
            ("ecs_endpoint", r#""slb.aliyuncs.com""#),
            ("region", r#""CN HZ""#),
            ("load_balancer_id", r#""lb 1""#),
            ("upstream", r#""a/b""#),
            ("timeout_ms", "5"),
        ] {
            let mut doc: serde_json::Map<String, Value> =
                serde_json::from_str(r#"{"load_balancer_id":"lb-1","upstream":"web"}"#).unwrap();
            doc.insert(field.to_owned(), serde_json::from_str(value).unwrap());
            let text = Value::Object(doc).to_string();
            assert!(
                message(&text).starts_with(field),
                "{field}: {}",
                message(&text)
            );
        }
    }

    #[test]
    fn the_schema_describes_exactly_the_fields() {
        let schema: Value = serde_json::from_str(SCHEMA).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        // A document with every property's default (or a sample) parses.
        let mut doc = serde_json::Map::new();
        for (name, p) in properties {
            let sample = p.get("default").cloned().unwrap_or_else(|| "x-1".into());
            doc.insert(name.clone(), sample);
        }
        let config = Config::parse(&Value::Object(doc).to_string()).unwrap();
        assert_eq!(config.load_balancer_id, "x-1");
        assert_eq!(properties.len(), 6);
        assert_eq!(
            schema["required"],
            serde_json::json!(["load_balancer_id", "upstream"])
        );
    }
}
