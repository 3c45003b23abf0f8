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
    config::{Config, SCHEMA},
    converge,
    publish::File,
    upstream,
};

struct Nginx;

fn settings() -> Result<Config, PluginError> {
    Config::parse(&context::config()).map_err(error)
}

impl Guest for Nginx {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "nginx".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description:
                "nginx upstreams and configuration files over SSH: checked with nginx -t, \
                          reloaded gracefully and verified, the previous files restored on failure"
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
        let config = settings()?;
        let upstreams = guest::upstreams(upstreams);
        // Refuse bad input before reaching for the node.
        upstream::check_all(&upstreams).map_err(error)?;
        let node = Session::connect(target, "nginx").map_err(error)?;
        let token = token(&context::call_id());
        converge::upstreams(&config, &upstreams, &node, &token)
            .map(|applied| guest::answer(applied, "upstreams applied", &[]))
            .map_err(error)
    }

    fn publish(files: Vec<ConfigFile>, target: Option<String>) -> Result<Applied, PluginError> {
        let config = settings()?;
        let files: Vec<File> = files
            .into_iter()
            .map(|f| File {
                path: f.path,
                content: f.content,
            })
            .collect();
        crate::publish::check(&files).map_err(error)?;
        let node = Session::connect(target, "nginx").map_err(error)?;
        let token = token(&context::call_id());
        converge::files(&config, &files, &node, &token)
            .map(|applied| guest::answer(applied, "files published", &[]))
            .map_err(error)
    }
}

dcp_plugin_sdk::balancer::export_load_balancer!(Nginx with_types_in dcp_plugin_sdk::balancer);
