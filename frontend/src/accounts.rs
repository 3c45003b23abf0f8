//! Cloud accounts: which cloud-provider plugin, its settings and its key.
//! The secret is write-only: typed in, never shown again.

use dcp_api_types::{Account, AccountInput, LookupKind, LookupQuery, PageQuery};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use serde_json::Value;

use crate::{
    api::{self, ApiError},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time},
    templates::Labelled,
};

/// The fields the account form shows next to their inputs.
const FORM_FIELDS: [&str; 5] = ["name", "provider", "config", "key_id", "secret"];

/// The account being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct Editor {
    id: Option<i64>,
    name: RwSignal<String>,
    provider: RwSignal<String>,
    config: RwSignal<String>,
    key_id: RwSignal<String>,
    secret: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl Editor {
    fn new(account: Option<&Account>, first_provider: Option<String>) -> Self {
        Self {
            id: account.map(|a| a.id),
            name: RwSignal::new(account.map(|a| a.name.clone()).unwrap_or_default()),
            provider: RwSignal::new(
                account
                    .map(|a| a.provider.clone())
                    .or(first_provider)
                    .unwrap_or_default(),
            ),
            config: RwSignal::new(account.map_or_else(
                || "{}".to_owned(),
                |a| serde_json::to_string_pretty(&a.config).unwrap_or_else(|_| "{}".to_owned()),
            )),
            key_id: RwSignal::new(account.map(|a| a.key_id.clone()).unwrap_or_default()),
            secret: RwSignal::new(String::new()),
            error: RwSignal::new(None),
        }
    }

    /// The form as the API takes it; the configuration must be a JSON object.
    fn input(&self) -> Result<AccountInput, ApiError> {
        let text = self.config.get_untracked();
        let config = if text.trim().is_empty() {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| ApiError::invalid("config", format!("not valid JSON: {e}")))?
        };
        if !config.is_object() {
            return Err(ApiError::invalid(
                "config",
                "must be a JSON object, e.g. {}",
            ));
        }
        let secret = self.secret.get_untracked();
        Ok(AccountInput {
            name: self.name.get_untracked().trim().to_owned(),
            provider: self.provider.get_untracked(),
            config,
            key_id: self.key_id.get_untracked().trim().to_owned(),
            // Blank on edit keeps the stored secret.
            secret: (!secret.is_empty()).then_some(secret),
        })
    }
}

