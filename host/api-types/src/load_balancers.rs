//! A cloud account's own load balancers (OpenDCP's jupiter SLB pages):
//! load balancers, listeners, white lists, and the health of the backend
//! servers that discovery bindings register. Reached under
//! `/accounts/{id}/load-balancers`, through the account's cloud-provider
//! plugin when it manages load balancers.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// How clients reach a load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LbAddressType {
    /// From the internet, on a public address.
    Internet,
    /// From inside the cloud network only.
    Intranet,
}

/// A load balancer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LbStatus {
    /// Forwards traffic.
    Active,
    /// Stopped by its owner: forwards nothing.
    Inactive,
    /// Locked by the cloud (e.g. unpaid): forwards nothing, cannot be changed.
    Locked,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP, checked with HTTP requests.
    Http,
    /// TCP, checked by connecting.
    Tcp,
}

/// A listener's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ListenerStatus {
    /// Accepts connections.
    Running,
    /// Accepts nothing.
    Stopped,
    /// Between stopped and running.
    Starting,
    /// Applying a change.
    Configuring,
}

/// How a listener spreads connections over its backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Weighted round robin.
    #[default]
    Wrr,
    /// Weighted least connections.
    Wlc,
    /// Round robin.
    Rr,
}

/// A backend's health on one listener, as the cloud's checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BackendHealth {
    /// The checks pass: it takes traffic.
    Normal,
    /// The checks fail: it takes no traffic.
    Abnormal,
    /// No verdict: checks off, the listener stopped, or no check finished yet.
    Unavailable,
}

/// A cloud load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CloudLoadBalancer {
    /// The cloud's id, e.g. `lb-bp1o94dp5i6ea0000`.
    pub id: String,
    /// Its name (may be empty).
    pub name: String,
    /// Region id.
    pub region: String,
    /// The address clients connect to.
    pub address: String,
    /// Internet or intranet.
    pub address_type: LbAddressType,
    /// Its state.
    pub status: LbStatus,
    /// The VPC it serves; empty on the classic network.
    pub vpc_id: String,
    /// Its specification, e.g. `slb.s1.small`; empty for a shared one.
    pub spec: String,
    /// Creation time (RFC 3339), empty if the cloud does not say.
    pub created_at: String,
}

/// How a listener checks its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ListenerHealthCheck {
    /// Whether an HTTP listener checks at all (a TCP listener always does).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The path an HTTP check asks for: starts with `/`, at most 80
    /// characters; ignored for TCP.
    #[serde(default = "root")]
    #[cfg_attr(feature = "openapi", schema(max_length = 80, pattern = "^/"))]
    pub uri: String,
    /// Seconds between checks.
    #[serde(default = "two")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 50))]
    pub interval_seconds: u32,
    /// Passing checks in a row that make a backend healthy.
    #[serde(default = "three")]
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 10))]
    pub healthy_threshold: u32,
    /// Failing checks in a row that make a backend unhealthy.
    #[serde(default = "three")]
    #[cfg_attr(feature = "openapi", schema(minimum = 2, maximum = 10))]
    pub unhealthy_threshold: u32,
}

impl Default for ListenerHealthCheck {
    fn default() -> Self {
        Self {
            enabled: true,
            uri: root(),
            interval_seconds: two(),
            healthy_threshold: three(),
            unhealthy_threshold: three(),
        }
    }
}

fn yes() -> bool {
    true
}

fn root() -> String {
    "/".to_owned()
}

fn two() -> u32 {
    2
}

fn three() -> u32 {
    3
}

fn no_cap() -> i32 {
    -1
}

/// A listener to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ListenerInput {
    /// The port it listens on.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// HTTP or TCP.
    pub protocol: ListenerProtocol,
    /// The port of the backends it forwards to.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub backend_port: u16,
    /// Peak bandwidth in Mbit/s; -1 for no cap.
    #[serde(default = "no_cap")]
    #[cfg_attr(feature = "openapi", schema(minimum = -1, maximum = 5120))]
    pub bandwidth_mbps: i32,
    /// How it spreads connections.
    #[serde(default)]
    pub scheduler: Scheduler,
    /// How it checks its backends.
    #[serde(default)]
    pub health_check: ListenerHealthCheck,
}

