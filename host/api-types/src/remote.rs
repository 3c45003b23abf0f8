//! Remote commands (OpenDCP's octans): commands, command groups, executions
//! and the SSH host keys DCP trusts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// How a command runs on each host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// One command line, run by `sh -c`.
    #[default]
    Shell,
    /// A multi-line script, written to a temporary file only the login can
    /// read, run with bash and removed after (one SSH session).
    Longscript,
    /// `{"module": "<module>", "args": {...}}`, run by the remote-command
    /// plugin that provides the module.
    Expert,
}

impl CommandMode {
    /// Every mode, in the order the UI offers them.
    pub const ALL: [Self; 3] = [Self::Shell, Self::Longscript, Self::Expert];

    /// The mode's wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shell => "shell",
            Self::Longscript => "longscript",
            Self::Expert => "expert",
        }
    }
}

/// The type of a command parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Any text.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of `choices`.
    Enum,
}

impl ParamType {
    /// Every type, in the order the UI offers them.
    pub const ALL: [Self; 4] = [Self::String, Self::Integer, Self::Boolean, Self::Enum];

    /// The type's wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Enum => "enum",
        }
    }
}

/// A parameter of a command, used in its script as `{{name}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParamDef {
    /// 1–64 characters of `a-z`, `0-9` and `_`, starting with a letter.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            min_length = 1,
            max_length = 64,
            pattern = "^[a-z][a-z0-9_]*$"
        )
    )]
    pub name: String,
    /// The value's type.
    #[serde(rename = "type", default)]
    pub kind: ParamType,
    /// Whether a run must give a value (when there is no default).
    #[serde(default)]
    pub required: bool,
    /// The value used when a run gives none; must fit the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// What the parameter means, for the run dialog.
    #[serde(default)]
    pub description: String,
    /// The allowed values of an `enum` parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

/// The writable fields of a command, for create (`POST`) and replace (`PUT`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CommandInput {
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
    /// How the command runs.
    #[serde(default)]
    pub mode: CommandMode,
    /// The command line (`shell`), the script (`longscript`) or the module
    /// call as JSON (`expert`); `{{param}}` placeholders are filled at run time.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(required = true, min_length = 1, pattern = "\\S")
    )]
    pub script: String,
    /// The parameters its placeholders use.
    #[serde(default)]
    pub params: Vec<ParamDef>,
}

/// A stored command (OpenDCP's 命令).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Command {
    /// Server-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// How the command runs.
    pub mode: CommandMode,
    /// The command line, script or module call.
    pub script: String,
    /// Its parameters.
    pub params: Vec<ParamDef>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
}

/// Filters for `GET /api/v1/commands` and `GET /api/v1/command-groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct NameFilter {
    /// Only names containing this text.
    pub name: Option<String>,
}

/// The writable fields of a command group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CommandGroupInput {
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
    /// The commands to run, in order (a command may appear more than once).
    #[serde(default)]
    pub command_ids: Vec<i64>,
}

/// A command as a step of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CommandRef {
    /// The command's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its mode.
    pub mode: CommandMode,
}

/// A stored command group (OpenDCP's 命令组): commands run in order; what a
/// task step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CommandGroup {
    /// Server-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The commands, in order.
    pub commands: Vec<CommandRef>,
    /// The union of the commands' parameters.
    pub params: Vec<ParamDef>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
}

/// An ad-hoc command given inline to `POST /api/v1/executions`; its script
/// is run as written (no placeholders).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct InlineCommand {
    /// `shell` or `longscript`.
    #[serde(default)]
    pub mode: CommandMode,
    /// The command line or script.
    #[serde(default)]
    pub script: String,
}

/// A server to run on that DCP does not manage (yet): adoption by address
/// and credentials. The credentials are used for this execution only and
/// never stored.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HostInput {
    /// IP address or host name.
    #[serde(default)]
    pub address: String,
    /// SSH port; 22 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Login user; `root` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A private key (OpenSSH or PEM text); DCP's default key when neither
    /// this nor `password` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// A password, for servers without DCP's key yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl std::fmt::Debug for HostInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostInput")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("private_key", &self.private_key.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `POST /api/v1/executions`: what to run (one of `command_id`, `group_id`,