/// Lists cloud accounts and edits them through the REST API.
#[component]
pub(crate) fn AccountsPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::accounts_page(page.get(), PageQuery::DEFAULT_PER_PAGE)
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let rows = move || current.get().map(|p| p.items).unwrap_or_default();
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    // The active cloud-provider plugins an account can use.
    let providers = LocalResource::new(|| async {
        api::plugins(1, 200).await.map(|page| {
            let mut names: Vec<String> = page
                .items
                .into_iter()
                .filter(|p| p.world == "cloud-provider" && p.status == "active")
                .map(|p| p.name)
                .collect();
            names.sort();
            names.dedup();
            names
        })
    });
    let provider_names =
        Signal::derive(move || providers.get().and_then(Result::ok).unwrap_or_default());

    let editor = RwSignal::new(None::<Editor>);
    let deleting = RwSignal::new(None::<Doomed>);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return ed.error.set(Some(e)),
        };
        spawn_local(async move {
            match api::save_account(ed.id, &input).await {
                Ok(_) => {
                    editor.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => ed.error.set(Some(e)),
            }
        });
    };
    let open_new = move |_| {
        let first = provider_names.get_untracked().into_iter().next();
        editor.set(Some(Editor::new(None, first)));
    };

    view! {
        <div class="page-head">
            <h1>"Cloud accounts"</h1>
            <p class="subtitle">
                "The keys DCP creates machines with, each used through a cloud-provider plugin. "
                "Secrets are stored encrypted and never shown again."
            </p>
        </div>
        <div class="toolbar">
            <button id="new-account" data-test="new-account" class="primary" on:click=open_new>"New account"</button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="accounts-table" class="table">
            <thead>
                <tr>
                    <th>"Name"</th><th>"Provider"</th><th>"Key id"</th><th>"Templates"</th>
                    <th>"Changed (UTC)"</th><th class="actions"></th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=rows
                    key=|a| (a.id, a.updated_at.clone(), a.templates)
                    children=move |a: Account| {
                        let (for_edit, for_delete) = (a.clone(), a.clone());
                        let id = a.id;
                        // The answer of "Check": how many regions, or the cloud's error.
                        let check = RwSignal::new(None::<Result<String, String>>);
                        let run_check = move |_| {
                            check.set(Some(Ok("checking…".to_owned())));
                            spawn_local(async move {
                                let result = api::lookup(id, LookupKind::Regions, &LookupQuery::default()).await;
                                check.set(Some(match result {
                                    Ok(regions) => Ok(format!("OK: {} regions", regions.len())),
                                    Err(e) => Err(e.message()),
                                }));
                            });
                        };
                        view! {
                            <tr data-name=a.name data-test="account-row">
                                <td class="name">
                                    {a.name.clone()}
                                    {move || check.get().map(|c| match c {
                                        Ok(text) => view! { <div class="muted check-result" data-test="account-check-result">{text}</div> }.into_any(),
                                        Err(text) => view! { <div class="error-text check-result" data-test="account-check-result">{text}</div> }.into_any(),
                                    })}
                                </td>
                                <td><span class="badge">{a.provider.clone()}</span></td>
                                <td><code>{a.key_id.clone()}</code></td>
                                <td>{a.templates.to_string()}</td>
                                <td>{short_time(&a.updated_at)}</td>
                                <td class="actions">
                                    <button class="ghost check" data-test="account-check" on:click=run_check>"Check"</button>
                                    <button class="ghost edit" data-test="account-edit" on:click=move |_| {
                                        editor.set(Some(Editor::new(Some(&for_edit), None)));
                                    }>"Edit"</button>
                                    <button class="ghost danger delete" data-test="account-delete" on:click=move |_| {
                                        deleting.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }));
                                    }>"Delete"</button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.total == 0)>
            <p class="empty">"No cloud accounts yet. Add one to create machine templates."</p>
        </Show>
        <Pager page=current current=page noun=("account", "accounts")/>

        {move || editor.get().map(|ed| {
            let editing = ed.id.is_some();
            let title = Signal::derive(move || {
                if editing { "Edit account".to_owned() } else { "New account".to_owned() }
            });
            let shown: Vec<String> = FORM_FIELDS.map(str::to_owned).into();
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="account-form" on:submit=save>
                        <ErrorBanner error=ed.error all=true shown/>
                        <Field field="name" id_prefix="account" label="Name" value=ed.name error=ed.error
                            hint="1–64 characters, e.g. aliyun-prod"/>
                        <Labelled field="provider" id="account-provider" label="Provider" error=ed.error
                            hint="An active plugin of world cloud-provider (see Plugins).">
                            <select id="account-provider" data-test="account-provider"
                                on:change=move |ev| ed.provider.set(event_target_value(&ev))>
                                {move || {
                                    let mut names = provider_names.get();
                                    let current = ed.provider.get();
                                    if !current.is_empty() && !names.contains(&current) {
                                        names.insert(0, current);
                                    }
                                    let empty = names.is_empty();
                                    view! {
                                        {empty.then(|| view! { <option value="">"No active cloud-provider plugin"</option> })}
                                        {names.into_iter().map(|n| {
                                            let picked = n.clone();
                                            view! { <option value=n selected=move || ed.provider.get() == picked>{n.clone()}</option> }
                                        }).collect_view()}
                                    }
                                }}
                            </select>
                        </Labelled>
                        <Field field="key_id" id_prefix="account" label="Key id" value=ed.key_id error=ed.error
                            hint="The public half of the key, e.g. an AccessKeyId."/>
                        <Labelled field="secret" id="account-secret" label="Secret" error=ed.error
                            hint=if editing { "Leave blank to keep the stored secret." } else { "The secret half, e.g. an AccessKeySecret. Never shown again." }>
                            <input id="account-secret" data-test="account-secret" name="secret" type="password"
                                autocomplete="new-password" bind:value=ed.secret/>
                        </Labelled>
                        <Labelled field="config" id="account-config" label="Configuration (JSON)" error=ed.error
                            hint="Settings the plugin describes (endpoint, default region…); never secrets.">
                            <textarea id="account-config" data-test="account-config" name="config" class="code"
                                rows="6" spellcheck="false" bind:value=ed.config></textarea>
                        </Labelled>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="account-save" data-test="account-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <ConfirmDelete noun="account" target=deleting delete=api::delete_account
            note="Templates that use it must be deleted first."
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>
    }
}
