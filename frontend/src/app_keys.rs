//! App keys: how other systems (a deploy pipeline, a CMDB) register and
//! unregister backends through the discovery API. The secret is shown
//! once; privileges can be changed and a key revoked.

use std::collections::BTreeSet;

use dcp_api_types::{AppKey, AppKeyCreated, AppKeyInput, AppKeyPrivileges};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::components::A;
use wasm_bindgen::JsCast as _;

use crate::{
    api::{self, ApiError},
    components::{Confirm, ErrorBanner, Field, Modal, load_error, short_time, show_form_error},
};

/// The privileges a key can hold, with what each allows.
const PRIVILEGES: [(&str, &str); 3] = [
    (
        "alterations.register",
        "Register backends in a binding's upstream",
    ),
    (
        "alterations.unregister",
        "Unregister backends from a binding's upstream",
    ),
    ("alterations.read", "Read an alteration's state"),
];

/// `alterations.register` → `alterations-register`, for element ids.
fn id_part(privilege: &str) -> String {
    privilege.replace('.', "-")
}

/// Privilege checkboxes bound to `chosen`; `prefix` starts their ids.
#[component]
fn PrivilegeChecks(
    chosen: RwSignal<BTreeSet<String>>,
    prefix: &'static str,
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let message = move || error.get().and_then(|e| e.for_field("privileges"));
    view! {
        <fieldset class="privileges" class:invalid=move || message().is_some()>
            <legend>"May call"</legend>
            {PRIVILEGES.into_iter().map(|(privilege, what)| {
                let id = format!("{prefix}-{}", id_part(privilege));
                let for_id = id.clone();
                view! {
                    <label class="check" for=for_id>
                        <input id=id type="checkbox" class="privilege" value=privilege
                            prop:checked=move || chosen.with(|c| c.contains(privilege))
                            on:change=move |_| chosen.update(|c| if !c.remove(privilege) { c.insert(privilege.to_owned()); })/>
                        " " <code>{privilege}</code> " — " {what}
                    </label>
                }
            }).collect_view()}
            {move || message().map(|m| view! { <p class="field-error" data-field="privileges">{m}</p> })}
        </fieldset>
    }
}

/// Copies the secret's text from its input: selected, then the browser's
/// copy command, which works on plain-HTTP pages too (the Clipboard API
/// needs a secure context). Answers whether the browser copied it.
fn copy_secret() -> bool {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return false;
    };
    let Some(input) = document
        .get_element_by_id("app-key-secret")
        .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
    else {
        return false;
    };
    input.select();
    document
        .dyn_into::<web_sys::HtmlDocument>()
        .ok()
        .and_then(|d| d.exec_command("copy").ok())
        .unwrap_or(false)
}

/// A key whose privileges are being changed.
#[derive(Debug, Clone, Copy)]
struct PrivilegeEditor {
    id: i64,
    chosen: RwSignal<BTreeSet<String>>,
    error: RwSignal<Option<ApiError>>,
}

