//! The component: the `cloud` and `load-balancers` exports of world
//! `cloud-provider-with-load-balancers` over the host's imports (`http` for
//! requests, `secrets` for the signature, `context` for the deadline).

use dcp_plugin_sdk_cloud_lb::{
    self as cloud, PluginError, PluginInfo, context,
    exports::dcp::plugin::{
        cloud::{Choice, Guest, Instance, InstancePage, InstanceSpec, InstanceState},
        load_balancers as lb,
    },
};

use crate::{
    balancers::{self, Balancers, Health},
    cloud::{Cloud, Item, Launch, Machine, Page, State},
    rpc::{CONFIG_SCHEMA, Config, Failure, Rpc},
};

// `Imports`: the RPC client's `Host` over this world's imports, and
// `plugin_error`, shared with the `slb` plugin.
aliyun_rpc::imports_host!(Imports, dcp_plugin_sdk_cloud_lb);

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
            description: "Aliyun ECS machines, VPC look-ups and SLB load balancers".into(),
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

/// Runs `f` against the account's load balancers.
fn with_balancers<T>(
    f: impl FnOnce(&Balancers<'_, Imports>) -> Result<T, Failure>,
) -> Result<T, PluginError> {
    let config = Config::parse(&context::config()).map_err(plugin_error)?;
    let host = Imports::open();
    let balancers = Balancers {
        rpc: Rpc {
            host: &host,
            config: &config,
        },
    };
    f(&balancers).map_err(plugin_error)
}

fn address_type(t: balancers::AddressType) -> lb::AddressType {
    match t {
        balancers::AddressType::Internet => lb::AddressType::Internet,
        balancers::AddressType::Intranet => lb::AddressType::Intranet,
    }
}

fn load_balancer(b: balancers::LoadBalancer) -> lb::LoadBalancer {
    lb::LoadBalancer {
        id: b.id,
        name: b.name,
        region: b.region,
        address: b.address,
        address_type: address_type(b.address_type),
        status: match b.status {
            balancers::Status::Active => lb::LoadBalancerStatus::Active,
            balancers::Status::Inactive => lb::LoadBalancerStatus::Inactive,
            balancers::Status::Locked => lb::LoadBalancerStatus::Locked,
        },
        vpc_id: b.vpc_id,
        spec: b.spec,
        created_at: b.created_at,
    }
}

fn protocol(p: balancers::Protocol) -> lb::ListenerProtocol {
    match p {
        balancers::Protocol::Http => lb::ListenerProtocol::Http,
        balancers::Protocol::Tcp => lb::ListenerProtocol::Tcp,
    }
}

fn listener_spec(s: balancers::ListenerSpec) -> lb::ListenerSpec {
    lb::ListenerSpec {
        port: s.port,
        protocol: protocol(s.protocol),
        backend_port: s.backend_port,
        bandwidth_mbps: s.bandwidth_mbps,
        scheduler: s.scheduler,
        health_check: lb::HealthCheck {
            enabled: s.health_check.enabled,
            uri: s.health_check.uri,
            interval_seconds: s.health_check.interval_seconds,
            healthy_threshold: s.health_check.healthy_threshold,
            unhealthy_threshold: s.health_check.unhealthy_threshold,
        },
    }
}

fn detail(d: balancers::Detail) -> lb::LoadBalancerDetail {
    lb::LoadBalancerDetail {
        load_balancer: load_balancer(d.load_balancer),
        listeners: d
            .listeners
            .into_iter()
            .map(|l| lb::Listener {
                spec: listener_spec(l.spec),
                status: match l.status {
                    balancers::ListenerStatus::Running => lb::ListenerStatus::Running,
                    balancers::ListenerStatus::Stopped => lb::ListenerStatus::Stopped,
                    balancers::ListenerStatus::Starting => lb::ListenerStatus::Starting,
                    balancers::ListenerStatus::Configuring => lb::ListenerStatus::Configuring,
                },
                access_control: l.access_control,
                white_list: l.white_list,
            })
            .collect(),
        backends: d
            .backends
            .into_iter()
            .map(|b| lb::BackendServer {
                instance_id: b.instance_id,
                address: b.address,
                weight: b.weight,
                health: b
                    .health
                    .into_iter()
                    .map(|(port, health)| lb::ListenerHealth {
                        port,
                        health: match health {
                            Health::Normal => lb::Health::Normal,
                            Health::Abnormal => lb::Health::Abnormal,
                            Health::Unavailable => lb::Health::Unavailable,
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl lb::Guest for Aliyun {
    fn list_load_balancers(region: String) -> Result<Vec<lb::LoadBalancer>, PluginError> {
        with_balancers(|b| b.list(&region)).map(|all| all.into_iter().map(load_balancer).collect())
    }

    fn describe_load_balancer(
        region: String,
        id: String,
    ) -> Result<lb::LoadBalancerDetail, PluginError> {
        with_balancers(|b| b.describe(&region, &id)).map(detail)
    }

    fn create_load_balancer(
        spec: lb::LoadBalancerSpec,
        idempotency_key: String,
    ) -> Result<lb::LoadBalancer, PluginError> {
        let spec = balancers::NewLoadBalancer {
            region: spec.region,
            name: spec.name,
            address_type: match spec.address_type {
                lb::AddressType::Internet => balancers::AddressType::Internet,
                lb::AddressType::Intranet => balancers::AddressType::Intranet,
            },
            subnet: spec.subnet,
            spec: spec.spec,
        };
        cloud::info(
            "creating a load balancer",
            &[("region", &spec.region), ("name", &spec.name)],
        );
        with_balancers(|b| b.create(&spec, &idempotency_key)).map(load_balancer)
    }

    fn delete_load_balancer(region: String, id: String) -> Result<(), PluginError> {
        with_balancers(|b| b.delete(&region, &id))
    }

    fn set_load_balancer_status(
        region: String,
        id: String,
        status: lb::LoadBalancerStatus,
    ) -> Result<(), PluginError> {
        let status = match status {
            lb::LoadBalancerStatus::Active => balancers::Status::Active,
            lb::LoadBalancerStatus::Inactive => balancers::Status::Inactive,
            lb::LoadBalancerStatus::Locked => balancers::Status::Locked,
        };
        with_balancers(|b| b.set_status(&region, &id, status))
    }

    fn create_listener(
        region: String,
        id: String,
        spec: lb::ListenerSpec,
    ) -> Result<(), PluginError> {
        let spec = balancers::ListenerSpec {
            port: spec.port,
            protocol: match spec.protocol {
                lb::ListenerProtocol::Http => balancers::Protocol::Http,
                lb::ListenerProtocol::Tcp => balancers::Protocol::Tcp,
            },
            backend_port: spec.backend_port,
            bandwidth_mbps: spec.bandwidth_mbps,
            scheduler: spec.scheduler,
            health_check: balancers::HealthCheck {
                enabled: spec.health_check.enabled,
                uri: spec.health_check.uri,
                interval_seconds: spec.health_check.interval_seconds,
                healthy_threshold: spec.health_check.healthy_threshold,
                unhealthy_threshold: spec.health_check.unhealthy_threshold,
            },
        };
        with_balancers(|b| b.create_listener(&region, &id, &spec))
    }

    fn set_listener_running(
        region: String,
        id: String,
        port: u16,
        running: bool,
    ) -> Result<(), PluginError> {
        with_balancers(|b| b.set_listener_running(&region, &id, port, running))
    }

    fn delete_listener(region: String, id: String, port: u16) -> Result<(), PluginError> {
        with_balancers(|b| b.delete_listener(&region, &id, port))
    }

    fn set_white_list(
        region: String,
        id: String,
        port: u16,
        enabled: bool,
        entries: Vec<String>,
    ) -> Result<(), PluginError> {
        with_balancers(|b| b.set_white_list(&region, &id, port, enabled, &entries))
    }
}

dcp_plugin_sdk_cloud_lb::export_cloud_provider_with_load_balancers!(
    Aliyun with_types_in dcp_plugin_sdk_cloud_lb
);
