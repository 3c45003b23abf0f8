//! The account's settings and the two products the plugin calls. Signing,
//! retries and error classification are `aliyun_rpc::client`'s, shared with
//! the `slb` plugin; `guest.rs` implements its `Host` with the host's imports.

use aliyun_rpc::client::{Api, Client};
pub(crate) use aliyun_rpc::client::{Failure, Host, Kind};
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
        let api = Api {
            endpoint,
            version: product.version(),
        };
        Client {
            host: self.host,
            timeout_ms: self.config.timeout_ms,
        }
        .call(api, action, params)
    }
}

#[cfg(test)]
mod tests {
    use aliyun_rpc::scripted::Scripted;

    use super::*;

    #[test]
    fn products_go_to_their_endpoints_with_their_versions() {
        let ok = || Ok((200, r#"{"RequestId":"R"}"#.to_owned()));
        let host = Scripted::new(vec![ok(), ok()]);
        let config = Config {
            vpc_endpoint: "http://127.0.0.1:9/".to_owned(),
            ..Config::default()
        };
        let rpc = Rpc {
            host: &host,
            config: &config,
        };
        rpc.call(Product::Ecs, "DescribeRegions", &[]).unwrap();
        rpc.call(Product::Vpc, "DescribeVpcs", &[]).unwrap();
        let sent = host.sent.borrow();
        assert!(
            sent[0].0.starts_with("https://ecs.aliyuncs.com/?"),
            "{}",
            sent[0].0
        );
        assert!(
            sent[1].0.starts_with("http://127.0.0.1:9/?"),
            "{}",
            sent[1].0
        );
        let version = |i: usize| {
            host.sent_params(i)
                .into_iter()
                .find(|(k, _)| k == "Version")
                .map(|(_, v)| v)
        };
        assert_eq!(version(0).as_deref(), Some("2014-05-26"));
        assert_eq!(version(1).as_deref(), Some("2016-04-28"));
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
