//! Calls to DCP's REST API: the UI can do nothing the API cannot.

use dcp_api_types::{
    Account, AccountInput, AddNodes, AdoptMachine, AppKey, AppKeyCreated, AppKeyInput,
    AppKeyPrivileges, Binding, BindingInput, BuildLog, ChangeFilter, Choice, Cleanup,
    CloudLoadBalancer, CloudLoadBalancerDetail, CloudLoadBalancerInput, Cluster, ClusterInput,
    Command, CommandGroup, CommandGroupInput, CommandInput, ConfigFileInput, ConfigFileVersion,
    CreateMachines, CreatedToken, DiscoveryChange, DoomedTag, ErrorCode, ErrorDetail, Execution,
    ExecutionCreated, ExecutionHost, ExecutionInput, ExecutionSummary, FleetPoint, HostKey,
    HostOutput, ImageBuild, ImageBuildInput, ImageProject, ImageProjectInput, ImageTag,
    ImageTagDeleted, ImageTagDetail, LbGroup, LbGroupInput, LbNode, LbNodeInput, LbNodeUpdate,
    LbStatusInput, LbTargetStatus, LbUnit, LbUnitInput, ListenerInput, ListenerRunningInput,
    LoginRequest, LookupKind, LookupQuery, Machine, MachineDetail, MachineState, MachineTemplate,
    MembersInput, ModuleEntry, Node, NodeContainer, NodeLogs, Overview, Page, PageQuery,
    PluginDescription, PluginLimits, PluginTestRequest, PluginTestResult, PluginUpload,
    PluginVersion, Pool, PoolInput, QuotaInput, QuotaUsage, RegistryLogin, RegistryStatus, Release,
    ReleaseInput, RenderInput, RenderedDockerfile, Repository, RetentionInput, RetentionRule,
    Rollback, RollbackInput, Service, ServiceInput, Session, SshSettings, SyncReport, Task,
    TaskDetail, TaskInput, TaskTemplate, TaskTemplateInput, TemplateInput, Token, TokenInput,
    UpstreamInput, UpstreamView, UserStatus, WhiteListInput,
};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::{Serialize, de::DeserializeOwned};
use wasm_bindgen::{JsCast as _, JsValue, closure::Closure};

/// A failed API call, as the server described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError(pub(crate) ErrorDetail);

impl ApiError {
    /// An error made in the browser, not by the server.
    pub(crate) fn local(message: impl Into<String>) -> Self {
        Self(ErrorDetail {
            code: ErrorCode::Internal,
            message: message.into(),
            field: None,
            request_id: None,
            also: Vec::new(),
        })
    }

    /// A rule broken by `field`, found in the browser before sending.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self(ErrorDetail {
            code: ErrorCode::ValidationFailed,
            message: message.into(),
            field: Some(field.to_owned()),
            request_id: None,
            also: Vec::new(),
        })
    }

    /// Every field the error names with what is wrong with it: its own
    /// (without the field name the API puts in front of the message), then
    /// the others the server checked with it.
    pub(crate) fn field_errors(&self) -> Vec<(String, String)> {
        let own = self.0.field.as_ref().map(|field| {
            let message = &self.0.message;
            let message = message
                .strip_prefix(field.as_str())
                .and_then(|m| m.strip_prefix(": "))
                .unwrap_or(message);
            (field.clone(), message.to_owned())
        });
        own.into_iter()
            .chain(
                self.0
                    .also
                    .iter()
                    .map(|e| (e.field.clone(), e.message.clone())),
            )
            .collect()
    }

    /// What is wrong with `field` or an item of it (`ports` owns
    /// `ports[2].host_port`, said as "#3 › host port: …"), if anything.
    pub(crate) fn for_field(&self, field: &str) -> Option<String> {
        self.field_errors()
            .into_iter()
            .find_map(|(named, message)| {
                let rest = named.strip_prefix(field)?;
                if rest.is_empty() {
                    Some(message)
                } else if rest.starts_with('[') {
                    Some(format!("{}: {message}", human_field(rest)))
                } else {
                    None
                }
            })
    }

    /// The message, with the request id when the server gave one.
    pub(crate) fn message(&self) -> String {
        match &self.0.request_id {
            Some(id) if self.0.code == ErrorCode::Internal => {
                format!("{} (request id {id})", self.0.message)
            }
            _ => self.0.message.clone(),
        }
    }
}

/// A request field's path as people read it: `addresses[0].port` is
/// "addresses #1 › port", `container.cpu_limit` "container › cpu limit".
pub(crate) fn human_field(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let (index, tail) = after.split_once(']').unwrap_or((after, ""));
            let n = index
                .parse::<usize>()
                .map_or_else(|_| index.to_owned(), |i| (i + 1).to_string());
            out.push_str(&format!(" #{n}"));
            rest = tail;
        } else {
            let rest_trimmed = rest.strip_prefix('.').unwrap_or(rest);
            if !out.is_empty() {
                out.push_str(" › ");
            }
            let end = rest_trimmed.find(['.', '[']).unwrap_or(rest_trimmed.len());
            out.push_str(&rest_trimmed[..end].replace('_', " "));
            rest = &rest_trimmed[end..];
        }
    }
    out.trim_start().to_owned()
}

/// The `dcp_csrf` cookie, which cookie-authenticated writes must echo.
fn csrf_token() -> Option<String> {
    let document = web_sys::window()?.document()?;
    let cookies = document
        .dyn_into::<web_sys::HtmlDocument>()
        .ok()?
        .cookie()
        .ok()?;
    cookies
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == "dcp_csrf").then(|| v.to_owned()))
}

fn with_csrf(builder: RequestBuilder) -> RequestBuilder {
    match csrf_token() {
        Some(token) => builder.header("X-CSRF-Token", &token),
        None => builder,
    }
}

async fn read<T: DeserializeOwned>(res: Response) -> Result<T, ApiError> {
    if res.ok() {
        return res
            .json::<T>()
            .await
            .map_err(|e| ApiError::local(format!("unexpected response: {e}")));
    }
    let status = res.status();
    let detail = res
        .json::<dcp_api_types::ErrorBody>()
        .await
        .map(|body| body.error)
        .unwrap_or_else(|_| ErrorDetail {
            code: ErrorCode::Internal,
            message: format!("the server answered {status}"),
            field: None,
            request_id: None,
            also: Vec::new(),
        });
    if status == 401 && !is_login_page() {
        go_to_login();
    }
    Err(ApiError(detail))
}

fn is_login_page() -> bool {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .is_some_and(|p| p == "/login")
}

