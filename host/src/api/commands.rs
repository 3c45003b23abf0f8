//! `/api/v1/commands`, `/api/v1/command-groups` and `/api/v1/modules`: what
//! executions run.

use axum::{extract::State, http::StatusCode};
use dcp_api_types::{
    Command, CommandGroup, CommandGroupInput, CommandInput, CommandRef, ErrorBody, ModuleEntry,
    NameFilter, Page, PageQuery,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, page_of, window},
    rfc3339,
};
use crate::{
    remote,
    store::{CommandRecord, GroupRecord},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_commands, create_command))
        .routes(routes!(get_command, update_command, delete_command))
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_modules))
}

fn command_to_api(c: CommandRecord) -> Command {
    Command {
        params: remote::command_params(&c),
        id: c.id,
        name: c.name,
        description: c.description,
        mode: c.mode,
        script: c.script,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

fn group_to_api(g: GroupRecord) -> CommandGroup {
    CommandGroup {
        // Stored groups were checked on save; a command edited since may
        // clash, and then the run says so, so the list still shows the group.
        params: remote::group_params(&g.steps).unwrap_or_default(),
        commands: g
            .steps
            .into_iter()
            .map(|c| CommandRef {
                id: c.id,
                name: c.name,
                mode: c.mode,
            })
            .collect(),
        id: g.id,
        name: g.name,
        description: g.description,
        created_at: rfc3339(g.created_at),
        updated_at: rfc3339(g.updated_at),
    }
}

fn name_filter(filter: NameFilter) -> Result<Option<String>> {
    if let Some(name) = &filter.name {
        validate::filter("name", name)?;
    }
    Ok(filter
        .name
        .filter(|n| !n.is_empty())
        .map(|n| n.to_lowercase()))
}

/// List commands, ordered by name.
#[utoipa::path(
    get, path = "/commands", tag = "commands",
    params(PageQuery, NameFilter),
    responses(
        (status = 200, description = "One page of commands", body = Page<Command>),
        (status = 422, description = "Paging out of range, or a control character in the name filter", body = ErrorBody),
    )
)]
async fn list_commands(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<NameFilter>,
) -> Result<Json<Page<Command>>> {
    let (items, total) = state
        .store
        .list_commands(name_filter(filter)?.as_deref(), window(paging)?)
        .await?;
    Ok(Json(page(
        items.into_iter().map(command_to_api).collect(),
        total,
        paging,
    )))
}

/// Create a command. Its script's `{{placeholders}}` must all be parameters.
#[utoipa::path(
    post, path = "/commands", tag = "commands",
    request_body = CommandInput,
    responses(
        (status = 201, description = "Created", body = Command),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_command(
    State(state): State<AppState>,
    Json(input): Json<CommandInput>,
) -> Result<(StatusCode, Json<Command>)> {
    let change = state.remote.command_change(input).await?;
    let command = state.store.create_command(&change).await?;
    Ok((StatusCode::CREATED, Json(command_to_api(command))))
}

/// Get one command.
#[utoipa::path(
    get, path = "/commands/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command id")),
    responses(
        (status = 200, description = "The command", body = Command),
        (status = 404, description = "No such command", body = ErrorBody),
    )
)]
async fn get_command(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Command>> {
    Ok(Json(command_to_api(state.store.command(id).await?)))
}

/// Replace a command's fields.
#[utoipa::path(
    put, path = "/commands/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command id")),
    request_body = CommandInput,
    responses(
        (status = 200, description = "The updated command", body = Command),
        (status = 404, description = "No such command", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_command(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<CommandInput>,
) -> Result<Json<Command>> {
    let change = state.remote.command_change(input).await?;
    Ok(Json(command_to_api(
        state.store.update_command(id, &change).await?,
    )))
}

/// Delete a command; refused while a command group uses it.
#[utoipa::path(
    delete, path = "/commands/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such command", body = ErrorBody),
        (status = 409, description = "Still in use; the message names the groups", body = ErrorBody),
    )
)]
async fn delete_command(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_command(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List command groups, ordered by name.
#[utoipa::path(
    get, path = "/command-groups", tag = "commands",
    params(PageQuery, NameFilter),
    responses(
        (status = 200, description = "One page of command groups", body = Page<CommandGroup>),
        (status = 422, description = "Paging out of range, or a control character in the name filter", body = ErrorBody),
    )
)]
async fn list_groups(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<NameFilter>,
) -> Result<Json<Page<CommandGroup>>> {
    let (items, total) = state
        .store
        .list_groups(name_filter(filter)?.as_deref(), window(paging)?)
        .await?;
    Ok(Json(page(
        items.into_iter().map(group_to_api).collect(),
        total,
        paging,
    )))
}

/// Create a command group: commands run in order.
#[utoipa::path(
    post, path = "/command-groups", tag = "commands",
    request_body = CommandGroupInput,
    responses(
        (status = 201, description = "Created", body = CommandGroup),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_group(
    State(state): State<AppState>,
    Json(input): Json<CommandGroupInput>,
) -> Result<(StatusCode, Json<CommandGroup>)> {
    let change = state.remote.group_change(input).await?;
    let group = state.store.create_group(&change).await?;
    Ok((StatusCode::CREATED, Json(group_to_api(group))))
}

/// Get one command group.
#[utoipa::path(
    get, path = "/command-groups/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command group id")),
    responses(
        (status = 200, description = "The command group", body = CommandGroup),
        (status = 404, description = "No such command group", body = ErrorBody),
    )
)]
async fn get_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<CommandGroup>> {
    Ok(Json(group_to_api(state.store.group(id).await?)))
}

/// Replace a command group's fields and commands.
#[utoipa::path(
    put, path = "/command-groups/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command group id")),
    request_body = CommandGroupInput,
    responses(
        (status = 200, description = "The updated command group", body = CommandGroup),
        (status = 404, description = "No such command group", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<CommandGroupInput>,
) -> Result<Json<CommandGroup>> {
    let change = state.remote.group_change(input).await?;
    Ok(Json(group_to_api(
        state.store.update_group(id, &change).await?,
    )))
}

/// Delete a command group; refused while a task template uses it.
#[utoipa::path(
    delete, path = "/command-groups/{id}", tag = "commands",
    params(("id" = i64, Path, description = "Command group id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such command group", body = ErrorBody),
        (status = 409, description = "Still in use", body = ErrorBody),
    )
)]
async fn delete_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_group(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The modules of the active remote-command plugins: what an `expert`
/// command can name, by plugin name, then in the plugin's order. The list is what the active
/// plugins declare, held in memory and small, so it is paged there.
#[utoipa::path(
    get, path = "/modules", tag = "commands",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of modules", body = Page<ModuleEntry>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_modules(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<ModuleEntry>>> {
    Ok(Json(page_of(state.remote.modules().await, paging)?))
}
