//! The component: the `balancer` export over the host's imports (`http` for
//! SLB and ECS, `secrets` for the signature, `context` for the settings,
//! the call id and the deadline).

use aliyun_rpc::client::{Client, Failure};
use dcp_plugin_sdk::balancer::{
    PluginError, PluginInfo, context,
    exports::dcp::plugin::balancer::{Applied, ConfigFile, Guest, Upstream},
};

use crate::{
    config::{Config, SCHEMA},
    converge::Slb,
};

// `Imports`: the RPC client's `Host` over this world's imports, and
// `plugin_error`, shared with the `aliyun` plugin.
aliyun_rpc::imports_host!(Imports, dcp_plugin_sdk::balancer);

struct SlbPlugin;

fn settings() -> Result<Config, PluginError> {
    Config::parse(&context::config()).map_err(plugin_error)
}

impl Guest for SlbPlugin {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "slb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Aliyun SLB: an upstream's members as the load balancer's ECS backend \
                          servers, found by private address, batched by 20"
                .into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn validate_config(config: String) -> Result<(), PluginError> {
        Config::parse(&config).map(drop).map_err(plugin_error)
    }

    fn apply_upstreams(
        upstreams: Vec<Upstream>,
        target: Option<String>,
    ) -> Result<Applied, PluginError> {
        if let Some(target) = target {
            return Err(plugin_error(Failure::invalid(format!(
                "target: SLB is a cloud load balancer, reached through its API; \
                 call it without a node target (given {target:?})"
            ))));
        }
        let config = settings()?;
        let upstreams = balancer_kit::guest::upstreams(upstreams);
        let host = Imports::open();
        let slb = Slb {
            client: Client {
                host: &host,
                timeout_ms: config.timeout_ms,
            },
            config: &config,
        };
        slb.apply(&upstreams)
            .map(|applied| {
                balancer_kit::guest::answer(
                    applied,
                    "upstreams applied",
                    &[("load_balancer", &config.load_balancer_id)],
                )
            })
            .map_err(plugin_error)
    }

    fn publish(_files: Vec<ConfigFile>, _target: Option<String>) -> Result<Applied, PluginError> {
        Err(PluginError::unsupported(
            "SLB has no configuration files: its listeners are Aliyun's (console or API), \
             and this plugin manages only the backend servers of apply-upstreams",
        ))
    }
}

dcp_plugin_sdk::balancer::export_load_balancer!(SlbPlugin with_types_in dcp_plugin_sdk::balancer);