/// Shows the login page, remembering in `?next=` where the user was, so
/// that signing in returns there. The router follows the address in place
/// (a `popstate`) rather than the browser loading the app again for
/// `/login`: a logged-out deep link fetches the app once.
pub(crate) fn go_to_login() {
    let Some(window) = web_sys::window() else {
        return;
    };
    let location = window.location();
    let here = format!(
        "{}{}",
        location.pathname().unwrap_or_default(),
        location.search().unwrap_or_default()
    );
    let target = if here == "/" {
        "/login".to_owned()
    } else {
        format!("/login?next={}", js_sys::encode_uri_component(&here))
    };
    let shown = window
        .history()
        .and_then(|history| history.replace_state_with_url(&JsValue::NULL, "", Some(&target)))
        .and_then(|()| web_sys::PopStateEvent::new("popstate"))
        .and_then(|event| window.dispatch_event(&event));
    if shown.is_err() {
        let _ = location.set_href(&target);
    }
}

/// Leaves for the login page after logging out: a full load, so nothing of
/// the last user's session survives in memory.
pub(crate) fn reload_at_login() {
    if let Some(window) = web_sys::window() {
        let _ = window.location().set_href("/login");
    }
}

/// Where to go after signing in: `next` if it is a path of this app, else
/// the overview.
pub(crate) fn after_login(next: Option<String>) -> String {
    next.filter(|path| {
        path.starts_with('/') && !path.starts_with("//") && !path.starts_with("/login")
    })
    .unwrap_or_else(|| "/".to_owned())
}

async fn send(builder: RequestBuilder) -> Result<Response, ApiError> {
    with_csrf(builder)
        .send()
        .await
        .map_err(|e| ApiError::local(format!("cannot reach DCP: {e}")))
}

async fn send_json<B: Serialize>(builder: RequestBuilder, body: &B) -> Result<Response, ApiError> {
    with_csrf(builder)
        .json(body)
        .map_err(|e| ApiError::local(e.to_string()))?
        .send()
        .await
        .map_err(|e| ApiError::local(format!("cannot reach DCP: {e}")))
}

async fn no_content(res: Response) -> Result<(), ApiError> {
    if res.ok() {
        Ok(())
    } else {
        read::<serde_json::Value>(res).await.map(|_| ())
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Logs in; the server sets the session cookies.
pub(crate) async fn login(username: String, password: String) -> Result<Session, ApiError> {
    read(
        send_json(
            Request::post("/api/v1/session"),
            &LoginRequest { username, password },
        )
        .await?,
    )
    .await
}

/// Who is logged in.
pub(crate) async fn session() -> Result<Session, ApiError> {
    read(send(Request::get("/api/v1/session")).await?).await
}

/// Logs out.
pub(crate) async fn logout() -> Result<(), ApiError> {
    no_content(send(Request::delete("/api/v1/session")).await?).await
}

/// One page of clusters whose name contains `name`.
pub(crate) async fn clusters(
    page: u32,
    per_page: u32,
    name: &str,
) -> Result<Page<Cluster>, ApiError> {
    let url = format!(
        "/api/v1/clusters?page={page}&per_page={per_page}&name={}",
        encode(name)
    );
    read(send(Request::get(&url)).await?).await
}

/// Creates a cluster.
pub(crate) async fn create_cluster(input: &ClusterInput) -> Result<Cluster, ApiError> {
    read(send_json(Request::post("/api/v1/clusters"), input).await?).await
}

/// Replaces a cluster's fields.
pub(crate) async fn update_cluster(id: i64, input: &ClusterInput) -> Result<Cluster, ApiError> {
    read(send_json(Request::put(&format!("/api/v1/clusters/{id}")), input).await?).await
}

/// Deletes a cluster.
pub(crate) async fn delete_cluster(id: i64) -> Result<(), ApiError> {
    no_content(send(Request::delete(&format!("/api/v1/clusters/{id}"))).await?).await
}

/// One page of the caller's API tokens.
pub(crate) async fn tokens(page: u32) -> Result<Page<Token>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/tokens?page={page}&per_page=50"
        )))
        .await?,
    )
    .await
}

/// Creates an API token; the secret is in the answer only.
pub(crate) async fn create_token(name: String) -> Result<CreatedToken, ApiError> {
    read(send_json(Request::post("/api/v1/tokens"), &TokenInput { name }).await?).await
}

/// Revokes an API token.
pub(crate) async fn revoke_token(id: i64) -> Result<(), ApiError> {
    no_content(send(Request::delete(&format!("/api/v1/tokens/{id}"))).await?).await
}

/// One page of users with their login lock-outs (administrators).
pub(crate) async fn users(page: u32) -> Result<Page<UserStatus>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/users?page={page}&per_page=50"
        )))
        .await?,
    )
    .await
}

/// Lifts a user's login lock-out.
pub(crate) async fn unlock_user(id: i64) -> Result<UserStatus, ApiError> {
    read(send(Request::delete(&format!("/api/v1/users/{id}/lock"))).await?).await
}

/// One page of plugin versions.
pub(crate) async fn plugins(page: u32, per_page: u32) -> Result<Page<PluginVersion>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/plugins?page={page}&per_page={per_page}"
        )))
        .await?,
    )
    .await
}

/// Uploads a component and its manifest (multipart).
pub(crate) async fn upload_plugin(
    component: web_sys::File,
    manifest: web_sys::File,
) -> Result<PluginUpload, ApiError> {
    let form =
        web_sys::FormData::new().map_err(|_| ApiError::local("the browser cannot build a form"))?;
    form.append_with_blob_and_filename("component", &component, &component.name())
        .and_then(|()| form.append_with_blob_and_filename("manifest", &manifest, &manifest.name()))
        .map_err(|_| ApiError::local("the browser cannot read the files"))?;
    let request = with_csrf(Request::post("/api/v1/plugins"))
        .body(form)
        .map_err(|e| ApiError::local(e.to_string()))?;
    read(
        request
            .send()
            .await
            .map_err(|e| ApiError::local(format!("cannot reach DCP: {e}")))?,
    )
    .await
}

/// Approves, activates or rolls back a plugin version (`action`).
pub(crate) async fn plugin_action(id: i64, action: &str) -> Result<PluginVersion, ApiError> {
    read(send(Request::post(&format!("/api/v1/plugins/{id}/{action}"))).await?).await
}

/// Deletes a plugin version.
pub(crate) async fn delete_plugin(id: i64) -> Result<(), ApiError> {
    no_content(send(Request::delete(&format!("/api/v1/plugins/{id}"))).await?).await
}

/// Tries a plugin version with a configuration.
pub(crate) async fn test_plugin(
    id: i64,
    config: serde_json::Value,
) -> Result<PluginTestResult, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/plugins/{id}/test")),
            &PluginTestRequest { config },
        )
        .await?,
    )
    .await
}

/// Overrides a plugin version's per-call limits (unset fields: the defaults).
pub(crate) async fn set_plugin_limits(
    id: i64,
    limits: &PluginLimits,
) -> Result<PluginVersion, ApiError> {
    read(
        send_json(
            Request::put(&format!("/api/v1/plugins/{id}/limits")),
            limits,
        )
        .await?,
    )
    .await
}

