//! The component: the `cloud` export over the host's imports (`http` for
//! requests, `secrets` for the signature, `context` for the deadline).

use dcp_plugin_sdk::cloud::{
    self, PluginError, PluginInfo, context,
    exports::dcp::plugin::cloud::{
        Choice, Guest, Instance, InstancePage, InstanceSpec, InstanceState,
    },
};

use crate::{
    cloud::{Cloud, Item, Launch, Machine, Page, State},
    rpc::{CONFIG_SCHEMA, Config, Failure, Rpc},
};

// `Imports`: the RPC client's `Host` over this world's imports, and
// `plugin_error`, shared with the `slb` plugin.
aliyun_rpc::imports_host!(Imports, dcp_plugin_sdk::cloud);

/// Runs `f` against the account's cloud (its configuration from the context).
fn with_cloud<T>(
    f: impl FnOnce(&Cloud<'_, Imports>) -> Result<T, Failure>,
) -> Result<T, PluginError> {
    let config = Config::parse(&context::config()).map_err(plugin_error)?;
    let host = Imports::open();
    let cloud = Cloud {
        rpc: Rpc {
            host: &host,
            config: &config,
        },
    };
    f(&cloud).map_err(plugin_error)
}

fn choices(items: Vec<Item>) -> Vec<Choice> {
    items
        .into_iter()
        .map(|i| Choice {
            id: i.id,
            name: i.name,
            details: i.details.to_string(),
        })
        .collect()
}

fn instance(m: Machine) -> Instance {
    Instance {
        id: m.id,
        name: m.name,
        region: m.region,
        zone: m.zone,
        state: match m.state {
            State::Pending => InstanceState::Pending,
            State::Starting => InstanceState::Starting,
            State::Running => InstanceState::Running,
            State::Stopping => InstanceState::Stopping,
            State::Stopped => InstanceState::Stopped,
            State::Deleting => InstanceState::Deleting,
            State::Unknown => InstanceState::Unknown,
        },
        private_ips: m.private_ips,
        public_ips: m.public_ips,
        instance_type: m.instance_type,
        image: m.image,
        created_at: m.created_at,
    }
}

struct Aliyun;

impl Guest for Aliyun {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "aliyun".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Aliyun ECS machines and VPC look-ups".into(),
            config_schema: CONFIG_SCHEMA.into(),
        }
    }

    fn validate_config(config: String) -> Result<(), PluginError> {
        let config = Config::parse(&config).map_err(plugin_error)?;
        let host = Imports::open();
        // A signed call proves the endpoint, the key and the secret.
        Cloud {
            rpc: Rpc {
                host: &host,
                config: &config,
            },
        }
        .regions()
        .map(drop)
        .map_err(plugin_error)
    }

    fn list_regions() -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.regions()).map(choices)
    }

    fn list_zones(region: String) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.zones(&region)).map(choices)
    }

    fn list_vpcs(region: String) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.vpcs(&region)).map(choices)
    }

    fn list_subnets(
        region: String,
        vpc: String,
        zone: Option<String>,
    ) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.subnets(&region, &vpc, zone.as_deref())).map(choices)
    }

    fn list_images(region: String) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.images(&region)).map(choices)
    }

    fn list_instance_types(
        region: String,
        zone: Option<String>,
    ) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.instance_types(&region, zone.as_deref())).map(choices)
    }

    fn list_security_groups(
        region: String,
        vpc: Option<String>,
    ) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.security_groups(&region, vpc.as_deref())).map(choices)
    }

    fn list_disk_categories(region: String, zone: String) -> Result<Vec<Choice>, PluginError> {
        with_cloud(|c| c.disk_categories(&region, &zone)).map(choices)
    }

    fn list_charge_types() -> Result<Vec<Choice>, PluginError> {
        Ok(choices(Cloud::<Imports>::charge_types()))
    }

    fn create_instances(
        spec: InstanceSpec,
        count: u32,
        idempotency_key: String,
    ) -> Result<Vec<String>, PluginError> {
        let launch = Launch {
            region: spec.region,
            zone: spec.zone,
            subnet: spec.subnet,
            security_group: spec.security_group,
            instance_type: spec.instance_type,
            image: spec.image,
            system_disk: (spec.system_disk.category, spec.system_disk.size_gb),
            data_disks: spec
                .data_disks
                .into_iter()
                .map(|d| (d.category, d.size_gb))
                .collect(),
            internet: spec.internet.map(|i| (i.charge_type, i.max_bandwidth_out)),
            instance_charge_type: spec.instance_charge_type,
            name_prefix: spec.name_prefix,
            ssh_public_key: spec.ssh_public_key,
            tags: spec.tags,
        };
        cloud::info(
            "creating instances",
            &[("count", &count.to_string()), ("zone", &launch.zone)],
        );
        with_cloud(|c| c.create(&launch, count, &idempotency_key))
    }

    fn get_instance(region: String, id: String) -> Result<Instance, PluginError> {
        with_cloud(|c| c.get(&region, &id)).map(instance)
    }

    fn list_instances(
        region: String,
        page: Option<String>,
        page_size: u32,
    ) -> Result<InstancePage, PluginError> {
        with_cloud(|c| c.list(&region, page.as_deref(), page_size)).map(|page: Page| InstancePage {
            instances: page.machines.into_iter().map(instance).collect(),
            total: page.total,
            next_page: page.next,
        })
    }

    fn start_instance(region: String, id: String) -> Result<(), PluginError> {
        with_cloud(|c| c.start(&region, &id))
    }

    fn stop_instance(region: String, id: String, force: bool) -> Result<(), PluginError> {
        with_cloud(|c| c.stop(&region, &id, force))
    }

    fn delete_instance(region: String, id: String) -> Result<(), PluginError> {
        with_cloud(|c| c.delete(&region, &id))
    }

    fn allocate_public_ip(region: String, id: String) -> Result<String, PluginError> {
        with_cloud(|c| c.allocate_public_ip(&region, &id))
    }
}

dcp_plugin_sdk::cloud::export_cloud_provider!(Aliyun with_types_in dcp_plugin_sdk::cloud);
