//! Machines (OpenDCP's jupiter): cloud accounts, machine templates, quotas,
//! machines and the fleet-size history.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// A cloud account: which provider plugin, its settings and its key.
/// The secret is write-only: no response ever carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Account {
    /// Id.
    pub id: i64,
    /// Unique name, e.g. `aliyun-prod`.
    pub name: String,
    /// The cloud-provider plugin, e.g. `aliyun`.
    pub provider: String,
    /// Settings the plugin's schema describes (endpoint, default region…), never secret.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    /// The public half of the key, e.g. an AccessKeyId.
    pub key_id: String,
    /// Templates using the account.
    pub templates: u64,
    /// Whether its provider plugin (active now) manages the account's own
    /// load balancers (`/accounts/{id}/load-balancers`).
    pub manages_load_balancers: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or changes an account. `Debug` hides the secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccountInput {
    /// Unique name: 1–64 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 64, pattern = "\\S")
    )]
    pub name: String,
    /// The cloud-provider plugin; it must be active.
    pub provider: String,
    /// Settings, checked by the plugin's `validate-config`.
    #[serde(default = "empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Value,
    /// The public half of the key.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 256, pattern = "\\S")
    )]
    pub key_id: String,
    /// The secret half: required when creating; omit on update to keep it.
    #[serde(default)]
    pub secret: Option<String>,
}

pub(crate) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// Which look-up of a provider to run (the machine-template form's choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum LookupKind {
    /// Regions.
    Regions,
    /// Zones of `region`.
    Zones,
    /// VPCs of `region`.
    Vpcs,
    /// Subnets (vswitches) of `vpc`, optionally in `zone`.
    Subnets,
    /// Images of `region`.
    Images,
    /// Instance types of `region`, optionally in `zone`.
    InstanceTypes,
    /// Security groups of `region`, optionally of `vpc`.
    SecurityGroups,
    /// Disk categories of `zone`.
    DiskCategories,
    /// Instance and internet charge types.
    ChargeTypes,
}

impl LookupKind {
    /// The kind's wire name, e.g. `instance-types`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Regions => "regions",
            Self::Zones => "zones",
            Self::Vpcs => "vpcs",
            Self::Subnets => "subnets",
            Self::Images => "images",
            Self::InstanceTypes => "instance-types",
            Self::SecurityGroups => "security-groups",
            Self::DiskCategories => "disk-categories",
            Self::ChargeTypes => "charge-types",
        }
    }
}

/// Where a look-up looks: `GET /accounts/{id}/lookups/{kind}?region=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema, IntoParams))]
#[serde(deny_unknown_fields)]
pub struct LookupQuery {
    /// Region id (every kind but `regions` and `charge-types`).
    #[serde(default)]
    pub region: Option<String>,
    /// Zone id (`subnets`, `instance-types`, `disk-categories`).
    #[serde(default)]
    pub zone: Option<String>,
    /// VPC id (`subnets`, `security-groups`).
    #[serde(default)]
    pub vpc: Option<String>,
}

/// One option of a look-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Choice {
    /// The provider's id, e.g. `cn-hangzhou`.
    pub id: String,
    /// A name for humans.
    pub name: String,
    /// Extra facts (e.g. an instance type's CPU and memory).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: Value,
}

/// How a template's machines are networked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    /// In a VPC, on a vswitch.
    #[default]
    Vpc,
    /// Aliyun's classic network (no VPC).
    Classic,
}

/// A disk of a template's machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Category, e.g. `cloud_efficiency`.
    pub category: String,
    /// Size in GiB.
    pub size_gb: u32,
}

/// Data disks: `count` alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataDisks {
    /// Category, e.g. `cloud_ssd`.
    pub category: String,
    /// Size of each in GiB.
    pub size_gb: u32,
    /// How many: 0–4.
    pub count: u32,
}

