//! The component: `balancer_kit`'s for a balancer changed over SSH (the
//! host's `ssh` to reach the node, `context` for the settings, the call id
//! and deadline), with nginx's settings, checks and steps, and `publish`.

use balancer_kit::{
    Applied, Failure,
    guest::{self, SshBalancer, error},
    node::Node,
    upstream::Upstream,
};
use dcp_plugin_sdk::balancer::{PluginError, exports::dcp::plugin::balancer as wit};

use crate::{
    config::{Config, SCHEMA},
    converge,
    publish::{self, File},
    upstream,
};

struct Nginx;

impl SshBalancer for Nginx {
    const NAME: &'static str = "nginx";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "nginx upstreams and configuration files over SSH: checked \
         with nginx -t, reloaded gracefully and verified, the previous files restored on failure";
    const SCHEMA: &'static str = SCHEMA;
    const BALANCER: &'static str = "nginx";
    type Config = Config;

    fn parse(config: &str) -> Result<Config, Failure> {
        Config::parse(config)
    }

    fn check(upstreams: &[Upstream]) -> Result<(), Failure> {
        upstream::check_all(upstreams)
    }

    fn apply(
        config: &Config,
        upstreams: &[Upstream],
        node: &dyn Node,
        token: &str,
    ) -> Result<Applied, Failure> {
        converge::upstreams(config, upstreams, node, token)
    }

    fn publish(
        files: Vec<wit::ConfigFile>,
        target: Option<String>,
    ) -> Result<wit::Applied, PluginError> {
        let config = guest::settings::<Self>()?;
        let files: Vec<File> = files
            .into_iter()
            .map(|f| File {
                path: f.path,
                content: f.content,
            })
            .collect();
        // Refuse bad input before reaching for the node.
        publish::check(&files).map_err(error)?;
        guest::on_node(target, "nginx", "files published", |node, token| {
            converge::files(&config, &files, node, token)
        })
    }
}

type Component = guest::Component<Nginx>;

dcp_plugin_sdk::balancer::export_load_balancer!(Component with_types_in dcp_plugin_sdk::balancer);
