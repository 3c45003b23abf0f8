//! The component: `balancer_kit`'s for a balancer changed over SSH (the
//! host's `ssh` to reach the node, `context` for the settings, the call id
//! and deadline), with nginx's settings, checks and steps, and `publish`.

use balancer_kit::guest::{self, Plugin, error};
use dcp_plugin_sdk::balancer::{PluginError, exports::dcp::plugin::balancer as wit};

use crate::{
    config::{Config, SCHEMA},
    converge,
    publish::File,
    upstream,
};

balancer_kit::export_ssh_balancer!(
    Config,
    Plugin {
        name: "nginx",
        version: env!("CARGO_PKG_VERSION"),
        description: "nginx upstreams and configuration files over SSH: checked with nginx -t, \
                      reloaded gracefully and verified, the previous files restored on failure",
        balancer: "nginx",
        schema: SCHEMA,
        settings: Config::parse,
        check: upstream::check_all,
        apply: converge::upstreams,
        publish,
    }
);

/// `publish`: files under the prefix, checked before the node is reached.
fn publish(
    files: Vec<wit::ConfigFile>,
    target: Option<String>,
) -> Result<wit::Applied, PluginError> {
    let config = guest::settings(Config::parse)?;
    let files: Vec<File> = files
        .into_iter()
        .map(|f| File {
            path: f.path,
            content: f.content,
        })
        .collect();
    crate::publish::check(&files).map_err(error)?;
    guest::on_node(target, "nginx", "files published", |node, token| {
        converge::files(&config, &files, node, token)
    })
}