/// One page of a named list (`commands`, `command-groups`) filtered by name.
async fn named_page<T: DeserializeOwned>(
    resource: &str,
    page: u32,
    per_page: u32,
    name: &str,
) -> Result<Page<T>, ApiError> {
    let url = format!(
        "/api/v1/{resource}?page={page}&per_page={per_page}&name={}",
        encode(name)
    );
    read(send(Request::get(&url)).await?).await
}

/// One page of a list at `url` (which may hold filters already).
async fn page_of<T: DeserializeOwned>(
    url: &str,
    page: u32,
    per_page: u32,
) -> Result<Page<T>, ApiError> {
    let join = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{join}page={page}&per_page={per_page}");
    read(send(Request::get(&url)).await?).await
}

/// The most pages [`every`] reads: 10 000 items.
const EVERY_MAX_PAGES: u32 = 50;

/// Every item of a list at `url`, page by page: for a form's choices and a
/// chart, which need the whole list rather than a page of it.
async fn every<T: DeserializeOwned>(url: &str) -> Result<Vec<T>, ApiError> {
    let mut items = Vec::new();
    for page in 1..=EVERY_MAX_PAGES {
        let got: Page<T> = page_of(url, page, PageQuery::MAX_PER_PAGE).await?;
        let last = got.items.is_empty() || u64::from(page) >= got.page_count();
        items.extend(got.items);
        if last {
            break;
        }
    }
    Ok(items)
}

/// Creates (`id: None`) or replaces a resource of a collection.
async fn save<B: Serialize, T: DeserializeOwned>(
    resource: &str,
    id: Option<i64>,
    body: &B,
) -> Result<T, ApiError> {
    let request = match id {
        Some(id) => Request::put(&format!("/api/v1/{resource}/{id}")),
        None => Request::post(&format!("/api/v1/{resource}")),
    };
    read(send_json(request, body).await?).await
}

/// Deletes a resource of a collection.
async fn remove(resource: &str, id: i64) -> Result<(), ApiError> {
    no_content(send(Request::delete(&format!("/api/v1/{resource}/{id}"))).await?).await
}

/// One page of commands whose name contains `name`.
pub(crate) async fn commands(
    page: u32,
    per_page: u32,
    name: &str,
) -> Result<Page<Command>, ApiError> {
    named_page("commands", page, per_page, name).await
}

/// Creates or replaces a command.
pub(crate) async fn save_command(
    id: Option<i64>,
    input: &CommandInput,
) -> Result<Command, ApiError> {
    save("commands", id, input).await
}

/// Deletes a command.
pub(crate) async fn delete_command(id: i64) -> Result<(), ApiError> {
    remove("commands", id).await
}

/// One page of command groups whose name contains `name`.
pub(crate) async fn groups(
    page: u32,
    per_page: u32,
    name: &str,
) -> Result<Page<CommandGroup>, ApiError> {
    named_page("command-groups", page, per_page, name).await
}

/// Creates or replaces a command group.
pub(crate) async fn save_group(
    id: Option<i64>,
    input: &CommandGroupInput,
) -> Result<CommandGroup, ApiError> {
    save("command-groups", id, input).await
}

/// Deletes a command group.
pub(crate) async fn delete_group(id: i64) -> Result<(), ApiError> {
    remove("command-groups", id).await
}

/// The modules `expert` commands can name.
pub(crate) async fn modules() -> Result<Vec<ModuleEntry>, ApiError> {
    every("/api/v1/modules").await
}

/// Starts an execution.
pub(crate) async fn start_execution(input: &ExecutionInput) -> Result<ExecutionCreated, ApiError> {
    read(send_json(Request::post("/api/v1/executions"), input).await?).await
}

/// One page of executions, newest first, optionally only in `state`.
pub(crate) async fn executions(
    page: u32,
    per_page: u32,
    state: &str,
) -> Result<Page<ExecutionSummary>, ApiError> {
    let mut url = format!("/api/v1/executions?page={page}&per_page={per_page}");
    if !state.is_empty() {
        url.push_str(&format!("&state={}", encode(state)));
    }
    read(send(Request::get(&url)).await?).await
}

/// One execution with its hosts.
pub(crate) async fn execution(id: i64) -> Result<Execution, ApiError> {
    read(send(Request::get(&format!("/api/v1/executions/{id}"))).await?).await
}

/// One page of an execution's hosts (without their output), only those in
/// `state` unless it is empty.
pub(crate) async fn execution_hosts(
    id: i64,
    page: u32,
    per_page: u32,
    state: &str,
) -> Result<Page<ExecutionHost>, ApiError> {
    let mut url = format!("/api/v1/executions/{id}/hosts?page={page}&per_page={per_page}");
    if !state.is_empty() {
        url.push_str(&format!("&state={}", encode(state)));
    }
    read(send(Request::get(&url)).await?).await
}

/// A piece of one host's output (`stream` is `stdout` or `stderr`) from `offset`.
pub(crate) async fn host_output(
    id: i64,
    index: u32,
    stream: &str,
    offset: u64,
) -> Result<HostOutput, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/executions/{id}/hosts/{index}/output?stream={stream}&offset={offset}&limit=1048576"
        )))
        .await?,
    )
    .await
}

/// Cancels a running execution.
pub(crate) async fn cancel_execution(id: i64) -> Result<Execution, ApiError> {
    read(send(Request::post(&format!("/api/v1/executions/{id}/cancel"))).await?).await
}

/// One page of the SSH host keys DCP trusts.
pub(crate) async fn host_keys(page: u32) -> Result<Page<HostKey>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/ssh/host-keys?page={page}&per_page=50"
        )))
        .await?,
    )
    .await
}

/// Forgets a host's key: the next connection trusts what the host presents.
pub(crate) async fn forget_host_key(host: &str) -> Result<(), ApiError> {
    no_content(
        send(Request::delete(&format!(
            "/api/v1/ssh/host-keys/{}",
            encode(host)
        )))
        .await?,
    )
    .await
}

/// Every cloud account, by name (a form's choices).
pub(crate) async fn accounts() -> Result<Vec<Account>, ApiError> {
    every("/api/v1/accounts").await
}

/// One page of cloud accounts, by name.
pub(crate) async fn accounts_page(page: u32, per_page: u32) -> Result<Page<Account>, ApiError> {
    page_of("/api/v1/accounts", page, per_page).await
}

/// Creates or replaces a cloud account (no secret: keep the stored one).
pub(crate) async fn save_account(
    id: Option<i64>,
    input: &AccountInput,
) -> Result<Account, ApiError> {
    save("accounts", id, input).await
}

/// Deletes a cloud account.
pub(crate) async fn delete_account(id: i64) -> Result<(), ApiError> {
    remove("accounts", id).await
}

// ---- an account's own load balancers ----

