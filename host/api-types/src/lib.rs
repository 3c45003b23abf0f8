//! The JSON bodies of DCP's REST API (`/api/v1`).
//!
//! The host serialises these and the web UI deserialises them, so the two can
//! never disagree about a field name. Timestamps are RFC 3339 strings in UTC.

mod builds;
mod discovery;
mod images;
mod load_balancers;
mod machines;
mod orchestration;
mod overview;
mod remote;
mod tasks;

use serde::{Deserialize, Serialize};

pub use builds::*;
pub use discovery::*;
pub use images::*;
pub use load_balancers::*;
pub use machines::*;
pub use orchestration::*;
pub use overview::*;
pub use remote::*;
pub use tasks::*;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Page<T> {
    /// The items on this page, in the endpoint's stable order.
    pub items: Vec<T>,
    /// How many items match the filters, over all pages.
    pub total: u64,
    /// The 1-based page number that was served.
    pub page: u32,
    /// The page size that was served.
    pub per_page: u32,
}

impl<T> Page<T> {
    /// The number of pages needed for `total` items (at least 1, so a UI
    /// always has a page to show).
    #[must_use]
    pub fn page_count(&self) -> u64 {
        self.total.div_ceil(u64::from(self.per_page.max(1))).max(1)
    }
}

/// Paging parameters accepted by every list endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct PageQuery {
    /// 1-based page number.
    #[cfg_attr(feature = "openapi", param(minimum = 1, default = 1))]
    pub page: u32,
    /// Items per page, 1 to [`PageQuery::MAX_PER_PAGE`].
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200, default = 20))]
    pub per_page: u32,
}

impl PageQuery {
    /// The largest page a client may ask for.
    pub const MAX_PER_PAGE: u32 = 200;
    /// The page size used when none is given.
    pub const DEFAULT_PER_PAGE: u32 = 20;
}

impl Default for PageQuery {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: Self::DEFAULT_PER_PAGE,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `validation_failed`.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The request id, to quote when reporting a server error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The other fields of the request that break a rule, when the server
    /// checked them together (a 422 on a form names them all at once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<FieldError>,
}

/// A field of a request and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FieldError {
    /// The field, e.g. `image` or `container.ports[2].host_port`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The stable error codes. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not well-formed JSON.
    MalformedJson,
    /// 400: a path or query parameter is not of its type.
    InvalidParameter,
    /// 401: no valid credentials were sent.
    Unauthorized,
    /// 403: the credentials may not do this, or the CSRF token is missing.
    Forbidden,
    /// 404: the resource or route does not exist.
    NotFound,
    /// 405: the route exists, but not with this method.
    MethodNotAllowed,
    /// 408: the request body did not arrive in time; the connection is closed.
    RequestTimeout,
    /// 409: the request conflicts with existing state (a duplicate name, a resource in use).
    Conflict,
    /// 413: the body is larger than the server accepts.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the request is well-formed but a field breaks a rule.
    ValidationFailed,
    /// 429: too many failed logins for the user name or from the address,
    /// or too many logins at once; retry after `Retry-After` seconds.
    TooManyRequests,
    /// 500: the server failed; the log has the details under the request id.
    Internal,
    /// 502: a cloud or plugin call failed; the message names the provider's
    /// error code and request id when it gave them.
    Upstream,
    /// 503: a dependency (the database) is unreachable.
    Unavailable,
}

impl ErrorCode {
    /// The HTTP status code that goes with this error code.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::MalformedJson | Self::InvalidParameter => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed => 422,
            Self::TooManyRequests => 429,
            Self::Internal => 500,
            Self::Upstream => 502,
            Self::Unavailable => 503,
        }
    }
}

/// A cluster: the top of the orchestration tree (cluster → service → pool → node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Cluster {
    /// Server-assigned id.
    pub id: i64,
    /// Unique name: 1–64 characters of `a-z`, `0-9`, `-` and `_`.
    pub name: String,
    /// Free text, at most 1024 characters.
    pub description: String,
    /// The business line that owns the cluster (OpenDCP's `biz`).
    pub business_line: String,
    /// When the cluster was created (RFC 3339).
    pub created_at: String,
    /// When the cluster was last changed (RFC 3339).
    pub updated_at: String,
}

