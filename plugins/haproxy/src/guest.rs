//! The component: `balancer_kit`'s for a balancer changed over SSH (the
//! host's `ssh` to reach the node, `context` for the settings, the call id
//! and deadline), with HAProxy's settings, checks and steps.

use balancer_kit::{
    Failure, Kind,
    guest::{Plugin, error},
};
use dcp_plugin_sdk::balancer::{PluginError, exports::dcp::plugin::balancer as wit};

use crate::{
    config::{Config, SCHEMA},
    converge, upstream,
};

balancer_kit::export_ssh_balancer!(
    Config,
    Plugin {
        name: "haproxy",
        version: env!("CARGO_PKG_VERSION"),
        description: "HAProxy backends over SSH through the Runtime API: servers added, \
                      drained, re-weighted and removed without a reload; the configuration \
                      file rewritten (haproxy -c first) so a restart keeps them",
        balancer: "HAProxy",
        schema: SCHEMA,
        settings: Config::parse,
        check: upstream::check_all,
        apply: converge::upstreams,
        publish: unsupported,
    }
);

/// `publish` is not what this plugin does.
fn unsupported(
    _files: Vec<wit::ConfigFile>,
    _target: Option<String>,
) -> Result<wit::Applied, PluginError> {
    Err(error(Failure::new(
        Kind::Unsupported,
        "the haproxy plugin does not publish configuration files: it changes backend \
         servers through the Runtime API and keeps their lines in the configuration file; \
         the rest of the file is the operator's",
        false,
    )))
}
