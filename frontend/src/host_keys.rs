//! The SSH host keys DCP trusts (trust on first use), and forgetting one
//! after a host was rebuilt.

use dcp_api_types::HostKey;
use leptos::{prelude::*, task::spawn_local};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Pager, short_time},
};

/// Trusted host keys, with a button to forget each.
#[component]
pub(crate) fn HostKeysPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let page = page.get();
        reload.track();
        async move { api::host_keys(page).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || error.set(listing.get().and_then(Result::err)));
    let forget = move |host: String| {
        spawn_local(async move {
            match api::forget_host_key(&host).await {
                Ok(()) => reload.update(|n| *n += 1),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <div class="page-head">
            <h1>"SSH host keys"</h1>
            <p class="subtitle">
                "DCP trusts the key a host shows the first time and refuses a different one later. "
                "After a host was rebuilt, forget its key; the next connection trusts the new one."
            </p>
        </div>
        <ErrorBanner error all=true/>
        <table id="host-keys-table" class="table">
            <thead>
                <tr><th>"Host"</th><th>"Algorithm"</th><th>"Fingerprint"</th><th>"First seen (UTC)"</th><th>"Last used (UTC)"</th><th class="actions"></th></tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|k| (k.host.clone(), k.fingerprint.clone())
                    children=move |k: HostKey| {
                        let host = k.host.clone();
                        view! {
                            <tr data-host=k.host>
                                <td class="name">{k.host.clone()}</td>
                                <td>{k.algorithm.clone()}</td>
                                <td class="wrap"><code>{k.fingerprint.clone()}</code></td>
                                <td>{short_time(&k.first_seen_at)}</td>
                                <td>{short_time(&k.last_seen_at)}</td>
                                <td class="actions">
                                    <button class="ghost danger forget" on:click=move |_| forget(host.clone())>"Forget"</button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"No host keys yet: DCP records one at its first connection to a host."</p>
        </Show>
        <Pager page=current current=page noun=("host key", "host keys")/>
    }
}