/// Which cloud load balancer: the account, its region and the cloud's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloudLb {
    /// The account's id.
    pub(crate) account: i64,
    /// The region it is in.
    pub(crate) region: String,
    /// The cloud's id.
    pub(crate) lb: String,
}

/// `/api/v1/accounts/{id}/load-balancers/{lb}{rest}?region=…`.
fn cloud_lb_url(at: &CloudLb, rest: &str) -> String {
    format!(
        "/api/v1/accounts/{}/load-balancers/{}{rest}?region={}",
        at.account,
        encode(&at.lb),
        encode(&at.region)
    )
}

/// One cloud account.
pub(crate) async fn account(id: i64) -> Result<Account, ApiError> {
    read(send(Request::get(&format!("/api/v1/accounts/{id}"))).await?).await
}

/// An account's load balancers in a region.
pub(crate) async fn cloud_load_balancers(
    account: i64,
    region: &str,
) -> Result<Vec<CloudLoadBalancer>, ApiError> {
    every(&format!(
        "/api/v1/accounts/{account}/load-balancers?region={}",
        encode(region)
    ))
    .await
}

/// Creates a load balancer; the same `key` again answers the first one.
pub(crate) async fn create_cloud_load_balancer(
    account: i64,
    input: &CloudLoadBalancerInput,
    key: &str,
) -> Result<CloudLoadBalancer, ApiError> {
    let request = Request::post(&format!("/api/v1/accounts/{account}/load-balancers"))
        .header("Idempotency-Key", key);
    read(send_json(request, input).await?).await
}

/// One load balancer with its listeners, backends and units.
pub(crate) async fn cloud_load_balancer(at: &CloudLb) -> Result<CloudLoadBalancerDetail, ApiError> {
    read(send(Request::get(&cloud_lb_url(at, ""))).await?).await
}

/// Deletes a load balancer (a 409 while a unit serves through it).
pub(crate) async fn delete_cloud_load_balancer(at: &CloudLb) -> Result<(), ApiError> {
    no_content(send(Request::delete(&cloud_lb_url(at, ""))).await?).await
}

/// Activates or stops a load balancer.
pub(crate) async fn set_cloud_load_balancer_status(
    at: &CloudLb,
    status: LbTargetStatus,
) -> Result<(), ApiError> {
    no_content(
        send_json(
            Request::put(&cloud_lb_url(at, "/status")),
            &LbStatusInput { status },
        )
        .await?,
    )
    .await
}

/// Creates a listener, stopped.
pub(crate) async fn create_cloud_listener(
    at: &CloudLb,
    input: &ListenerInput,
) -> Result<(), ApiError> {
    no_content(send_json(Request::post(&cloud_lb_url(at, "/listeners")), input).await?).await
}

/// Starts or stops a listener.
pub(crate) async fn set_cloud_listener_running(
    at: &CloudLb,
    port: u16,
    running: bool,
) -> Result<(), ApiError> {
    no_content(
        send_json(
            Request::put(&cloud_lb_url(at, &format!("/listeners/{port}/running"))),
            &ListenerRunningInput { running },
        )
        .await?,
    )
    .await
}

/// Deletes a listener.
pub(crate) async fn delete_cloud_listener(at: &CloudLb, port: u16) -> Result<(), ApiError> {
    no_content(
        send(Request::delete(&cloud_lb_url(
            at,
            &format!("/listeners/{port}"),
        )))
        .await?,
    )
    .await
}

/// Replaces a listener's white list (a 422 names `entries[i]`).
pub(crate) async fn set_cloud_white_list(
    at: &CloudLb,
    port: u16,
    input: &WhiteListInput,
) -> Result<(), ApiError> {
    no_content(
        send_json(
            Request::put(&cloud_lb_url(at, &format!("/listeners/{port}/white-list"))),
            input,
        )
        .await?,
    )
    .await
}

/// Asks an account's cloud for the choices of `kind` (a 502 names the
/// provider's error code and request id).
pub(crate) async fn lookup(
    account: i64,
    kind: LookupKind,
    query: &LookupQuery,
) -> Result<Vec<Choice>, ApiError> {
    let mut url = format!("/api/v1/accounts/{account}/lookups/{}", kind.as_str());
    let params: Vec<String> = [
        ("region", &query.region),
        ("zone", &query.zone),
        ("vpc", &query.vpc),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_deref().map(|v| format!("{name}={}", encode(v))))
    .collect();
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    read(send(Request::get(&url)).await?).await
}

/// Every machine template, with its quota usage (a form's choices).
pub(crate) async fn templates() -> Result<Vec<MachineTemplate>, ApiError> {
    every("/api/v1/machine-templates").await
}

/// One page of machine templates, by name.
pub(crate) async fn templates_page(
    page: u32,
    per_page: u32,
) -> Result<Page<MachineTemplate>, ApiError> {
    page_of("/api/v1/machine-templates", page, per_page).await
}

/// One machine template.
pub(crate) async fn template(id: i64) -> Result<MachineTemplate, ApiError> {
    read(send(Request::get(&format!("/api/v1/machine-templates/{id}"))).await?).await
}

/// Creates or replaces a machine template.
pub(crate) async fn save_template(
    id: Option<i64>,
    input: &TemplateInput,
) -> Result<MachineTemplate, ApiError> {
    save("machine-templates", id, input).await
}

/// Deletes a machine template.
pub(crate) async fn delete_template(id: i64) -> Result<(), ApiError> {
    remove("machine-templates", id).await
}

/// One page of templates' quotas and usage, by template name.
pub(crate) async fn quotas(page: u32, per_page: u32) -> Result<Page<QuotaUsage>, ApiError> {
    page_of("/api/v1/quotas", page, per_page).await
}

/// Sets a template's quota.
pub(crate) async fn set_quota(
    template_id: i64,
    input: &QuotaInput,
) -> Result<QuotaUsage, ApiError> {
    read(
        send_json(
            Request::put(&format!("/api/v1/quotas/{template_id}")),
            input,
        )
        .await?,
    )
    .await
}

/// One page of machines, optionally only in `state` or of one template
/// (without `state`: every machine not deleted).
pub(crate) async fn machines(
    page: u32,
    per_page: u32,
    state: Option<MachineState>,
    template_id: Option<i64>,
) -> Result<Page<Machine>, ApiError> {
    let mut url = format!("/api/v1/machines?page={page}&per_page={per_page}");
    if let Some(state) = state {
        url.push_str(&format!("&state={}", state.as_str()));
    }
    if let Some(id) = template_id {
        url.push_str(&format!("&template_id={id}"));
    }
    read(send(Request::get(&url)).await?).await
}