/// App keys: made, listed, given privileges, revoked.
#[component]
pub(crate) fn AppKeysPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let keys = LocalResource::new(move || {
        reload.track();
        api::app_keys()
    });
    let error = load_error(keys);
    let bump = move || reload.update(|n| *n += 1);
    let name = RwSignal::new(String::new());
    let chosen = RwSignal::new(BTreeSet::<String>::new());
    let create_error = RwSignal::new(None::<ApiError>);
    let created = RwSignal::new(None::<AppKeyCreated>);
    // Whether the copy button worked, once pressed.
    let copied = RwSignal::new(None::<bool>);
    let editing = RwSignal::new(None::<PrivilegeEditor>);
    let revoking = RwSignal::new(None::<AppKey>);

    let create = move |ev: SubmitEvent| {
        ev.prevent_default();
        let input = AppKeyInput {
            name: name.get_untracked().trim().to_owned(),
            privileges: chosen.get_untracked().into_iter().collect(),
        };
        spawn_local(async move {
            match api::create_app_key(&input).await {
                Ok(key) => {
                    create_error.set(None);
                    name.set(String::new());
                    chosen.set(BTreeSet::new());
                    copied.set(None);
                    created.set(Some(key));
                    bump();
                }
                Err(e) => show_form_error(create_error, e),
            }
        });
    };
    let save_privileges = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editing.get_untracked() else {
            return;
        };
        let input = AppKeyPrivileges {
            privileges: ed.chosen.get_untracked().into_iter().collect(),
        };
        spawn_local(async move {
            match api::set_app_key_privileges(ed.id, &input).await {
                Ok(_) => {
                    editing.set(None);
                    bump();
                }
                Err(e) => ed.error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="page-head">
            <h1>"App keys"</h1>
            <p class="subtitle">
                "Other systems register and unregister backends in a binding with an app key, sent as "
                <code>"X-App-Key"</code>" to "<code>"/api/v1/alterations/…"</code>". Their changes are in the "
                <A href="/discovery-log">"operation log"</A>" under " <code>"app-key:<name>"</code>"."
            </p>
        </div>
        <form id="app-key-form" class="panel" novalidate on:submit=create>
            <ErrorBanner error=create_error all=true shown=vec!["name".into(), "privileges".into()]/>
            <Field field="name" id_prefix="app-key" label="New key's name" value=name error=create_error
                hint="the calling system's, e.g. deploy-pipeline: a-z, 0-9, - and _"/>
            <PrivilegeChecks chosen prefix="app-key-privilege" error=create_error/>
            <div class="buttons">
                <button id="app-key-create" type="submit" class="primary">"Create key"</button>
            </div>
        </form>
        {move || created.get().map(|k| view! {
            <div class="banner warning" id="app-key-secret-banner" data-name=k.key.name>
                <p><strong>{format!("Copy the secret of {} now.", k.key.name)}</strong>
                    " DCP keeps only its hash: it cannot show it again. Anyone holding it can change the upstreams its privileges allow."</p>
                <div class="secret-box">
                    <input id="app-key-secret" class="secret" type="text" readonly prop:value=k.secret.clone()
                        on:focus=|ev| {
                            if let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                                input.select();
                            }
                        }/>
                    <button id="app-key-copy" type="button" on:click=move |_| copied.set(Some(copy_secret()))>"Copy"</button>
                </div>
                {move || copied.get().map(|ok| if ok {
                    view! { <p class="hint" id="app-key-copied">"Copied."</p> }.into_any()
                } else {
                    view! { <p class="hint" id="app-key-copied">"The browser did not copy it: the text is selected, press Ctrl+C (⌘C)."</p> }.into_any()
                })}
                <button id="app-key-done" class="ghost" on:click=move |_| created.set(None)>"I have copied it"</button>
            </div>
        })}
        <ErrorBanner error all=true/>
        <table id="app-keys-table" class="table">
            <thead><tr><th>"Name"</th><th>"Key"</th><th>"May call"</th><th>"Made"</th><th>"Last used"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || keys.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|k| {
                    let revoked = k.revoked_at.is_some();
                    let (for_edit, for_revoke) = (k.clone(), k.clone());
                    view! {
                        <tr data-test="app-key" data-name=k.name.clone() data-revoked=revoked.to_string() class:revoked=revoked>
                            <td class="name">{k.name.clone()}
                                {k.revoked_at.as_deref().map(|at| view! { <span class="badge state-failed" data-test="app-key-revoked">{format!("revoked {}", short_time(at))}</span> })}</td>
                            <td><code>{format!("{}…", k.prefix)}</code></td>
                            <td class="privileges">{if k.privileges.is_empty() { "nothing".to_owned() } else { k.privileges.join(", ") }}</td>
                            <td>{format!("{} by {}", short_time(&k.created_at), k.created_by)}</td>
                            <td>{k.last_used_at.as_deref().map_or_else(|| "never".to_owned(), short_time)}</td>
                            <td class="actions">
                                {(!revoked).then(|| view! {
                                    <button class="ghost edit" on:click=move |_| editing.set(Some(PrivilegeEditor {
                                        id: for_edit.id,
                                        chosen: RwSignal::new(for_edit.privileges.iter().cloned().collect()),
                                        error: RwSignal::new(None),
                                    }))>"Privileges"</button>
                                    <button class="ghost danger revoke" on:click=move |_| revoking.set(Some(for_revoke.clone()))>"Revoke"</button>
                                })}
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        <Show when=move || keys.get().and_then(Result::ok).is_some_and(|k| k.is_empty())>
            <p class="empty">"No app keys yet."</p>
        </Show>

        {move || editing.get().map(|ed| view! {
            <Modal title=Signal::derive(|| "Privileges".to_owned()) on_close=Callback::new(move |()| editing.set(None))>
                <form id="app-key-privileges-form" novalidate on:submit=save_privileges>
                    <ErrorBanner error=ed.error all=true shown=vec!["privileges".into()]/>
                    <PrivilegeChecks chosen=ed.chosen prefix="app-key-edit-privilege" error=ed.error/>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| editing.set(None)>"Cancel"</button>
                        <button id="app-key-privileges-save" type="submit" class="primary">"Save"</button>
                    </div>
                </form>
            </Modal>
        })}
        <Confirm title="Revoke an app key" target=revoking
            question=|k: &AppKey| format!(
                "Revoke {}? Every call with it is refused from now on; its changes stay in the log. This cannot be undone.",
                k.name
            )
            action="Revoke" id="app-key-revoke-confirm" danger=true
            run=|k: AppKey| async move { api::revoke_app_key(k.id).await.map(|_| ()) }
            on_done=Callback::new(move |()| bump())/>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_ids_have_no_dots() {
        assert_eq!(id_part("alterations.register"), "alterations-register");
        // Each privilege the server knows, once.
        let names: BTreeSet<&str> = PRIVILEGES.iter().map(|(p, _)| *p).collect();
        assert_eq!(names.len(), 3);
    }
}