/// `command`) and where (one of `machine_ids`, `pool_id`, `hosts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionInput {
    /// A stored command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<i64>,
    /// A stored command group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
    /// An ad-hoc command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<InlineCommand>,
    /// Values of the command's or group's parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Machines DCP manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_ids: Option<Vec<i64>>,
    /// Every machine of a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<i64>,
    /// Servers given by address and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<HostInput>>,
    /// How many hosts run at once; 50 when absent, at most the server's `max_forks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forks: Option<u32>,
    /// How long each host may take, connecting included; 300 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u32>,
}

/// The answer to `POST /api/v1/executions`: the work runs in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionCreated {
    /// The new execution's id.
    pub id: i64,
}

/// Where an execution stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// Accepted, not started.
    Pending,
    /// Hosts are running.
    Running,
    /// Every host ended `ok`.
    Succeeded,
    /// Some hosts ended `ok`, others did not.
    PartiallyFailed,
    /// No host ended `ok`.
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl ExecutionState {
    /// Whether the execution has ended.
    #[must_use]
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The state's wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::PartiallyFailed => "partially_failed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where one host of an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Waiting for a fork slot.
    Pending,
    /// Connecting or running.
    Running,
    /// Every step exited 0.
    Ok,
    /// A step exited non-zero, authentication failed, or the module failed.
    Failed,
    /// No SSH connection could be made.
    Unreachable,
    /// The host ran past the execution's timeout; its processes were killed.
    TimedOut,
    /// The execution was cancelled; its processes were killed.
    Cancelled,
}

impl HostState {
    /// Every state, in the order counts are shown.
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Running,
        Self::Ok,
        Self::Failed,
        Self::Unreachable,
        Self::TimedOut,
        Self::Cancelled,
    ];

    /// Whether the host is done.
    #[must_use]
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }

    /// The state's wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Unreachable => "unreachable",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One host of an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionHost {
    /// 0-based position in the execution's target list.
    pub index: u32,
    /// The host's address.
    pub address: String,
    /// Its SSH port.
    pub port: u16,
    /// The login user.
    pub user: String,
    /// Where it stands.
    pub state: HostState,
    /// The exit code of the last step run; absent before the end or when
    /// no command ran (or it was killed by a signal).
    pub exit_code: Option<i32>,
    /// Bytes of standard output kept so far; read them with
    /// `GET /executions/{id}/hosts/{index}/output`.
    pub stdout_bytes: u64,
    /// Bytes of standard error kept so far.
    pub stderr_bytes: u64,
    /// Whether output was cut: at the per-host cap, or because the whole
    /// execution reached its output cap (`max_execution_output_bytes`).
    pub truncated: bool,
    /// Why the host did not end `ok`, for humans.
    pub message: String,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// How many hosts of an execution are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HostCounts {
    /// All hosts.
    pub total: u32,
    /// Waiting for a fork slot.
    pub pending: u32,
    /// Running.
    pub running: u32,
    /// Ended `ok`.
    pub ok: u32,
    /// Ended `failed`.
    pub failed: u32,
    /// Ended `unreachable`.
    pub unreachable: u32,
    /// Ended `timed_out`.
    pub timed_out: u32,
    /// Ended `cancelled`.
    pub cancelled: u32,
}

impl HostCounts {
    /// Counts `n` more hosts in `state`.
    pub fn add(&mut self, state: HostState, n: u32) {
        self.total += n;
        *match state {
            HostState::Pending => &mut self.pending,
            HostState::Running => &mut self.running,
            HostState::Ok => &mut self.ok,
            HostState::Failed => &mut self.failed,
            HostState::Unreachable => &mut self.unreachable,
            HostState::TimedOut => &mut self.timed_out,
            HostState::Cancelled => &mut self.cancelled,
        } += n;
    }
}

/// A step an execution runs on every host, as it was resolved at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionStep {
    /// The command's name (`ad-hoc` for an inline command).
    pub name: String,
    /// The plugin that runs it.
    pub plugin: String,
    /// The plugin's module.
    pub module: String,
}

/// An execution in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionSummary {
    /// Server-assigned id.
    pub id: i64,
    /// What ran: the command's or group's name, or `ad-hoc shell`.
    pub title: String,
    /// Where it stands.
    pub state: ExecutionState,
    /// Hosts per state.
    pub counts: HostCounts,
    /// The stored command, if one ran.
    pub command_id: Option<i64>,
    /// The stored group, if one ran.
    pub group_id: Option<i64>,
    /// Hosts run at once.
    pub forks: u32,
    /// Per-host time limit.
    pub timeout_secs: u32,
    /// Who started it.
    pub created_by: String,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// `GET /api/v1/executions/{id}`: an execution with its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Execution {
    /// The summary fields.
    #[serde(flatten)]
    pub summary: ExecutionSummary,
    /// The steps run on every host, in order.
    pub steps: Vec<ExecutionStep>,
    /// The parameter values used.
    pub params: BTreeMap<String, Value>,
}

