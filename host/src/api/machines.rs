//! `/api/v1/accounts`, `/machine-templates`, `/quotas`, `/machines` and
//! `/fleet-history`: where machines come from and what they cost.

use axum::{
    Extension,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use dcp_api_types::{
    Account, AccountInput, AdoptMachine, Choice, CreateMachines, ErrorBody, FleetPoint, LookupKind,
    LookupQuery, Machine, MachineDetail, MachineFilter, MachineTemplate, Page, PageQuery,
    QuotaInput, QuotaUsage, TemplateInput,
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, page_of, window},
};
use crate::auth::Principal;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(get_account, update_account, delete_account))
        .routes(routes!(lookup))
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(list_quotas))
        .routes(routes!(set_quota))
        .routes(routes!(list_machines, create_machines))
        .routes(routes!(adopt_machine))
        .routes(routes!(get_machine, delete_machine))
        .routes(routes!(machine_key))
        .routes(routes!(fleet_history))
}

/// List cloud accounts, by name. Secrets are never returned.
#[utoipa::path(
    get, path = "/accounts", tag = "machines",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of accounts", body = Page<Account>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_accounts(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Account>>> {
    let (items, total) = state.machines.accounts(window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Create a cloud account. Its plugin checks the settings and key with a
/// real call first; the secret is sealed at rest and never returned.
#[utoipa::path(
    post, path = "/accounts", tag = "machines",
    request_body = AccountInput,
    responses(
        (status = 201, description = "Created", body = Account),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud refused the key or settings", body = ErrorBody),
    )
)]
async fn create_account(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<AccountInput>,
) -> Result<(StatusCode, Json<Account>)> {
    let account = state.machines.create_account(input).await?;
    tracing::info!(user = %me.user.username, account = %account.name, provider = %account.provider, "cloud account created");
    Ok((StatusCode::CREATED, Json(account)))
}

/// Get one account.
#[utoipa::path(
    get, path = "/accounts/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account", body = Account),
        (status = 404, description = "No such account", body = ErrorBody),
    )
)]
async fn get_account(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Account>> {
    Ok(Json(state.machines.account(id).await?))
}

/// Replace an account's fields; without `secret` the stored one is kept.
#[utoipa::path(
    put, path = "/accounts/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Account id")),
    request_body = AccountInput,
    responses(
        (status = 200, description = "The updated account", body = Account),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud refused the key or settings", body = ErrorBody),
    )
)]
async fn update_account(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<AccountInput>,
) -> Result<Json<Account>> {
    let account = state.machines.update_account(id, input).await?;
    tracing::info!(user = %me.user.username, account = %account.name, "cloud account changed");
    Ok(Json(account))
}

/// Delete an account; refused while a template or a balancer node (one of
/// its cloud load balancers) uses it.
#[utoipa::path(
    delete, path = "/accounts/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "Templates or balancer nodes (its cloud load balancers) use it; the message names them", body = ErrorBody),
    )
)]
async fn delete_account(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.machines.delete_account(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct LookupPath {
    id: i64,
    kind: LookupKind,
}

/// Ask an account's cloud for the choices of a template field: regions,
/// zones, VPCs, subnets, images, instance types, security groups, disk
/// categories or charge types.
#[utoipa::path(
    get, path = "/accounts/{id}/lookups/{kind}", tag = "machines",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("kind" = inline(LookupKind), Path, description = "What to look up"),
        LookupQuery,
    ),
    responses(
        (status = 200, description = "The choices", body = Vec<Choice>),
        (status = 422, description = "A needed query parameter is missing", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
    )
)]
async fn lookup(
    State(state): State<AppState>,
    Path(LookupPath { id, kind }): Path<LookupPath>,
    Query(query): Query<LookupQuery>,
) -> Result<Json<Vec<Choice>>> {
    Ok(Json(state.machines.lookup(id, kind, &query).await?))
}

/// List machine templates with their quota usage, by name.
#[utoipa::path(
    get, path = "/machine-templates", tag = "machines",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of templates", body = Page<MachineTemplate>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_templates(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<MachineTemplate>>> {
    let (items, total) = state.machines.templates(window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Create a machine template. OpenDCP's rules apply (data disks 0–4 and
/// sizes per category, bandwidth per charge type), and the account's cloud
/// must know the region, zone, image, type, network and disks named.
#[utoipa::path(
    post, path = "/machine-templates", tag = "machines",
    request_body = TemplateInput,
    responses(
        (status = 201, description = "Created", body = MachineTemplate),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
    )
)]
async fn create_template(
    State(state): State<AppState>,
    Json(input): Json<TemplateInput>,
) -> Result<(StatusCode, Json<MachineTemplate>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.machines.create_template(input).await?),
    ))
}