/// A listener with its state and white list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Listener {
    /// The port it listens on.
    pub port: u16,
    /// HTTP or TCP.
    pub protocol: ListenerProtocol,
    /// The port of the backends it forwards to.
    pub backend_port: u16,
    /// Peak bandwidth in Mbit/s; -1 for no cap.
    pub bandwidth_mbps: i32,
    /// How it spreads connections (`wrr`, `wlc`, `rr`, or the cloud's own word).
    pub scheduler: String,
    /// How it checks its backends.
    pub health_check: ListenerHealthCheck,
    /// Its state.
    pub status: ListenerStatus,
    /// Whether its white list is enforced.
    pub access_control: bool,
    /// Addresses and CIDR blocks let in while access control is on.
    pub white_list: Vec<String>,
}

/// A backend's health on one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ListenerHealth {
    /// The listener's port.
    pub port: u16,
    /// The verdict.
    pub health: BackendHealth,
}

/// A backend server of a cloud load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BackendServer {
    /// The cloud's instance id.
    pub instance_id: String,
    /// Its private address; empty when the instance is gone.
    pub address: String,
    /// Its weight, 0–100.
    pub weight: u32,
    /// Its health on each listener that checks.
    pub health: Vec<ListenerHealth>,
}

/// A cloud load balancer with its listeners and backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CloudLoadBalancerDetail {
    /// The load balancer.
    pub load_balancer: CloudLoadBalancer,
    /// Its listeners, by port.
    pub listeners: Vec<Listener>,
    /// Its backend servers.
    pub backends: Vec<BackendServer>,
    /// The discovery units whose nodes push to it.
    pub served_by: Vec<LbUnitRef>,
}

/// A discovery unit, by id and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LbUnitRef {
    /// The unit's id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// A load balancer to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CloudLoadBalancerInput {
    /// Region id.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9-]{1,64}$"))]
    pub region: String,
    /// Its name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 80))]
    pub name: String,
    /// Internet or intranet.
    pub address_type: LbAddressType,
    /// The subnet (vswitch) of an intranet load balancer in a VPC.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub subnet: Option<String>,
    /// Its specification, e.g. `slb.s1.small`; none for a shared one.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub spec: Option<String>,
}

/// The state a user may put a load balancer in (`locked` is the cloud's alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LbTargetStatus {
    /// Forward traffic.
    Active,
    /// Forward nothing.
    Inactive,
}

/// Activate or stop a load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LbStatusInput {
    /// `active` or `inactive`.
    pub status: LbTargetStatus,
}

/// Start or stop a listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ListenerRunningInput {
    /// Whether it accepts connections.
    pub running: bool,
}

/// A listener's white list, whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WhiteListInput {
    /// Whether the list is enforced (only its entries get in).
    pub enabled: bool,
    /// IPv4 addresses and CIDR blocks (e.g. `10.0.0.0/8`); at most 300. An
    /// entry given twice is kept once.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Vec<WhiteListEntry>, max_items = 300)
    )]
    pub entries: Vec<String>,
}

/// One white-list entry in the OpenAPI document: an IPv4 address, or a
/// CIDR block of 1–32 bits. An address in 0.0.0.0/8 is not one: SLB refuses
/// "everyone" (0.0.0.0, /0).
#[cfg(feature = "openapi")]
pub struct WhiteListEntry;

/// The rule a white-list entry follows, as a regular expression.
pub const WHITE_LIST_ENTRY_PATTERN: &str = "^([1-9][0-9]?|1[0-9][0-9]|2[0-4][0-9]|25[0-5])(\\.([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])){3}(/([1-9]|[12][0-9]|3[0-2]))?$";

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for WhiteListEntry {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(WHITE_LIST_ENTRY_PATTERN))
            .description(Some(
                "An IPv4 address or CIDR block of 1–32 bits, outside 0.0.0.0/8 (e.g. 10.0.0.0/8)",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl ToSchema for WhiteListEntry {}

/// Which region a load balancer is in: `?region=cn-hangzhou` (beside the
/// paging parameters of a list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema, IntoParams))]
pub struct RegionQuery {
    /// Region id.
    #[cfg_attr(feature = "openapi", param(pattern = "^[a-z0-9-]{1,64}$"))]
    pub region: String,
}
