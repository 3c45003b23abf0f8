//! Users and their login lock-outs: administrators see who is locked out
//! after failed logins and can lift it.

use dcp_api_types::UserStatus;
use leptos::{prelude::*, task::spawn_local};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Pager, short_time},
};

/// The users, their failed logins and lock-outs, with an unlock button.
#[component]
pub(crate) fn UsersPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let page = page.get();
        reload.track();
        async move { api::users(page).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || error.set(listing.get().and_then(Result::err)));
    let unlock = move |id: i64| {
        spawn_local(async move {
            match api::unlock_user(id).await {
                Ok(_) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <div class="page-head">
            <h1>"Users"</h1>
            <p class="subtitle">
                "After repeated wrong passwords a user is locked out for a while, longer with "
                "each further failure; even the right password is refused until it ends. "
                "Unlock lifts it at once."
            </p>
            <button class="ghost" id="users-refresh" on:click=move |_| reload.update(|n| *n += 1)>"Refresh"</button>
        </div>
        <ErrorBanner error all=true/>
        <table id="users-table" class="table">
            <thead>
                <tr><th>"User"</th><th>"Role"</th><th>"Failed logins"</th><th>"Locked until (UTC)"</th><th class="actions"></th></tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|u| (u.id, u.failed_logins, u.locked_until.clone())
                    children=move |u: UserStatus| {
                        let id = u.id;
                        let locked = u.locked_until.is_some();
                        let failed = u.failed_logins;
                        let name = u.username;
                        view! {
                            <tr data-name=name class:locked=locked>
                                <td class="name">{name.clone()}</td>
                                <td>{u.role}</td>
                                <td class="failed-logins">{failed}</td>
                                <td class="locked-until">
                                    {u.locked_until.as_deref().map_or_else(|| "not locked".to_owned(), short_time)}
                                </td>
                                <td class="actions">
                                    <Show when=move || { locked || failed > 0 }>
                                        <button class="ghost unlock" on:click=move |_| unlock(id)>"Unlock"</button>
                                    </Show>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Pager page=current current=page noun=("user", "users")/>
    }
}