/// Get one template.
#[utoipa::path(
    get, path = "/machine-templates/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Template id")),
    responses(
        (status = 200, description = "The template", body = MachineTemplate),
        (status = 404, description = "No such template", body = ErrorBody),
    )
)]
async fn get_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<MachineTemplate>> {
    Ok(Json(state.machines.template(id).await?))
}

/// Replace a template's fields; machines already made keep what they are.
#[utoipa::path(
    put, path = "/machine-templates/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Template id")),
    request_body = TemplateInput,
    responses(
        (status = 200, description = "The updated template", body = MachineTemplate),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
    )
)]
async fn update_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<TemplateInput>,
) -> Result<Json<MachineTemplate>> {
    Ok(Json(state.machines.update_template(id, input).await?))
}

/// Delete a template; refused while machines that are not released use it.
#[utoipa::path(
    delete, path = "/machine-templates/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Template id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "Machines use it", body = ErrorBody),
    )
)]
async fn delete_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.machines.delete_template(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Instance-hour quota and usage per template, by template name. Usage is
/// charged when a machine is released, by its real lifetime rounded up to
/// whole hours.
#[utoipa::path(
    get, path = "/quotas", tag = "machines",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of templates' quotas", body = Page<QuotaUsage>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_quotas(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<QuotaUsage>>> {
    let (items, total) = state.machines.quotas(window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Set a template's granted instance-hours.
#[utoipa::path(
    put, path = "/quotas/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Template id")),
    request_body = QuotaInput,
    responses(
        (status = 200, description = "The template's quota", body = QuotaUsage),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 422, description = "Negative hours", body = ErrorBody),
    )
)]
async fn set_quota(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<QuotaInput>,
) -> Result<Json<QuotaUsage>> {
    let quota = state.machines.set_quota(id, input.quota_hours).await?;
    tracing::info!(user = %me.user.username, template = %quota.template_name, hours = quota.quota_hours, "quota set");
    Ok(Json(quota))
}