/// The first ready machines whose name or address contains `q`, newest
/// first; with `free`, only those in no pool (a pool can take them).
pub(crate) async fn ready_machines(q: &str, free: bool) -> Result<Page<Machine>, ApiError> {
    let mut url = format!(
        "/api/v1/machines?state=ready&per_page={}&q={}",
        PageQuery::DEFAULT_PER_PAGE,
        encode(q.trim())
    );
    if free {
        url.push_str("&pooled=false");
    }
    read(send(Request::get(&url)).await?).await
}

/// Whether DCP has a default SSH key for servers given without one.
pub(crate) async fn ssh_settings() -> Result<SshSettings, ApiError> {
    read(send(Request::get("/api/v1/ssh/settings")).await?).await
}

/// Asks for machines from a template; the answer lists them, still `creating`.
pub(crate) async fn create_machines(input: &CreateMachines) -> Result<Vec<Machine>, ApiError> {
    read(send_json(Request::post("/api/v1/machines"), input).await?).await
}

/// Adopts an existing server.
pub(crate) async fn adopt_machine(input: &AdoptMachine) -> Result<Machine, ApiError> {
    read(send_json(Request::post("/api/v1/machines/adopt"), input).await?).await
}

/// One machine with its timeline and log.
pub(crate) async fn machine(id: i64) -> Result<MachineDetail, ApiError> {
    read(send(Request::get(&format!("/api/v1/machines/{id}"))).await?).await
}

/// Releases a machine (it goes `deleting`).
pub(crate) async fn delete_machine(id: i64) -> Result<Machine, ApiError> {
    read(send(Request::delete(&format!("/api/v1/machines/{id}"))).await?).await
}

/// Where a machine's private key downloads from.
pub(crate) fn machine_key_url(id: i64) -> String {
    format!("/api/v1/machines/{id}/key.pem")
}

/// Live machines per provider, hour by hour, over the last `hours`.
pub(crate) async fn fleet_history(hours: u32) -> Result<Vec<FleetPoint>, ApiError> {
    every(&format!("/api/v1/fleet-history?hours={hours}")).await
}

/// Services (of one cluster), by name.
pub(crate) async fn services(cluster_id: Option<i64>) -> Result<Page<Service>, ApiError> {
    let mut url = format!("/api/v1/services?per_page={}", PageQuery::MAX_PER_PAGE);
    if let Some(id) = cluster_id {
        url.push_str(&format!("&cluster_id={id}"));
    }
    read(send(Request::get(&url)).await?).await
}

/// Creates or replaces a service.
pub(crate) async fn save_service(
    id: Option<i64>,
    input: &ServiceInput,
) -> Result<Service, ApiError> {
    save("services", id, input).await
}

/// Deletes a service.
pub(crate) async fn delete_service(id: i64) -> Result<(), ApiError> {
    remove("services", id).await
}

/// Whose tasks [`tasks`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskScope {
    /// Every pool's.
    All,
    /// One pool's.
    Pool(i64),
    /// One service's pools'.
    Service(i64),
}

/// One service.
pub(crate) async fn service(id: i64) -> Result<Service, ApiError> {
    read(send(Request::get(&format!("/api/v1/services/{id}"))).await?).await
}

/// One cluster.
pub(crate) async fn cluster(id: i64) -> Result<Cluster, ApiError> {
    read(send(Request::get(&format!("/api/v1/clusters/{id}"))).await?).await
}

/// Pools (of one service), by name.
pub(crate) async fn pools(service_id: Option<i64>) -> Result<Page<Pool>, ApiError> {
    let mut url = format!("/api/v1/pools?per_page={}", PageQuery::MAX_PER_PAGE);
    if let Some(id) = service_id {
        url.push_str(&format!("&service_id={id}"));
    }
    read(send(Request::get(&url)).await?).await
}

/// One pool.
pub(crate) async fn pool(id: i64) -> Result<Pool, ApiError> {
    read(send(Request::get(&format!("/api/v1/pools/{id}"))).await?).await
}

/// Creates or replaces a pool.
pub(crate) async fn save_pool(id: Option<i64>, input: &PoolInput) -> Result<Pool, ApiError> {
    save("pools", id, input).await
}

/// Deletes a pool.
pub(crate) async fn delete_pool(id: i64) -> Result<(), ApiError> {
    remove("pools", id).await
}

/// One page of a pool's nodes, oldest first.
pub(crate) async fn pool_nodes(
    pool_id: i64,
    page: u32,
    per_page: u32,
) -> Result<Page<Node>, ApiError> {
    page_of(&format!("/api/v1/pools/{pool_id}/nodes"), page, per_page).await
}

/// Adds servers or machines to a pool.
pub(crate) async fn add_nodes(pool_id: i64, input: &AddNodes) -> Result<Vec<Node>, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/pools/{pool_id}/nodes")),
            input,
        )
        .await?,
    )
    .await
}

/// Takes a node out of its pool: the removal task (its container stopped,
/// its machine released or kept), or `None` when `force` removed the row
/// at once.
pub(crate) async fn remove_node(
    pool_id: i64,
    node_id: i64,
    release_machine: bool,
    force: bool,
) -> Result<Option<Task>, ApiError> {
    let url = format!(
        "/api/v1/pools/{pool_id}/nodes/{node_id}?release_machine={release_machine}&force={force}"
    );
    let res = send(Request::delete(&url)).await?;
    if force {
        return no_content(res).await.map(|()| None);
    }
    read(res).await.map(Some)
}

/// Every task template, by name (a form's choices).
pub(crate) async fn task_templates() -> Result<Vec<TaskTemplate>, ApiError> {
    every("/api/v1/task-templates").await
}

/// One page of task templates, by name.
pub(crate) async fn task_templates_page(
    page: u32,
    per_page: u32,
) -> Result<Page<TaskTemplate>, ApiError> {
    page_of("/api/v1/task-templates", page, per_page).await
}

/// Creates or replaces a task template.
pub(crate) async fn save_task_template(
    id: Option<i64>,
    input: &TaskTemplateInput,
) -> Result<TaskTemplate, ApiError> {
    save("task-templates", id, input).await
}

/// Deletes a task template.
pub(crate) async fn delete_task_template(id: i64) -> Result<(), ApiError> {
    remove("task-templates", id).await
}

/// One page of tasks (all, or of one pool or service), newest first.
pub(crate) async fn tasks(page: u32, scope: TaskScope) -> Result<Page<Task>, ApiError> {
    let mut url = format!(
        "/api/v1/tasks?page={page}&per_page={}",
        PageQuery::DEFAULT_PER_PAGE
    );
    match scope {
        TaskScope::All => {}
        TaskScope::Pool(id) => url.push_str(&format!("&pool_id={id}")),
        TaskScope::Service(id) => url.push_str(&format!("&service_id={id}")),
    }
    read(send(Request::get(&url)).await?).await
}

/// One task with every node × step.
pub(crate) async fn task(id: i64) -> Result<TaskDetail, ApiError> {
    read(send(Request::get(&format!("/api/v1/tasks/{id}"))).await?).await
}

