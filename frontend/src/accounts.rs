//! Cloud accounts: which cloud-provider plugin, its settings and its key.
//! The secret is write-only: typed in, never shown again. An account whose
//! provider manages load balancers links to them (`cloud_balancers`).

use dcp_api_types::{Account, AccountInput, LookupKind, LookupQuery, PageQuery};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::components::A;
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
    // The active cloud-provider plugins an account can use: name → the
    // active version's id (whose description gives the config's schema).
    let providers = LocalResource::new(|| async {
        api::plugins(1, 200).await.map(|page| {
            page.items
                .into_iter()
                .filter(|p| p.world == "cloud-provider" && p.status == "active")
                .map(|p| (p.name, p.id))
                .collect::<std::collections::BTreeMap<String, i64>>()
        })
    });
    let provider_ids =
        Signal::derive(move || providers.get().and_then(Result::ok).unwrap_or_default());
    let provider_names = Signal::derive(move || provider_ids.get().into_keys().collect::<Vec<_>>());

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
                                    {a.manages_load_balancers.then(|| view! {
                                        <A href=format!("/accounts/{id}/load-balancers") attr:class="load-balancers"
                                            attr:data-test="account-load-balancers">"Load balancers"</A>
                                    })}
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
                        <ConfigFields config=ed.config error=ed.error
                            plugin=Signal::derive(move || provider_ids.get().get(&ed.provider.get()).copied())/>
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

/// One setting a plugin's configuration schema describes, as a form field.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    key: String,
    label: String,
    hint: String,
    kind: SettingKind,
    default: Option<Value>,
    required: bool,
}

/// How a setting is typed in.
#[derive(Debug, Clone, PartialEq)]
enum SettingKind {
    Text,
    Integer,
    Number,
    Flag,
    Choice(Vec<String>),
}