/// List machines, newest first, each with the pool it is a node of;
/// released ones only when asked for by state.
#[utoipa::path(
    get, path = "/machines", tag = "machines",
    params(PageQuery, MachineFilter),
    responses(
        (status = 200, description = "One page of machines", body = Page<Machine>),
        (status = 422, description = "Paging out of range, or `q` too long or holding control characters", body = ErrorBody),
    )
)]
async fn list_machines(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<MachineFilter>,
) -> Result<Json<Page<Machine>>> {
    let (items, total) = state.machines.list(filter, window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Create machines from a template. Answers at once with the machines
/// `creating`; each then moves on its own (see its timeline). Refused when
/// the template's quota is used up. With `idempotency_key`, a retry answers
/// the same machines.
#[utoipa::path(
    post, path = "/machines", tag = "machines",
    request_body = CreateMachines,
    responses(
        (status = 202, description = "The machines, creating", body = Vec<Machine>),
        (status = 409, description = "No quota left, or the key was used for another request", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_machines(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<CreateMachines>,
) -> Result<(StatusCode, Json<Vec<Machine>>)> {
    let machines = state.machines.create(input).await?;
    tracing::info!(user = %me.user.username, count = machines.len(), "machines requested");
    Ok((StatusCode::ACCEPTED, Json(machines)))
}

/// Adopt an existing server: DCP connects to prove the address and
/// credentials; a password is used once to install a key DCP generates and
/// is never stored.
#[utoipa::path(
    post, path = "/machines/adopt", tag = "machines",
    request_body = AdoptMachine,
    responses(
        (status = 201, description = "The machine, ready", body = Machine),
        (status = 409, description = "A live machine has this address and port (however the address is written); the error names `address` and that machine's id", body = ErrorBody),
        (status = 422, description = "A field breaks a rule, or connecting failed", body = ErrorBody),
    )
)]
async fn adopt_machine(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<AdoptMachine>,
) -> Result<(StatusCode, Json<Machine>)> {
    let machine = state.machines.adopt(input).await?;
    tracing::info!(user = %me.user.username, machine = machine.id, address = ?machine.address, "server adopted");
    Ok((StatusCode::CREATED, Json(machine)))
}

/// Get a machine with its state timeline and log.
#[utoipa::path(
    get, path = "/machines/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    responses(
        (status = 200, description = "The machine", body = MachineDetail),
        (status = 404, description = "No such machine", body = ErrorBody),
    )
)]
async fn get_machine(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<MachineDetail>> {
    Ok(Json(state.machines.detail(id).await?))
}

/// Release a machine: its instance is force-stopped and deleted, and its
/// template charged. Refused while it is being created.
#[utoipa::path(
    delete, path = "/machines/{id}", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    responses(
        (status = 202, description = "The machine, deleting", body = Machine),
        (status = 404, description = "No such machine", body = ErrorBody),
        (status = 409, description = "Being created, in use, or released already", body = ErrorBody),
    )
)]
async fn delete_machine(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<(StatusCode, Json<Machine>)> {
    let machine = state.machines.delete(id).await?;
    tracing::info!(user = %me.user.username, machine = machine.id, "machine release requested");
    Ok((StatusCode::ACCEPTED, Json(machine)))
}

/// Download a machine's private key (OpenSSH format). Every download is
/// recorded in the audit log with who asked.
#[utoipa::path(
    get, path = "/machines/{id}/key.pem", tag = "machines",
    params(("id" = i64, Path, description = "Machine id")),
    responses(
        (status = 200, description = "The private key", content_type = "application/x-pem-file", body = String),
        (status = 404, description = "No such machine or no key", body = ErrorBody),
    )
)]
async fn machine_key(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<Response> {
    let (machine, key) = state.machines.private_key(id).await?;
    let response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (
                header::CONTENT_DISPOSITION,
                attachment(&format!("{}.pem", machine.name)),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        key,
    )
        .into_response();
    // Recorded only once the answer exists: a download that failed is not one.
    tracing::info!(
        target: "audit",
        user = %me.user.username,
        machine = machine.id,
        name = %machine.name.escape_debug(),
        "machine private key downloaded"
    );
    Ok(response)
}

/// A `Content-Disposition: attachment` naming `file` (RFC 6266): an ASCII
/// `filename` for old clients, and the exact name as `filename*=UTF-8''…`.
/// Built from the name whatever it holds (names made before names were
/// checked may hold control characters), so it is always a valid header.
fn attachment(file: &str) -> HeaderValue {
    use std::fmt::Write as _;
    let fallback: String = file
        .chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' if c != '/' => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::with_capacity(file.len() * 3);
    for byte in file.bytes() {
        // RFC 8187 attr-char; everything else percent-encoded.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// How far back the fleet chart goes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
struct FleetQuery {
    /// Hours to cover, 1–720 (default 48).
    #[serde(default)]
    #[param(minimum = 1, maximum = 720)]
    hours: Option<u32>,
}

/// Live machines per provider, hour by hour: one point per hour and
/// provider, oldest hour first, providers by name. The series is at most
/// 720 hours times the providers, made whole in memory (hours without a
/// recorded size carry the last one), so it is paged there.
#[utoipa::path(
    get, path = "/fleet-history", tag = "machines",
    params(FleetQuery, PageQuery),
    responses(
        (status = 200, description = "One page of points", body = Page<FleetPoint>),
        (status = 422, description = "Hours or paging out of range", body = ErrorBody),
    )
)]
async fn fleet_history(
    State(state): State<AppState>,
    Query(query): Query<FleetQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<FleetPoint>>> {
    let hours = query.hours.unwrap_or(48);
    if !(1..=720).contains(&hours) {
        return Err(super::Error::validation(
            "hours",
            "must be between 1 and 720",
        ));
    }
    let points = state.machines.fleet_history(hours).await?;
    Ok(Json(page_of(points, paging)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_survive_any_characters() {
        assert_eq!(
            attachment("web 01.pem"),
            "attachment; filename=\"web 01.pem\"; filename*=UTF-8''web%2001.pem"
        );
        assert_eq!(
            attachment("a\"\\/\n\u{202E}東.pem"),
            "attachment; filename=\"a______.pem\"; \
             filename*=UTF-8''a%22%5C%2F%0A%E2%80%AE%E6%9D%B1.pem"
        );
    }
}