/// What a template's machines are made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Region id.
    pub region: String,
    /// Zone id.
    pub zone: String,
    /// VPC or classic.
    #[serde(default)]
    pub network_type: NetworkType,
    /// VPC id (VPC networking).
    #[serde(default)]
    pub vpc: Option<String>,
    /// Vswitch id (VPC networking).
    #[serde(default)]
    pub subnet: Option<String>,
    /// Security group id.
    #[serde(default)]
    pub security_group: Option<String>,
    /// Instance type id, e.g. `ecs.g6.large`.
    pub instance_type: String,
    /// Image id.
    pub image: String,
    /// The system disk.
    pub system_disk: DiskSpec,
    /// Data disks, if any.
    #[serde(default)]
    pub data_disks: Option<DataDisks>,
    /// `PayByTraffic` or `PayByBandwidth`.
    pub internet_charge_type: String,
    /// Outbound bandwidth in Mbit/s: 0–100 by bandwidth, 1–100 by traffic.
    pub bandwidth_mbps: u32,
    /// `PostPaid` or `PrePaid`.
    pub instance_charge_type: String,
}

/// A machine template (OpenDCP's 机型模板) with its quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineTemplate {
    /// Id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The cloud account machines are created with.
    pub account_id: i64,
    /// That account's name.
    pub account_name: String,
    /// That account's provider plugin.
    pub provider: String,
    /// What machines are made of.
    pub spec: TemplateSpec,
    /// The user DCP logs in as.
    pub login_user: String,
    /// The command group run on each new machine; none = the server's default.
    pub init_group_id: Option<i64>,
    /// Seconds init may take before the machine is `init_timeout`.
    pub init_timeout_secs: u32,
    /// Instance-hours granted.
    pub quota_hours: i64,
    /// Instance-hours charged so far (at release).
    pub used_hours: i64,
    /// Machines using it that are not deleted.
    pub machines: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What creates or changes a machine template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// Unique name: 1–64 characters.
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 64, pattern = "\\S")
    )]
    pub name: String,
    /// What it is for.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// The cloud account.
    pub account_id: i64,
    /// What machines are made of.
    pub spec: TemplateSpec,
    /// The user DCP logs in as (default `root`).
    #[serde(default)]
    pub login_user: Option<String>,
    /// The init command group; none = the server's default.
    #[serde(default)]
    pub init_group_id: Option<i64>,
    /// Seconds init may take (default 600, at most 7200).
    #[serde(default)]
    pub init_timeout_secs: Option<u32>,
    /// Instance-hours granted (≥ 0).
    pub quota_hours: i64,
}

/// A template's quota and usage (`GET /quotas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QuotaUsage {
    /// The template.
    pub template_id: i64,
    /// Its name.
    pub template_name: String,
    /// Instance-hours granted.
    pub quota_hours: i64,
    /// Instance-hours charged at release.
    pub used_hours: i64,
    /// What is left; creating is refused at 0 or below (overdraft allowed).
    pub credit_hours: i64,
    /// Machines not yet released.
    pub live_machines: u64,
    /// Machines released and charged.
    pub released_machines: u64,
}

/// Sets a template's quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    /// Instance-hours granted (≥ 0).
    pub quota_hours: i64,
}

/// Where a machine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    /// The cloud is asked for it.
    Creating,
    /// Created; waiting for it to run.
    Starting,
    /// Running; the init command group runs over SSH.
    Initializing,
    /// Usable.
    Ready,
    /// Init did not finish in time.
    InitTimeout,
    /// Init failed.
    InitFailed,
    /// The cloud refused or failed.
    Error,
    /// Being released.
    Deleting,
    /// Released (kept for history and billing).
    Deleted,
}

impl MachineState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 9] = [
        Self::Creating,
        Self::Starting,
        Self::Initializing,
        Self::Ready,
        Self::InitTimeout,
        Self::InitFailed,
        Self::Error,
        Self::Deleting,
        Self::Deleted,
    ];

    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Starting => "starting",
            Self::Initializing => "initializing",
            Self::Ready => "ready",
            Self::InitTimeout => "init_timeout",
            Self::InitFailed => "init_failed",
            Self::Error => "error",
            Self::Deleting => "deleting",
            Self::Deleted => "deleted",
        }
    }

    /// Whether the machine's own work is under way (nothing else may touch it).
    #[must_use]
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Self::Creating | Self::Starting | Self::Initializing | Self::Deleting
        )
    }
}