/// The settings of a flat object schema, in its order; `None` when the
/// schema is not one (nested objects, arrays): then JSON is typed instead.
fn settings_of(schema: &Value) -> Option<Vec<Setting>> {
    let properties = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    properties
        .iter()
        .map(|(key, p)| {
            let kind = match (
                p.get("enum").and_then(Value::as_array),
                p.get("type").and_then(Value::as_str),
            ) {
                (Some(choices), _) => SettingKind::Choice(
                    choices
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                ),
                (None, Some("string")) => SettingKind::Text,
                (None, Some("integer")) => SettingKind::Integer,
                (None, Some("number")) => SettingKind::Number,
                (None, Some("boolean")) => SettingKind::Flag,
                _ => return None,
            };
            let describe = |k: &str| {
                p.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let title = describe("title");
            Some(Setting {
                key: key.clone(),
                label: if title.is_empty() {
                    key.replace('_', " ")
                } else {
                    title
                },
                hint: describe("description"),
                kind,
                default: p.get("default").cloned(),
                required: required.contains(&key.as_str()),
            })
        })
        .collect()
}

/// `config` (JSON text) with `key` set from what was typed: a number or
/// flag as such, an empty entry removed (the plugin's default applies).
fn with_setting(config: &str, setting: &Setting, typed: &str) -> String {
    let mut object = serde_json::from_str::<Value>(config)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let typed = typed.trim();
    let value = match setting.kind {
        _ if typed.is_empty() => None,
        SettingKind::Integer => Some(
            typed
                .parse::<i64>()
                .map_or_else(|_| Value::String(typed.to_owned()), Value::from),
        ),
        SettingKind::Number => Some(
            typed
                .parse::<f64>()
                .map_or_else(|_| Value::String(typed.to_owned()), Value::from),
        ),
        SettingKind::Flag => Some(Value::Bool(typed == "true")),
        SettingKind::Text | SettingKind::Choice(_) => Some(Value::String(typed.to_owned())),
    };
    match value {
        Some(v) => object.insert(setting.key.clone(), v),
        None => object.remove(&setting.key),
    };
    serde_json::to_string_pretty(&Value::Object(object)).unwrap_or_else(|_| "{}".to_owned())
}

/// The value of `key` in `config` as typed text.
fn setting_text(config: &str, key: &str) -> String {
    match serde_json::from_str::<Value>(config)
        .ok()
        .and_then(|v| v.get(key).cloned())
    {
        Some(Value::String(s)) => s,
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// The account's configuration as the fields its plugin's schema
/// describes, each with its description and default; JSON to type when the
/// schema is not a flat object, or on asking.
#[component]
fn ConfigFields(
    /// The configuration, as JSON text.
    config: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    /// The chosen provider's active version.
    plugin: Signal<Option<i64>>,
) -> impl IntoView {
    let described = LocalResource::new(move || {
        let id = plugin.get();
        async move {
            match id {
                Some(id) => api::plugin_description(id).await.map(Some),
                None => Ok(None),
            }
        }
    });
    let as_json = RwSignal::new(false);
    let settings = move || {
        described
            .get()
            .and_then(Result::ok)
            .flatten()
            .and_then(|d| settings_of(&d.config_schema))
    };
    view! {
        <Labelled field="config" id="account-config" label="Configuration" error
            hint="Settings the plugin describes (endpoint, default region…); never secrets. Empty: the plugin's default.">
            {move || match settings().filter(|_| !as_json.get()) {
                Some(settings) => view! {
                    <div id="account-config" class="settings" data-test="account-settings">
                        {settings.into_iter().map(|setting| {
                            let id = format!("account-config-{}", setting.key);
                            let key = setting.key.clone();
                            let placeholder = setting.default.as_ref().map(|d| match d {
                                Value::String(s) => s.clone(),
                                other => other.to_string(),
                            }).unwrap_or_default();
                            let label = format!("{}{}", setting.label, if setting.required { " *" } else { "" });
                            let hint = setting.hint.clone();
                            let current = move || setting_text(&config.get(), &key);
                            let typed = setting.clone();
                            let set = move |text: String| config.update(|c| *c = with_setting(c, &typed, &text));
                            let input = match setting.kind.clone() {
                                SettingKind::Flag => view! {
                                    <input id=id.clone() type="checkbox" data-key=setting.key
                                        prop:checked=move || current() == "true"
                                        on:change=move |ev| set(event_target_checked(&ev).to_string())/>
                                }.into_any(),
                                SettingKind::Choice(choices) => view! {
                                    <select id=id.clone() data-key=setting.key on:change=move |ev| set(event_target_value(&ev))>
                                        <option value="">{format!("default ({placeholder})")}</option>
                                        {choices.into_iter().map(|c| {
                                            let (value, shown, picked) = (c.clone(), c.clone(), c);
                                            let current = current.clone();
                                            view! { <option value=value selected=move || current() == picked>{shown}</option> }
                                        }).collect_view()}
                                    </select>
                                }.into_any(),
                                kind => view! {
                                    <input id=id.clone() data-key=setting.key
                                        type=if matches!(kind, SettingKind::Text) { "text" } else { "number" }
                                        placeholder=placeholder autocomplete="off"
                                        prop:value=current on:change=move |ev| set(event_target_value(&ev))/>
                                }.into_any(),
                            };
                            view! {
                                <div class="setting">
                                    <label for=id>{label}</label>
                                    {input}
                                    {(!hint.is_empty()).then(|| view! { <p class="hint">{hint}</p> })}
                                </div>
                            }
                        }).collect_view()}
                    </div>
                }.into_any(),
                None => view! {
                    <textarea id="account-config" data-test="account-config" name="config" class="code"
                        rows="6" spellcheck="false" bind:value=config></textarea>
                }.into_any(),
            }}
            <Show when=move || settings().is_some()>
                <label class="check"><input id="account-config-json" type="checkbox" bind:checked=as_json/>" Edit as JSON"</label>
            </Show>
        </Labelled>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_schema_reads_as_settings_and_typed_values_keep_their_types() {
        let schema: Value = serde_json::from_str(
            r#"{"type":"object","required":["region"],"properties":{
                "region":{"type":"string","title":"Region","default":"cn-hangzhou"},
                "timeout_ms":{"type":"integer","description":"per attempt"},
                "mode":{"enum":["fast","safe"]}}}"#,
        )
        .unwrap();
        let settings = settings_of(&schema).unwrap();
        assert_eq!(settings.len(), 3);
        let timeout = settings.iter().find(|s| s.key == "timeout_ms").unwrap();
        assert_eq!(
            (timeout.label.as_str(), timeout.hint.as_str()),
            ("timeout ms", "per attempt")
        );
        assert!(
            settings
                .iter()
                .any(|s| s.key == "region" && s.required && s.label == "Region")
        );
        let config = with_setting("{}", timeout, "2500");
        assert_eq!(
            serde_json::from_str::<Value>(&config).unwrap()["timeout_ms"],
            2500
        );
        assert_eq!(setting_text(&config, "timeout_ms"), "2500");
        // Emptied: the key goes, the plugin's default applies.
        assert_eq!(with_setting(&config, timeout, " ").trim(), "{}");
        let nested: Value =
            serde_json::from_str(r#"{"properties":{"a":{"type":"object"}}}"#).unwrap();
        assert!(settings_of(&nested).is_none());
    }
}