/// Filters for `GET /api/v1/executions/{id}/hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct ExecutionHostFilter {
    /// Only hosts in this state.
    pub state: Option<HostState>,
}

/// Options of `GET /api/v1/executions/{id}/events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct ExecutionEventsQuery {
    /// The index of a host whose output to stream as `output` events (all
    /// of it first, then what is new); without it no output is sent.
    pub output: Option<u32>,
}

/// Which output stream of a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    #[default]
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// The stream's wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Which part of a host's output `GET /api/v1/executions/{id}/hosts/{index}/output` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct OutputQuery {
    /// `stdout` or `stderr`.
    #[cfg_attr(feature = "openapi", param(inline))]
    pub stream: OutputStream,
    /// Byte offset to read from (a `next_offset` from an earlier read).
    pub offset: u64,
    /// Most bytes to return, 1 to [`OutputQuery::MAX_LIMIT`].
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 1_048_576))]
    pub limit: u32,
}

impl OutputQuery {
    /// The most bytes one read returns.
    pub const MAX_LIMIT: u32 = 1 << 20;
    /// Bytes returned when no limit is given.
    pub const DEFAULT_LIMIT: u32 = 64 << 10;
}

impl Default for OutputQuery {
    fn default() -> Self {
        Self {
            stream: OutputStream::Stdout,
            offset: 0,
            limit: Self::DEFAULT_LIMIT,
        }
    }
}

/// A piece of one host's output: the answer of
/// `GET /api/v1/executions/{id}/hosts/{index}/output` and the `output`
/// event of the execution's event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HostOutput {
    /// The host's position.
    pub index: u32,
    /// Which stream.
    pub stream: OutputStream,
    /// Byte offset of `data` in the stream.
    pub offset: u64,
    /// The bytes (never splits a UTF-8 character).
    pub data: String,
    /// Where the next read starts.
    pub next_offset: u64,
    /// Bytes of the stream kept so far.
    pub total_bytes: u64,
    /// The host has ended and `next_offset` reached the end: nothing more will come.
    pub complete: bool,
    /// The stream was cut at the per-host or per-execution cap.
    pub truncated: bool,
}

/// Filters for `GET /api/v1/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(default)]
pub struct ExecutionFilter {
    /// Only executions in this state.
    pub state: Option<ExecutionState>,
}

/// An event of `GET /api/v1/executions/{id}/events` (server-sent events).
/// The SSE `event:` field names the variant (`snapshot`, `host`,
/// `execution`); its `data:` is the variant's value alone, untagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(untagged)]
pub enum ExecutionEvent {
    /// The execution without its hosts, sent first on every connection
    /// (and again after the stream fell behind: reload the hosts then).
    Snapshot(Execution),
    /// A host changed state or has more output (its byte counts).
    Host(ExecutionHost),
    /// New output of the host named by the stream's `output` parameter:
    /// only the bytes not sent before, at most 64 KiB per event.
    Output(HostOutput),
    /// The execution's state or counts changed; after a final state the
    /// stream ends.
    Execution(ExecutionSummary),
}

impl ExecutionEvent {
    /// The SSE event name.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => "snapshot",
            Self::Host(_) => "host",
            Self::Output(_) => "output",
            Self::Execution(_) => "execution",
        }
    }
}

/// How DCP logs in to servers: `GET /api/v1/ssh/settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SshSettings {
    /// Whether a default key is configured (`ssh_key_file`): a server given
    /// without a private key or password (a host of an execution, a pool
    /// node added by address) logs in with it. Without one, such a server
    /// is refused.
    pub default_key: bool,
}

/// An SSH host key DCP trusts (trust on first use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct HostKey {
    /// `address:port`.
    pub host: String,
    /// The key's algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// When DCP first saw it (RFC 3339).
    pub first_seen_at: String,
    /// When DCP last connected with it (RFC 3339).
    pub last_seen_at: String,
}

/// A remote-command module an `expert` command can name (`GET /api/v1/modules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModuleEntry {
    /// The plugin that provides it.
    pub plugin: String,
    /// The module's name.
    pub module: String,
    /// What it does.
    pub description: String,
    /// A JSON Schema of its `args`.
    pub params_schema: String,
}