/// A machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Machine {
    /// Id.
    pub id: i64,
    /// Name (the cloud instance's name).
    pub name: String,
    /// The template it was made from; none for adopted servers.
    pub template_id: Option<i64>,
    /// The provider plugin, or `adopted`.
    pub provider: String,
    /// Region id; empty for adopted servers.
    pub region: String,
    /// The cloud's instance id, once known.
    pub instance_id: Option<String>,
    /// The address DCP reaches it on, once known.
    pub address: Option<String>,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Current state.
    pub state: MachineState,
    /// Why it is in that state (errors name the cloud code and request id).
    pub reason: String,
    /// When it was asked for (RFC 3339).
    pub created_at: String,
    /// When it became ready.
    pub ready_at: Option<String>,
    /// When it was released.
    pub released_at: Option<String>,
    /// Instance-hours charged at release.
    pub charged_hours: Option<i64>,
    /// The pool it is a node of, if any (a machine is in one pool at most).
    #[serde(default)]
    pub pool_id: Option<i64>,
}

/// A state change of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineEvent {
    /// When (RFC 3339).
    pub at: String,
    /// The state entered.
    pub state: MachineState,
    /// Why.
    pub reason: String,
}

/// A line of a machine's log: cloud calls and init output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineLogLine {
    /// When (RFC 3339).
    pub at: String,
    /// The line.
    pub line: String,
}

/// A machine with its timeline and log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineDetail {
    /// The machine.
    pub machine: Machine,
    /// Every state change, oldest first.
    pub events: Vec<MachineEvent>,
    /// The log, oldest first.
    pub log: Vec<MachineLogLine>,
}

/// Creates machines from a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateMachines {
    /// The template.
    pub template_id: i64,
    /// How many: 1–100.
    pub count: u32,
    /// Makes the request safe to retry: the same key answers the same
    /// machines instead of creating more. 1–64 characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// Adopts an existing server (a private cloud's, or a physical one).
/// `Debug` hides the password and the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdoptMachine {
    /// A name; the address by default.
    #[serde(default)]
    pub name: Option<String>,
    /// IP address or host name.
    pub address: String,
    /// SSH port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    /// Login user (default `root`).
    #[serde(default)]
    pub user: Option<String>,
    /// A password: used once to install a key DCP generates, never stored.
    #[serde(default)]
    pub password: Option<String>,
    /// A private key (OpenSSH or PEM), kept encrypted.
    #[serde(default)]
    pub private_key: Option<String>,
}

/// Filters of `GET /machines`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
pub struct MachineFilter {
    /// Only machines in this state; by default every state but `deleted`.
    #[serde(default)]
    pub state: Option<MachineState>,
    /// Only machines of this template.
    #[serde(default)]
    pub template_id: Option<i64>,
    /// `false`: only machines in no pool (those a pool can take); `true`:
    /// only nodes of some pool.
    #[serde(default)]
    pub pooled: Option<bool>,
    /// Only machines whose name or address contains this text (ASCII
    /// letters in any case; at most 256 characters, no control characters).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", param(max_length = 256))]
    pub q: Option<String>,
}

/// Live machines of one provider at one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetPoint {
    /// The hour (RFC 3339, minutes zero).
    pub hour: String,
    /// The provider plugin, or `adopted`.
    pub provider: String,
    /// Machines not released at the end of that hour (or now, for the current hour).
    pub machines: u64,
}

impl std::fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountInput")
            .field("name", &self.name)
            .field("provider", &self.provider)
            .field("config", &self.config)
            .field("key_id", &self.key_id)
            .field("secret", &crate::redacted(self.secret.as_ref()))
            .finish()
    }
}

impl std::fmt::Debug for AdoptMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdoptMachine")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &crate::redacted(self.password.as_ref()))
            .field("private_key", &crate::redacted(self.private_key.as_ref()))
            .finish()
    }
}
