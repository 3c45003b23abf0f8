//! Personal API tokens: create (shown once), list, revoke.

use dcp_api_types::{CreatedToken, Token};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Field, short_time},
};

/// The caller's API tokens.
#[component]
pub(crate) fn TokensPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let tokens = LocalResource::new(move || {
        reload.track();
        api::tokens(1)
    });
    let name = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let created = RwSignal::new(None::<CreatedToken>);

    let create = move |ev: SubmitEvent| {
        ev.prevent_default();
        spawn_local(async move {
            match api::create_token(name.get_untracked()).await {
                Ok(token) => {
                    error.set(None);
                    name.set(String::new());
                    created.set(Some(token));
                    reload.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let revoke = move |id: i64| {
        spawn_local(async move {
            match api::revoke_token(id).await {
                Ok(()) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let rows = move || match tokens.get() {
        Some(Ok(page)) => page.items,
        _ => Vec::new(),
    };

    view! {
        <div class="page-head">
            <h1>"API tokens"</h1>
            <p class="subtitle">
                "Tokens let scripts call the REST API as you: send "
                <code>"Authorization: Bearer <token>"</code> "."
            </p>
        </div>
        <form id="token-form" class="inline-form" on:submit=create>
            <Field field="name" id_prefix="token" label="New token name" value=name error/>
            <button id="token-create" type="submit" class="primary">"Create token"</button>
        </form>
        <ErrorBanner error/>
        {move || created.get().map(|t| view! {
            <div class="banner success" id="new-token-banner">
                <p>"Copy the token " <strong>{t.name.clone()}</strong> " now: it will not be shown again."</p>
                <input id="new-token" class="secret" type="text" readonly prop:value=t.token
                    on:focus=|ev| {
                        use wasm_bindgen::JsCast as _;
                        if let Some(input) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                            input.select();
                        }
                    }/>
                <button class="ghost" on:click=move |_| created.set(None)>"Done"</button>
            </div>
        })}
        <table id="tokens-table" class="table">
            <thead>
                <tr><th>"Name"</th><th>"Token"</th><th>"Created (UTC)"</th><th>"Last used"</th><th class="actions"></th></tr>
            </thead>
            <tbody>
                <For each=rows key=|t| t.id children=move |t: Token| {
                    let id = t.id;
                    view! {
                        <tr data-name=t.name>
                            <td>{t.name.clone()}</td>
                            <td><code>{format!("{}…", t.prefix)}</code></td>
                            <td>{short_time(&t.created_at)}</td>
                            <td>{t.last_used_at.as_deref().map_or_else(|| "never".to_owned(), short_time)}</td>
                            <td class="actions">
                                <button class="ghost danger revoke" on:click=move |_| revoke(id)>"Revoke"</button>
                            </td>
                        </tr>
                    }
                }/>
            </tbody>
        </table>
    }
}
