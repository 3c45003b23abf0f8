//! The component: the `cloud` export over the host's imports (`http` for
//! requests, `secrets` for the signature, `context` for the deadline).

use std::{
    hash::{BuildHasher as _, Hasher as _},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dcp_plugin_sdk::cloud::{
    self, ErrorKind, PluginError, PluginInfo, context,
    exports::dcp::plugin::cloud::{
        Choice, Guest, Instance, InstancePage, InstanceSpec, InstanceState,
    },
    http, secrets,
};

use crate::{
    cloud::{Cloud, Item, Launch, Machine, Page, State},
    rpc::{CONFIG_SCHEMA, Config, Failure, Fault, Host, Kind, Rpc},
};

/// Attempts made in this instance; with the call id, a unique nonce.
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);

/// The host as the RPC client needs it.
struct Imports {
    credential: Result<secrets::Credential, PluginError>,
}

fn unauthorized(e: &PluginError) -> Failure {
    Failure {
        kind: Kind::Unauthorized,
        message: e.message.clone(),
        code: None,
        request_id: None,
        retryable: false,
    }
}

fn millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Host for Imports {
    fn key_id(&self) -> Result<String, Failure> {
        self.credential
            .as_ref()
            .map(secrets::Credential::key_id)
            .map_err(unauthorized)
    }

    fn sign(&self, data: &[u8]) -> Result<Vec<u8>, Failure> {
        // Aliyun keys its HMAC with `AccessKeySecret + "&"`.
        self.credential
            .as_ref()
            .map(|c| c.hmac_with_key_suffix(secrets::HmacAlg::Sha1, "&", data))
            .map_err(unauthorized)
    }

    fn post(&self, url: &str, body: String, timeout_ms: u32) -> Result<(u16, Vec<u8>), Fault> {
        http::send(&http::Request {
            method: http::Method::Post,
            url: url.to_owned(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: Some(body.into_bytes()),
            timeout_ms: Some(timeout_ms),
        })
        .map(|r| (r.status, r.body))
        .map_err(|e| Fault {
            timed_out: e.kind == ErrorKind::Timeout,
            refused: e.kind == ErrorKind::Unauthorized,
            message: e.message,
        })
    }

    fn now_unix(&self) -> u64 {
        millis_now() / 1000
    }

    fn now_ms(&self) -> u64 {
        millis_now()
    }

    fn deadline_ms(&self) -> u64 {
        context::deadline_unix_ms()
    }

    fn nonce(&self) -> String {
        format!(
            "{}-{}",
            context::call_id(),
            ATTEMPTS.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn random_below(&self, bound: u64) -> u64 {
        // std seeds RandomState from WASI's random source.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(ATTEMPTS.load(Ordering::Relaxed));
        hasher.finish() % bound.max(1)
    }

    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn to_plugin_error(f: Failure) -> PluginError {
    let kind = match f.kind {
        Kind::InvalidInput => ErrorKind::InvalidInput,
        Kind::NotFound => ErrorKind::NotFound,
        Kind::Conflict => ErrorKind::Conflict,
        Kind::Unauthorized => ErrorKind::Unauthorized,
        Kind::Throttled => ErrorKind::Throttled,
        Kind::Unavailable => ErrorKind::Unavailable,
        Kind::Timeout => ErrorKind::Timeout,
        Kind::Internal => ErrorKind::Internal,
    };
    PluginError {
        kind,
        message: f.message,
        provider_code: f.code,
        request_id: f.request_id,
        retryable: f.retryable,
    }
}

/// Runs `f` against the account's cloud (its configuration from the context).
fn with_cloud<T>(
    f: impl FnOnce(&Cloud<'_, Imports>) -> Result<T, Failure>,
) -> Result<T, PluginError> {
    let config = Config::parse(&context::config()).map_err(to_plugin_error)?;
    let host = Imports {
        credential: secrets::open("account"),
    };
    let cloud = Cloud {
        rpc: Rpc {
            host: &host,
            config: &config,
        },
    };
    f(&cloud).map_err(to_plugin_error)
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
        let config = Config::parse(&config).map_err(to_plugin_error)?;
        let host = Imports {
            credential: secrets::open("account"),
        };
        // A signed call proves the endpoint, the key and the secret.
        Cloud {
            rpc: Rpc {
                host: &host,
                config: &config,
            },
        }
        .regions()
        .map(drop)
        .map_err(to_plugin_error)
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
