//! The component: the `balancer` export over the host's imports (`ssh` to
//! reach the node, `context` for the settings, the call id and deadline).

use balancer_kit::{
    guest::{self, Session, error},
    script::token,
};
use dcp_plugin_sdk::balancer::{
    PluginError, PluginInfo, context,
    exports::dcp::plugin::balancer::{Applied, ConfigFile, Guest, Upstream},
};

use crate::{
    Failure, Kind,
    config::{Config, SCHEMA},
    converge, upstream,
};

struct Haproxy;

impl Guest for Haproxy {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "haproxy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "HAProxy backends over SSH through the Runtime API: servers added, \
                          drained, re-weighted and removed without a reload; the configuration \
                          file rewritten (haproxy -c first) so a restart keeps them"
                .into(),
            config_schema: SCHEMA.into(),
        }
    }

    fn validate_config(config: String) -> Result<(), PluginError> {
        Config::parse(&config).map(|_| ()).map_err(error)
    }

    fn apply_upstreams(
        upstreams: Vec<Upstream>,
        target: Option<String>,
    ) -> Result<Applied, PluginError> {
        let config = Config::parse(&context::config()).map_err(error)?;
        let upstreams = guest::upstreams(upstreams);
        // Refuse bad input before reaching for the node.
        upstream::check_all(&upstreams).map_err(error)?;
        let node = Session::connect(target, "HAProxy").map_err(error)?;
        let token = token(&context::call_id());
        converge::upstreams(&config, &upstreams, &node, &token)
            .map(|applied| guest::answer(applied, "upstreams applied", &[]))
            .map_err(error)
    }

    fn publish(_files: Vec<ConfigFile>, _target: Option<String>) -> Result<Applied, PluginError> {
        Err(error(Failure::new(
            Kind::Unsupported,
            "the haproxy plugin does not publish configuration files: it changes backend \
             servers through the Runtime API and keeps their lines in the configuration file; \
             the rest of the file is the operator's",
            false,
        )))
    }
}

dcp_plugin_sdk::balancer::export_load_balancer!(Haproxy with_types_in dcp_plugin_sdk::balancer);
