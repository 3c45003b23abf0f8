//! The component: `balancer_kit`'s for a balancer changed over SSH (the
//! host's `ssh` to reach the node, `context` for the settings, the call id
//! and deadline), with HAProxy's settings, checks and steps.

use balancer_kit::{
    Applied, Failure, Kind,
    guest::{self, SshBalancer, error},
    node::Node,
    upstream::Upstream,
};
use dcp_plugin_sdk::balancer::{PluginError, exports::dcp::plugin::balancer as wit};

use crate::{
    config::{Config, SCHEMA},
    converge, upstream,
};

struct Haproxy;

impl SshBalancer for Haproxy {
    const NAME: &'static str = "haproxy";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "HAProxy backends over SSH through the Runtime API: servers \
         added, drained, re-weighted and removed without a reload; the configuration file \
         rewritten (haproxy -c first) so a restart keeps them";
    const SCHEMA: &'static str = SCHEMA;
    const BALANCER: &'static str = "HAProxy";
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
}

type Component = guest::Component<Haproxy>;

dcp_plugin_sdk::balancer::export_load_balancer!(Component with_types_in dcp_plugin_sdk::balancer);