/// Starts a task.
pub(crate) async fn start_task(input: &TaskInput) -> Result<Task, ApiError> {
    read(send_json(Request::post("/api/v1/tasks"), input).await?).await
}

/// What a plugin version says about itself (its configuration schema).
pub(crate) async fn plugin_description(id: i64) -> Result<PluginDescription, ApiError> {
    read(send(Request::get(&format!("/api/v1/plugins/{id}/description"))).await?).await
}

/// A node's container as Docker reports it now, health asked once.
pub(crate) async fn node_container(pool: i64, node: i64) -> Result<NodeContainer, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/pools/{pool}/nodes/{node}/container"
        )))
        .await?,
    )
    .await
}

/// A node container's last `tail` log lines, or those after `since`.
pub(crate) async fn node_logs(
    pool: i64,
    node: i64,
    tail: u32,
    since: Option<&str>,
) -> Result<NodeLogs, ApiError> {
    let mut url = format!("/api/v1/pools/{pool}/nodes/{node}/logs?tail={tail}");
    if let Some(since) = since {
        url.push_str("&since=");
        url.push_str(&String::from(js_sys::encode_uri_component(since)));
    }
    read(send(Request::get(&url)).await?).await
}

/// Rolls a service back to `tag` (its `rollback_tag`): a deploy per pool.
pub(crate) async fn rollback_service(id: i64, tag: &str) -> Result<Rollback, ApiError> {
    let input = RollbackInput {
        tag: tag.to_owned(),
        batch_size: None,
    };
    read(
        send_json(
            Request::post(&format!("/api/v1/services/{id}/rollback")),
            &input,
        )
        .await?,
    )
    .await
}

/// Pauses, resumes, retries (the failed nodes) or cancels a task.
pub(crate) async fn task_action(id: i64, action: &str) -> Result<Task, ApiError> {
    read(send(Request::post(&format!("/api/v1/tasks/{id}/{action}"))).await?).await
}

/// The overview: fleet, pools' health, work under way, recent failures, quotas.
pub(crate) async fn overview() -> Result<Overview, ApiError> {
    read(send(Request::get("/api/v1/overview")).await?).await
}

// ---- service discovery ----

/// `?group_id=` when a group is given.
fn group_query(group_id: Option<i64>) -> String {
    group_id.map_or_else(String::new, |id| format!("?group_id={id}"))
}

/// Every balancer group, by name.
pub(crate) async fn lb_groups() -> Result<Vec<LbGroup>, ApiError> {
    every("/api/v1/lb-groups").await
}

/// Creates or replaces a balancer group.
pub(crate) async fn save_lb_group(
    id: Option<i64>,
    input: &LbGroupInput,
) -> Result<LbGroup, ApiError> {
    save("lb-groups", id, input).await
}

/// Deletes an empty balancer group.
pub(crate) async fn delete_lb_group(id: i64) -> Result<(), ApiError> {
    remove("lb-groups", id).await
}

/// Every unit (of one group) with its nodes, by group and name.
pub(crate) async fn lb_units(group_id: Option<i64>) -> Result<Vec<LbUnit>, ApiError> {
    every(&format!("/api/v1/lb-units{}", group_query(group_id))).await
}

/// One unit with its nodes and what each serves.
pub(crate) async fn lb_unit(id: i64) -> Result<LbUnit, ApiError> {
    read(send(Request::get(&format!("/api/v1/lb-units/{id}"))).await?).await
}

/// Creates or replaces a unit.
pub(crate) async fn save_lb_unit(id: Option<i64>, input: &LbUnitInput) -> Result<LbUnit, ApiError> {
    save("lb-units", id, input).await
}

/// Deletes a unit without nodes.
pub(crate) async fn delete_lb_unit(id: i64) -> Result<(), ApiError> {
    remove("lb-units", id).await
}

/// Pushes every upstream of its group to each node of a unit again.
pub(crate) async fn resync_unit(id: i64) -> Result<SyncReport, ApiError> {
    read(send(Request::post(&format!("/api/v1/lb-units/{id}/resync"))).await?).await
}

/// Adds a machine to a unit as a balancer node.
pub(crate) async fn add_lb_node(unit_id: i64, input: &LbNodeInput) -> Result<LbNode, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/lb-units/{unit_id}/nodes")),
            input,
        )
        .await?,
    )
    .await
}

/// Replaces a balancer node's own settings.
pub(crate) async fn update_lb_node(id: i64, input: &LbNodeUpdate) -> Result<LbNode, ApiError> {
    read(send_json(Request::put(&format!("/api/v1/lb-nodes/{id}")), input).await?).await
}

/// Takes a node out of its unit (the machine stays).
pub(crate) async fn delete_lb_node(id: i64) -> Result<(), ApiError> {
    remove("lb-nodes", id).await
}

/// Pushes every upstream of its group to one node again.
pub(crate) async fn resync_lb_node(id: i64) -> Result<SyncReport, ApiError> {
    read(send(Request::post(&format!("/api/v1/lb-nodes/{id}/resync"))).await?).await
}

/// Every upstream (of one group), by group and name.
pub(crate) async fn upstreams(group_id: Option<i64>) -> Result<Vec<UpstreamView>, ApiError> {
    every(&format!("/api/v1/upstreams{}", group_query(group_id))).await
}

/// One upstream with its members and what each node serves.
pub(crate) async fn upstream(id: i64) -> Result<UpstreamView, ApiError> {
    read(send(Request::get(&format!("/api/v1/upstreams/{id}"))).await?).await
}

/// Creates an upstream without members.
pub(crate) async fn create_upstream(input: &UpstreamInput) -> Result<UpstreamView, ApiError> {
    read(send_json(Request::post("/api/v1/upstreams"), input).await?).await
}

/// Deletes an upstream no binding uses.
pub(crate) async fn delete_upstream(id: i64) -> Result<(), ApiError> {
    remove("upstreams", id).await
}

/// How [`change_members`] changes an upstream's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Members {
    /// Adds backends; one there already takes the new weight.
    Register,
    /// Removes backends.
    Unregister,
}

/// Changes an upstream's members and pushes them to every node of its
/// group: the change, with what each node did. The UI changes members one
/// by one rather than replacing the list (`PUT …/backends`): a list read a
/// moment ago would drop a backend a task registered since.
pub(crate) async fn change_members(
    id: i64,
    how: Members,
    input: &MembersInput,
) -> Result<DiscoveryChange, ApiError> {
    let request = match how {
        Members::Register => Request::post(&format!("/api/v1/upstreams/{id}/register")),
        Members::Unregister => Request::post(&format!("/api/v1/upstreams/{id}/unregister")),
    };
    read(send_json(request, input).await?).await
}

/// Every discovery binding, by name.
pub(crate) async fn bindings() -> Result<Vec<Binding>, ApiError> {
    every("/api/v1/bindings").await
}

