//! The account's settings and the three products the plugin calls. Signing,
//! retries and error classification are `aliyun_rpc::client`'s, shared with
//! the `slb` plugin; `guest.rs` implements its `Host` with the host's imports.

pub(crate) use aliyun_rpc::client::{Failure, Host, Kind};
use aliyun_rpc::{
    client::{Api, Client},
    lenient::{list, number},
};
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
    /// SLB endpoint, scheme included (the account's load balancers).
    pub slb_endpoint: String,
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
            slb_endpoint: "https://slb.aliyuncs.com".to_owned(),
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
"slb_endpoint":{"type":"string","default":"https://slb.aliyuncs.com","description":"SLB (CLB) API endpoint"},
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
            ("slb_endpoint", &config.slb_endpoint),
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

/// The three products the plugin calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    /// Elastic Compute Service.
    Ecs,
    /// Virtual Private Cloud.
    Vpc,
    /// Server Load Balancer (CLB).
    Slb,
}

impl Product {
    fn version(self) -> &'static str {
        match self {
            Self::Ecs => "2014-05-26",
            Self::Vpc => "2016-04-28",
            Self::Slb => aliyun_rpc::slb::VERSION,
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
            Product::Slb => &self.config.slb_endpoint,
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

    /// Every page of a listing (`PageNumber`, `PageSize` 100), concatenated:
    /// the items of `answer[outer][inner]`.
    pub(crate) fn all_pages(
        &self,
        product: Product,
        action: &str,
        params: &[(String, String)],
        outer: &str,
        inner: &str,
    ) -> Result<Vec<Value>, Failure> {
        const PAGE: u32 = crate::cloud::PAGE;
        let mut items = Vec::new();
        for page in 1.. {
            let mut paged = params.to_vec();
            paged.push(("PageNumber".to_owned(), page.to_string()));
            paged.push(("PageSize".to_owned(), PAGE.to_string()));
            let answer = self.call(product, action, &paged)?;
            let got = list(&answer, outer, inner);
            items.extend(got.iter().cloned());
            let total = number(&answer, "TotalCount").unwrap_or(0.0);
            #[allow(clippy::cast_precision_loss)]
            let done = got.len() < PAGE as usize || items.len() as f64 >= total;
            if done || page >= 1000 {
                break;
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use aliyun_rpc::scripted::Scripted;

    use super::*;

    #[test]
    fn products_go_to_their_endpoints_with_their_versions() {
        let ok = || Ok((200, r#"{"RequestId":"R"}"#.to_owned()));
        let host = Scripted::new(vec![ok(), ok(), ok()]);
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
        rpc.call(Product::Slb, "DescribeLoadBalancers", &[])
            .unwrap();
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
        assert!(sent[2].0.starts_with("https://slb.aliyuncs.com/?"));
        assert_eq!(version(2).as_deref(), Some("2014-05-15"));
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
            Config::parse(r#"{"slb_endpoint":"slb.aliyuncs.com"}"#)
                .unwrap_err()
                .message
                .starts_with("slb_endpoint")
        );
        let schema: Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert_eq!(
            schema["properties"]["slb_endpoint"]["default"],
            Config::default().slb_endpoint
        );
        assert!(
            Config::parse(r#"{"endpoint":"x"}"#)
                .unwrap_err()
                .message
                .contains("unknown field")
        );
    }
}
