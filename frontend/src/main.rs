//! DCP's web UI: a client-side Leptos app. It talks to DCP only through the
//! public REST API (`api`), so anything done here can be automated.

// Leptos' `#[component]` expands to `pub` props structs in this binary crate.
#![allow(unreachable_pub)]

mod accounts;
mod api;
mod app_keys;
mod clusters;
mod commands;
mod components;
mod diff;
mod discovery;
mod discovery_log;
mod executions;
mod groups;
mod host_keys;
mod lb_unit;
mod login;
mod machines;
mod overview;
mod plugins;
mod pools;
mod quotas;
mod services;
mod tasks;
mod templates;
mod tokens;
mod upstream;
mod users;

use dcp_api_types::User;
use leptos::{prelude::*, task::spawn_local};
use leptos_router::{
    components::{A, Outlet, ParentRoute, Route, Router, Routes},
    path,
};

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    view! {
        <Router>
            <Routes fallback=|| view! { <main class="page"><h1>"Not found"</h1></main> }>
                <Route path=path!("/login") view=login::LoginPage/>
                <ParentRoute path=path!("") view=Shell>
                    <Route path=path!("") view=overview::OverviewPage/>
                    <Route path=path!("clusters") view=clusters::ClustersPage/>
                    <Route path=path!("clusters/:id") view=clusters::ClusterPage/>
                    <Route path=path!("tokens") view=tokens::TokensPage/>
                    <Route path=path!("users") view=users::UsersPage/>
                    <Route path=path!("plugins") view=plugins::PluginsPage/>
                    <Route path=path!("commands") view=commands::CommandsPage/>
                    <Route path=path!("command-groups") view=groups::GroupsPage/>
                    <Route path=path!("executions") view=executions::ExecutionsPage/>
                    <Route path=path!("executions/:id") view=executions::ExecutionPage/>
                    <Route path=path!("host-keys") view=host_keys::HostKeysPage/>
                    <Route path=path!("machines") view=machines::MachinesPage/>
                    <Route path=path!("machines/:id") view=machines::MachinePage/>
                    <Route path=path!("machine-templates") view=templates::TemplatesPage/>
                    <Route path=path!("quotas") view=quotas::QuotasPage/>
                    <Route path=path!("accounts") view=accounts::AccountsPage/>
                    <Route path=path!("services") view=services::ServicesPage/>
                    <Route path=path!("services/:id") view=services::ServicePage/>
                    <Route path=path!("pools/:id") view=pools::PoolPage/>
                    <Route path=path!("tasks") view=tasks::TasksPage/>
                    <Route path=path!("tasks/:id") view=tasks::TaskPage/>
                    <Route path=path!("task-templates") view=tasks::TaskTemplatesPage/>
                    <Route path=path!("discovery") view=discovery::DiscoveryPage/>
                    <Route path=path!("lb-units/:id") view=lb_unit::UnitPage/>
                    <Route path=path!("upstreams/:id") view=upstream::UpstreamPage/>
                    <Route path=path!("discovery-log") view=discovery_log::DiscoveryLogPage/>
                    <Route path=path!("app-keys") view=app_keys::AppKeysPage/>
                </ParentRoute>
            </Routes>
        </Router>
    }
}

/// The layout around every page after login: navigation (only modules that
/// exist), the user menu, and the page itself.
#[component]
fn Shell() -> impl IntoView {
    let (user, set_user) = signal(None::<User>);
    // A 401 sends the browser to /login (see api::read), so only success matters here.
    spawn_local(async move {
        if let Ok(session) = api::session().await {
            set_user.set(Some(session.user));
        }
    });
    let menu_open = RwSignal::new(false);
    let logout = move |_| {
        spawn_local(async move {
            let _ = api::logout().await;
            api::reload_at_login();
        });
    };
    view! {
        <Show when=move || user.get().is_some() fallback=|| view! { <div class="loading">"Loading…"</div> }>
            <div class="shell">
                <header class="topbar">
                    <a class="brand" href="/">"DCP"</a>
                    <nav class="nav">
                        <A href="/" exact=true>"Overview"</A>
                        <div class="nav-group" role="group" aria-label="Orchestration">
                            <A href="/clusters">"Clusters"</A>
                            <A href="/services">"Services"</A>
                            <A href="/tasks">"Tasks"</A>
                            <A href="/task-templates">"Task templates"</A>
                        </div>
                        <div class="nav-group" role="group" aria-label="Machines">
                            <A href="/machines">"Machines"</A>
                            <A href="/machine-templates">"Templates"</A>
                            <A href="/quotas">"Quotas"</A>
                            <A href="/accounts">"Accounts"</A>
                        </div>
                        <div class="nav-group" role="group" aria-label="Discovery">
                            <A href="/discovery">"Discovery"</A>
                            <A href="/discovery-log">"Operation log"</A>
                            <A href="/app-keys">"App keys"</A>
                        </div>
                        <A href="/commands">"Commands"</A>
                        <A href="/command-groups">"Groups"</A>
                        <A href="/executions">"Executions"</A>
                        <A href="/plugins">"Plugins"</A>
                    </nav>
                    <div class="user-menu">
                        <button
                            id="user-menu"
                            class="ghost"
                            on:click=move |_| menu_open.update(|open| *open = !*open)
                        >
                            {move || user.get().map(|u| u.username).unwrap_or_default()}
                            " ▾"
                        </button>
                        <Show when=move || menu_open.get()>
                            <div class="menu" on:click=move |_| menu_open.set(false)>
                                <A href="/tokens">"API tokens"</A>
                                <A href="/users">"Users"</A>
                                <a href="/api/docs" target="_blank">"API docs"</a>
                                <button id="logout" class="ghost" on:click=logout>"Log out"</button>
                            </div>
                        </Show>
                    </div>
                </header>
                <main class="page">
                    <Outlet/>
                </main>
            </div>
        </Show>
    }
}