/// Creates or replaces a discovery binding.
pub(crate) async fn save_binding(
    id: Option<i64>,
    input: &BindingInput,
) -> Result<Binding, ApiError> {
    save("bindings", id, input).await
}

/// Deletes a binding no pool names.
pub(crate) async fn delete_binding(id: i64) -> Result<(), ApiError> {
    remove("bindings", id).await
}

/// One page of the operation log, newest first, filtered.
pub(crate) async fn discovery_changes(
    filter: &ChangeFilter,
    page: u32,
    per_page: u32,
) -> Result<Page<DiscoveryChange>, ApiError> {
    let mut url = format!("/api/v1/discovery-changes?page={page}&per_page={per_page}");
    if let Some(id) = filter.upstream_id {
        url.push_str(&format!("&upstream_id={id}"));
    }
    for (name, value) in [
        ("actor", &filter.actor),
        ("action", &filter.action),
        ("correlation_id", &filter.correlation_id),
        ("q", &filter.q),
    ] {
        if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            url.push_str(&format!("&{name}={}", encode(value)));
        }
    }
    read(send(Request::get(&url)).await?).await
}

/// One change of the operation log with the upstream's whole membership
/// before and after it (replayed by the server).
pub(crate) async fn discovery_change(id: i64) -> Result<DiscoveryChange, ApiError> {
    read(send(Request::get(&format!("/api/v1/discovery-changes/{id}"))).await?).await
}

/// Every version of every configuration file of a unit, without text.
pub(crate) async fn unit_files(unit_id: i64) -> Result<Vec<ConfigFileVersion>, ApiError> {
    every(&format!("/api/v1/lb-units/{unit_id}/files")).await
}

/// Stores the next version of one of a unit's files.
pub(crate) async fn add_unit_file(
    unit_id: i64,
    input: &ConfigFileInput,
) -> Result<ConfigFileVersion, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/lb-units/{unit_id}/files")),
            input,
        )
        .await?,
    )
    .await
}

/// One version of a unit's file, with its text.
pub(crate) async fn unit_file(
    unit_id: i64,
    path: &str,
    version: i64,
) -> Result<ConfigFileVersion, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/lb-units/{unit_id}/files/{version}?path={}",
            encode(path)
        )))
        .await?,
    )
    .await
}

/// One page of a unit's releases, newest first.
pub(crate) async fn releases(
    unit_id: i64,
    page: u32,
    per_page: u32,
) -> Result<Page<Release>, ApiError> {
    page_of(
        &format!("/api/v1/lb-units/{unit_id}/releases"),
        page,
        per_page,
    )
    .await
}

/// Publishes file versions to a unit's nodes, one at a time.
pub(crate) async fn publish(unit_id: i64, input: &ReleaseInput) -> Result<Release, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/lb-units/{unit_id}/releases")),
            input,
        )
        .await?,
    )
    .await
}

/// One release with each node's progress and log.
pub(crate) async fn release(id: i64) -> Result<Release, ApiError> {
    read(send(Request::get(&format!("/api/v1/lb-releases/{id}"))).await?).await
}

/// Publishes an earlier release's files again, as a new release.
pub(crate) async fn rollback_release(id: i64) -> Result<Release, ApiError> {
    read(send(Request::post(&format!("/api/v1/lb-releases/{id}/rollback"))).await?).await
}

/// Every app key, by name (never their secrets).
pub(crate) async fn app_keys() -> Result<Vec<AppKey>, ApiError> {
    every("/api/v1/app-keys").await
}

/// Makes an app key; its secret is in this answer only.
pub(crate) async fn create_app_key(input: &AppKeyInput) -> Result<AppKeyCreated, ApiError> {
    read(send_json(Request::post("/api/v1/app-keys"), input).await?).await
}

/// Replaces an app key's privileges.
pub(crate) async fn set_app_key_privileges(
    id: i64,
    input: &AppKeyPrivileges,
) -> Result<AppKey, ApiError> {
    read(send_json(Request::put(&format!("/api/v1/app-keys/{id}")), input).await?).await
}

/// Revokes an app key: refused from now on.
pub(crate) async fn revoke_app_key(id: i64) -> Result<AppKey, ApiError> {
    read(send(Request::delete(&format!("/api/v1/app-keys/{id}"))).await?).await
}

/// The image registry: where, whether it serves, its storage.
pub(crate) async fn registry() -> Result<RegistryStatus, ApiError> {
    read(send(Request::get("/api/v1/registry")).await?).await
}

/// The registry's login for `docker login`.
pub(crate) async fn registry_login() -> Result<RegistryLogin, ApiError> {
    read(send(Request::get("/api/v1/registry/login")).await?).await
}

/// One page of the registry's repositories.
pub(crate) async fn repositories(page: u32) -> Result<Page<Repository>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/registry/repositories?page={page}&per_page=50"
        )))
        .await?,
    )
    .await
}

/// One page of a repository's tags (the `/` of its name travels encoded).
pub(crate) async fn image_tags(repository: &str, page: u32) -> Result<Page<ImageTag>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/registry/repositories/{}/tags?page={page}&per_page=50",
            encode(repository)
        )))
        .await?,
    )
    .await
}

/// One tag in full.
pub(crate) async fn image_tag(repository: &str, tag: &str) -> Result<ImageTagDetail, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/registry/repositories/{}/tags/{}",
            encode(repository),
            encode(tag)
        )))
        .await?,
    )
    .await
}

/// Deletes one tag (others on the same image stay).
pub(crate) async fn delete_image_tag(
    repository: &str,
    tag: &str,
) -> Result<ImageTagDeleted, ApiError> {
    read(
        send(Request::delete(&format!(
            "/api/v1/registry/repositories/{}/tags/{}",
            encode(repository),
            encode(tag)
        )))
        .await?,
    )
    .await
}

/// One page of the registry's retention rules.
pub(crate) async fn retention_rules(page: u32) -> Result<Page<RetentionRule>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/registry/retention?page={page}&per_page=50"
        )))
        .await?,
    )
    .await
}

/// Sets a repository's retention rule.
pub(crate) async fn set_retention(
    repository: &str,
    input: &RetentionInput,
) -> Result<RetentionRule, ApiError> {
    read(
        send_json(
            Request::put(&format!(
                "/api/v1/registry/retention/{}",
                encode(repository)
            )),
            input,
        )
        .await?,
    )
    .await
}

/// Removes a repository's retention rule.
pub(crate) async fn delete_retention(repository: &str) -> Result<(), ApiError> {
    no_content(
        send(Request::delete(&format!(
            "/api/v1/registry/retention/{}",
            encode(repository)
        )))
        .await?,
    )
    .await
}

/// The tags a clean-up would delete now.
pub(crate) async fn cleanup_plan() -> Result<Page<DoomedTag>, ApiError> {
    read(send(Request::get("/api/v1/registry/clean-ups/plan?per_page=200")).await?).await
}

