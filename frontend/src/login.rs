//! The login page.

use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::{api, api::ApiError, components::ErrorBanner};

/// User name and password; on success, the page the user was sent here
/// from (`?next=`), else the clusters page.
#[component]
pub(crate) fn LoginPage() -> impl IntoView {
    let username = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let navigate = use_navigate();
    let query = use_query_map();
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::login(username.get_untracked(), password.get_untracked()).await {
                Ok(_) => {
                    let next = query.with_untracked(|q| q.get("next"));
                    navigate(&api::after_login(next), Default::default());
                }
                Err(e) => {
                    error.set(Some(e));
                    busy.set(false);
                }
            }
        });
    };
    view! {
        <main class="login">
            <form class="card" on:submit=submit>
                <h1>"DCP"</h1>
                <p class="subtitle">"Sign in to manage your fleet."</p>
                <ErrorBanner error all=true/>
                <div class="field">
                    <label for="login-username">"User name"</label>
                    <input id="login-username" type="text" autocomplete="username" bind:value=username/>
                </div>
                <div class="field">
                    <label for="login-password">"Password"</label>
                    <input
                        id="login-password"
                        type="password"
                        autocomplete="current-password"
                        bind:value=password
                    />
                </div>
                <button id="login-submit" type="submit" class="primary" disabled=move || busy.get()>
                    "Sign in"
                </button>
            </form>
        </main>
    }
}