/// The writable fields of a cluster, for create (`POST`) and replace (`PUT`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClusterInput {
    /// Unique name: 1–64 characters of `a-z`, `0-9`, `-` and `_`.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = "^[a-z0-9_-]+$"
        )
    )]
    pub name: String,
    /// Free text, at most 1024 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: String,
    /// The business line that owns the cluster, at most 64 characters.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 64))]
    pub business_line: String,
}

/// Filters for `GET /api/v1/clusters`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct ClusterFilter {
    /// Only clusters whose name contains this text.
    pub name: Option<String>,
    /// Only clusters of exactly this business line.
    pub business_line: Option<String>,
}

/// `POST /api/v1/session`: log in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginRequest {
    /// The user name.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: String,
}

/// The logged-in user and the CSRF token to echo in `X-CSRF-Token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Session {
    /// Who is logged in.
    pub user: User,
    /// The value of the `dcp_csrf` cookie; cookie-authenticated writes must
    /// send it in the `X-CSRF-Token` header. `None` for bearer-token callers,
    /// which need no CSRF token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// A DCP user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    /// Server-assigned id.
    pub id: i64,
    /// The login name.
    pub username: String,
    /// The user's role. Today every user is an `admin`; finer roles come with RBAC.
    pub role: String,
}

/// A user as administrators see them, with their login lock-out:
/// `GET /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserStatus {
    /// Server-assigned id.
    pub id: i64,
    /// The login name.
    pub username: String,
    /// The user's role.
    pub role: String,
    /// Failed logins counted against the name (forgotten after a successful
    /// login, an unlock, or a long quiet spell).
    pub failed_logins: u32,
    /// Until when logins as this user are refused (RFC 3339), if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
}

/// `POST /api/v1/tokens`: create a personal API token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenInput {
    /// A label to recognise the token by, 1–64 characters.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, max_length = 64, pattern = "\\S")
    )]
    pub name: String,
}

/// A personal API token as listed; the secret itself is never shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Token {
    /// Server-assigned id.
    pub id: i64,
    /// The label given at creation.
    pub name: String,
    /// The first characters of the token, to recognise it.
    pub prefix: String,
    /// When the token was created (RFC 3339).
    pub created_at: String,
    /// When the token was last used, if ever (RFC 3339).
    pub last_used_at: Option<String>,
}

/// A newly created token: the only response that contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    /// Server-assigned id.
    pub id: i64,
    /// The label given at creation.
    pub name: String,
    /// The secret, to send as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
}

/// A plugin version in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginVersion {
    /// Server-assigned id of this version.
    pub id: i64,
    /// The plugin's name.
    pub name: String,
    /// This version (semver).
    pub version: String,
    /// The world it targets: `cloud-provider`, `load-balancer` or `remote-command`.
    pub world: String,
    /// One line on what it does.
    pub description: String,
    /// sha256 of the component, hex. Grants are bound to it.
    pub digest: String,
    /// Size of the component in bytes.
    pub size_bytes: i64,
    /// `pending` (awaiting approval), `approved`, `active` or `inactive`.
    pub status: String,
    /// Shipped with DCP (granted from its manifest, cannot be deleted).
    pub builtin: bool,
    /// What its manifest asks for.
    pub requested: PluginCapabilities,
    /// What an operator granted; `None` until approved.
    pub granted: Option<PluginCapabilities>,
    /// The last failure loading or serving it.
    pub last_error: Option<String>,
    /// The per-call limits in force: the defaults with the operator's overrides.
    pub limits: PluginLimits,
    /// What the operator overrode (unset fields use the defaults).
    pub limit_overrides: PluginLimits,
    /// Upload time (RFC 3339).
    pub created_at: String,
    /// Last activation (RFC 3339), if ever active.
    pub activated_at: Option<String>,
    /// For the active version: the version `POST /plugins/{id}/rollback`
    /// re-activates (the one active before it); absent when there is none.
    pub rollback_to: Option<String>,
    /// Calls since the server started.
    pub calls: u64,
    /// Failed calls since the server started.
    pub errors: u64,
    /// Median call latency in milliseconds, over recent calls.
    pub latency_p50_ms: Option<f64>,
    /// 99th-percentile call latency in milliseconds, over recent calls.
    pub latency_p99_ms: Option<f64>,
}