/// Runs a clean-up; answers when it is done.
pub(crate) async fn clean_up() -> Result<Cleanup, ApiError> {
    read(
        send_json(
            Request::post("/api/v1/registry/clean-ups"),
            &serde_json::json!({}),
        )
        .await?,
    )
    .await
}

/// One page of clean-ups, newest first.
pub(crate) async fn cleanups(page: u32) -> Result<Page<Cleanup>, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/registry/clean-ups?page={page}&per_page=10"
        )))
        .await?,
    )
    .await
}

/// Every repository of the registry whose name starts with `prefix`
/// (`base/`: the bases a FROM can name).
pub(crate) async fn repositories_under(prefix: &str) -> Result<Vec<Repository>, ApiError> {
    every(&format!(
        "/api/v1/registry/repositories?prefix={}",
        encode(prefix)
    ))
    .await
}

/// Every tag of a repository.
pub(crate) async fn all_image_tags(repository: &str) -> Result<Vec<ImageTag>, ApiError> {
    every(&format!(
        "/api/v1/registry/repositories/{}/tags",
        encode(repository)
    ))
    .await
}

/// The repository of `image` in DCP's registry (`host:port/` + it + a
/// tag), when it lives there.
fn registry_repository(image: &str, host: &str) -> Option<String> {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((before, tag)) if !tag.contains('/') => before,
        _ => name,
    };
    name.strip_prefix(host)?
        .strip_prefix('/')
        .map(str::to_owned)
}

/// The tags built of `image`'s repository in DCP's registry, newest
/// first — what a deploy can pick — or none when it lives elsewhere.
pub(crate) async fn built_tags(image: &str) -> Vec<ImageTag> {
    let Ok(status) = registry().await else {
        return Vec::new();
    };
    let Some(repository) = registry_repository(image, &status.host) else {
        return Vec::new();
    };
    let mut tags = all_image_tags(&repository).await.unwrap_or_default();
    tags.sort_by(|a, b| b.created.cmp(&a.created));
    tags
}

/// The images projects built into DCP's registry, at their newest
/// successful build: what a service can name.
pub(crate) async fn project_images() -> Vec<String> {
    let projects: Vec<ImageProject> = every("/api/v1/image-projects").await.unwrap_or_default();
    projects
        .into_iter()
        .filter_map(|p| p.last_build)
        .filter(|b| b.state == dcp_api_types::BuildState::Succeeded)
        .map(|b| b.image)
        .collect()
}

/// One page of image projects, by repository.
pub(crate) async fn image_projects(
    page: u32,
    per_page: u32,
) -> Result<Page<ImageProject>, ApiError> {
    page_of("/api/v1/image-projects", page, per_page).await
}

/// One image project.
pub(crate) async fn image_project(id: i64) -> Result<ImageProject, ApiError> {
    read(send(Request::get(&format!("/api/v1/image-projects/{id}"))).await?).await
}

/// Creates or replaces an image project.
pub(crate) async fn save_image_project(
    id: Option<i64>,
    input: &ImageProjectInput,
) -> Result<ImageProject, ApiError> {
    save("image-projects", id, input).await
}

/// Deletes an image project.
pub(crate) async fn delete_image_project(id: i64) -> Result<(), ApiError> {
    remove("image-projects", id).await
}

/// The Dockerfile instructions render to (a 422 names the instruction's
/// field, `instructions[2].command`).
pub(crate) async fn render_dockerfile(input: &RenderInput) -> Result<RenderedDockerfile, ApiError> {
    read(send_json(Request::post("/api/v1/image-projects/dockerfile"), input).await?).await
}

/// Queues a build of a project.
pub(crate) async fn start_build(
    project_id: i64,
    input: &ImageBuildInput,
) -> Result<ImageBuild, ApiError> {
    read(
        send_json(
            Request::post(&format!("/api/v1/image-projects/{project_id}/builds")),
            input,
        )
        .await?,
    )
    .await
}

/// One page of a project's builds, newest first.
pub(crate) async fn project_builds(
    project_id: i64,
    page: u32,
    per_page: u32,
) -> Result<Page<ImageBuild>, ApiError> {
    page_of(
        &format!("/api/v1/image-projects/{project_id}/builds"),
        page,
        per_page,
    )
    .await
}

/// One build.
pub(crate) async fn image_build(id: i64) -> Result<ImageBuild, ApiError> {
    read(send(Request::get(&format!("/api/v1/image-builds/{id}"))).await?).await
}

/// Cancels a build that has not ended (a 409 once it has).
pub(crate) async fn cancel_build(id: i64) -> Result<ImageBuild, ApiError> {
    read(send(Request::post(&format!("/api/v1/image-builds/{id}/cancel"))).await?).await
}

/// A piece of a build's log, from byte `offset`.
pub(crate) async fn build_log(id: i64, offset: u64) -> Result<BuildLog, ApiError> {
    read(
        send(Request::get(&format!(
            "/api/v1/image-builds/{id}/log?offset={offset}&limit=1048576"
        )))
        .await?,
    )
    .await
}

/// Where a build's events stream from (`build` and `log`).
pub(crate) fn build_events_url(id: i64) -> String {
    format!("/api/v1/image-builds/{id}/events")
}

/// Calls `handle` with the data of each `name` event `source` receives,
/// for as long as the page's event source lives (the page closes it when
/// it goes away).
pub(crate) fn on_event(source: &web_sys::EventSource, name: &str, handle: impl Fn(&str) + 'static) {
    let listener =
        Closure::<dyn Fn(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            if let Some(data) = ev.data().as_string() {
                handle(&data);
            }
        });
    let _ = source.add_event_listener_with_callback(name, listener.as_ref().unchecked_ref());
    listener.forget();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_read_as_people_say_them() {
        assert_eq!(human_field("addresses[0].port"), "addresses #1 › port");
        assert_eq!(human_field("container.cpu_limit"), "container › cpu limit");
        assert_eq!(human_field("name"), "name");
    }

    #[test]
    fn a_list_field_owns_its_items_errors_and_every_checked_field_is_named() {
        let error = ApiError(ErrorDetail {
            code: ErrorCode::ValidationFailed,
            message: "container.ports[2].host_port: port 8080 is published twice".into(),
            field: Some("container.ports[2].host_port".into()),
            request_id: None,
            also: vec![dcp_api_types::FieldError {
                field: "name".into(),
                message: "must be 1–64 characters of a-z, 0-9, - and _".into(),
            }],
        });
        assert_eq!(
            error.for_field("container.ports").as_deref(),
            Some("#3 › host port: port 8080 is published twice")
        );
        assert!(error.for_field("name").unwrap().starts_with("must be"));
        assert_eq!(error.for_field("container"), None);
        assert_eq!(error.field_errors().len(), 2);
    }
}