/// Capabilities a plugin asks for or was granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginCapabilities {
    /// Origins its HTTP may reach (`#private` allows non-public addresses).
    pub http: Vec<String>,
    /// Credentials it may open by name.
    pub secrets: Vec<String>,
    /// Whether it may run commands on its calls' targets.
    pub ssh: bool,
}

/// The answer to an upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginUpload {
    /// The recorded version.
    pub plugin: PluginVersion,
    /// Capabilities it asks for beyond, or no longer needs of, the active version's grants.
    pub capability_diff: CapabilityDiff,
    /// False when this exact component was uploaded before.
    pub created: bool,
}

/// A change of capabilities, as lines like `http https://ecs.aliyuncs.com:443`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CapabilityDiff {
    /// Newly requested.
    pub added: Vec<String>,
    /// No longer requested.
    pub removed: Vec<String>,
}

/// `POST /api/v1/plugins/{id}/test`: try a version with a configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginTestRequest {
    /// The plugin instance configuration to check and use (a JSON object;
    /// absent means `{}`).
    #[serde(default = "machines::empty_object")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: serde_json::Value,
}

/// What trying a plugin version showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginTestResult {
    /// The plugin's own name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// The JSON Schema of its configuration (the UI renders a form from it).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config_schema: serde_json::Value,
    /// Why the configuration was refused, if it was.
    pub config_error: Option<String>,
    /// A sample call's answer: region ids of a cloud provider, module names
    /// of a remote-command plugin.
    pub sample: Vec<String>,
    /// Why the sample call failed, if it did.
    pub sample_error: Option<String>,
}

/// What a plugin version says about itself, without trying it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginDescription {
    /// The plugin's own name.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// The JSON Schema of its configuration: the account form renders its
    /// fields from it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config_schema: serde_json::Value,
}

/// The worlds a plugin can target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PluginWorlds {
    /// The WIT package, e.g. `dcp:plugin@0.1.0`.
    pub package: String,
    /// World names.
    pub worlds: Vec<String>,
}

/// Per-call limits of a plugin version. In `PUT /api/v1/plugins/{id}/limits`
/// an unset field means "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock time per call, guest and host work together (1–600 s; default 30).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 600))]
    pub timeout_secs: Option<u64>,
    /// Memory per call: all its linear memories and tables together (1–1024 MiB; default 64).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1024))]
    pub memory_mib: Option<u64>,
    /// Log lines kept per call (default 1,000).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 100_000))]
    pub log_lines: Option<u64>,
    /// Log bytes kept per call, in KiB (default 1,024).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 65_536))]
    pub log_kib: Option<u64>,
    /// Largest HTTP response a call may receive, in MiB (default 16).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 256))]
    pub http_response_mib: Option<u64>,
    /// Output kept per SSH command and stream, in KiB (default 1,024).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65_536))]
    pub ssh_output_kib: Option<u64>,
}

/// Shown instead of a secret by the hand-written `Debug`s, so a request
/// logged or put in a panic message never carries a password or key.
pub(crate) fn redacted(secret: Option<&String>) -> Option<&'static str> {
    secret.map(|_| "***")
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &redacted(Some(&self.password)))
            .finish()
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let login = LoginRequest {
            username: "admin".into(),
            password: "hunter2".into(),
        };
        let account = machines::AccountInput {
            name: "a".into(),
            provider: "aliyun".into(),
            config: serde_json::json!({}),
            key_id: "LTAI".into(),
            secret: Some("hunter3".into()),
        };
        let adopt = machines::AdoptMachine {
            name: None,
            address: "127.0.0.1".into(),
            port: None,
            user: None,
            password: Some("hunter4".into()),
            private_key: Some("-----BEGIN hunter5".into()),
        };
        let shown = format!("{login:?} {account:?} {adopt:?}");
        assert!(shown.contains("admin") && shown.contains("LTAI"), "{shown}");
        assert!(!shown.contains("hunter"), "{shown}");
    }
}
