//! DCP's web UI: a client-side Leptos app. It talks to DCP only through the
//! public REST API (`api`), so anything done here can be automated.

// Leptos' `#[component]` expands to `pub` props structs in this binary crate.
#![allow(unreachable_pub)]

mod accounts;
mod api;
mod app_keys;
mod cloud_balancers;
mod clusters;
mod commands;
mod components;
mod diff;
mod discovery;
mod discovery_log;
mod executions;
mod groups;
mod host_keys;
mod images;
mod lb_unit;
mod login;
mod machines;
mod overview;
mod plugins;
mod pools;
mod projects;
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

/// Declares the pages whose code is split out of the first load, by area:
/// each area is one lazy function, so its pages' code becomes one wasm
/// chunk (scripts/build-ui splits the module), fetched the first time one
/// of its pages is opened. Areas rather than pages, because the splitter
/// gives code shared by each distinct set of split points its own chunk:
/// 26 lazy pages made 650 chunks, and a deep link fetched 240 of them.
/// The login page, the layout and the overview (where a sign-in lands)
/// stay in the main module.
///
/// Each page is an ordinary route view that shows "Loading…" while its
/// chunk arrives, not the router's `Lazy` route: that one keeps the old
/// page up until the chunk is in, and a second look at the same route
/// meanwhile (leptos_router 0.8 aborts the first load and starts none)
/// left the old page up for good — a click on a link that did nothing.
macro_rules! lazy_areas {
    ($($area:ident in $load:ident { $($route:ident => $page:path,)* })*) => {$(
        /// The pages of one area, as its chunk's entry point takes them
        /// (each variant named after the route it stands for).
        #[derive(Clone, Copy)]
        #[allow(clippy::enum_variant_names)]
        enum $area {
            /// Only loads the chunk.
            Loaded,
            $($route,)*
        }

        /// The area's chunk: fetched and instantiated on the first call.
        #[leptos::lazy]
        fn $load(page: $area) -> AnyView {
            match page {
                $area::Loaded => ().into_any(),
                $($area::$route => $page().into_any(),)*
            }
        }

        $(
            /// The page, once its area's chunk is in. A transition, not a
            /// suspense: the page's own resources report to it too, and a
            /// suspense would swap a loaded page out for "Loading…" (and
            /// build it afresh) whenever one of them reloads.
            #[allow(non_snake_case)]
            fn $route() -> impl IntoView {
                view! {
                    <Transition fallback=|| view! { <div class="loading">"Loading…"</div> }>
                        {Suspend::new(async {
                            // The chunk loads in a task of its own, which
                            // nothing drops midway (wasm_split's loader
                            // expects never to be dropped before it ends;
                            // a view may be); then the page is built.
                            let (done, loaded) = futures_channel::oneshot::channel();
                            spawn_local(async move {
                                $load($area::Loaded).await;
                                let _ = done.send(());
                            });
                            let _ = loaded.await;
                            $load($area::$route).await
                        })}
                    </Transition>
                }
            }
        )*
    )*};
}

lazy_areas! {
    Orchestration in orchestration_page {
        ClustersRoute => clusters::ClustersPage,
        ClusterRoute => clusters::ClusterPage,
        ServicesRoute => services::ServicesPage,
        ServiceRoute => services::ServicePage,
        PoolRoute => pools::PoolPage,
        TasksRoute => tasks::TasksPage,
        TaskRoute => tasks::TaskPage,
        TaskTemplatesRoute => tasks::TaskTemplatesPage,
    }
    Fleet in fleet_page {
        MachinesRoute => machines::MachinesPage,
        MachineRoute => machines::MachinePage,
        TemplatesRoute => templates::TemplatesPage,
        QuotasRoute => quotas::QuotasPage,
        AccountsRoute => accounts::AccountsPage,
        LoadBalancersRoute => cloud_balancers::LoadBalancersPage,
        LoadBalancerRoute => cloud_balancers::LoadBalancerPage,
    }
    Commands in commands_page {
        CommandsRoute => commands::CommandsPage,
        GroupsRoute => groups::GroupsPage,
        ExecutionsRoute => executions::ExecutionsPage,
        ExecutionRoute => executions::ExecutionPage,
        HostKeysRoute => host_keys::HostKeysPage,
    }
    Discovery in discovery_page {
        DiscoveryRoute => discovery::DiscoveryPage,
        UnitRoute => lb_unit::UnitPage,
        UpstreamRoute => upstream::UpstreamPage,
        DiscoveryLogRoute => discovery_log::DiscoveryLogPage,
        AppKeysRoute => app_keys::AppKeysPage,
    }
    Images in images_page {
        ImagesRoute => images::ImagesPage,
        ProjectsRoute => projects::ProjectsPage,
        NewProjectRoute => projects::ProjectEditPage,
        ProjectRoute => projects::ProjectPage,
        EditProjectRoute => projects::ProjectEditPage,
        BuildRoute => projects::BuildPage,
    }
    Admin in admin_page {
        TokensRoute => tokens::TokensPage,
        UsersRoute => users::UsersPage,
        PluginsRoute => plugins::PluginsPage,
    }
}

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
                    <Route path=path!("clusters") view=ClustersRoute/>
                    <Route path=path!("clusters/:id") view=ClusterRoute/>
                    <Route path=path!("tokens") view=TokensRoute/>
                    <Route path=path!("users") view=UsersRoute/>
                    <Route path=path!("plugins") view=PluginsRoute/>
                    <Route path=path!("commands") view=CommandsRoute/>
                    <Route path=path!("command-groups") view=GroupsRoute/>
                    <Route path=path!("executions") view=ExecutionsRoute/>
                    <Route path=path!("executions/:id") view=ExecutionRoute/>
                    <Route path=path!("host-keys") view=HostKeysRoute/>
                    <Route path=path!("machines") view=MachinesRoute/>
                    <Route path=path!("machines/:id") view=MachineRoute/>
                    <Route path=path!("machine-templates") view=TemplatesRoute/>
                    <Route path=path!("quotas") view=QuotasRoute/>
                    <Route path=path!("accounts") view=AccountsRoute/>
                    <Route path=path!("accounts/:id/load-balancers") view=LoadBalancersRoute/>
                    <Route path=path!("accounts/:id/load-balancers/:lb") view=LoadBalancerRoute/>
                    <Route path=path!("services") view=ServicesRoute/>
                    <Route path=path!("services/:id") view=ServiceRoute/>
                    <Route path=path!("pools/:id") view=PoolRoute/>
                    <Route path=path!("tasks") view=TasksRoute/>
                    <Route path=path!("tasks/:id") view=TaskRoute/>
                    <Route path=path!("task-templates") view=TaskTemplatesRoute/>
                    <Route path=path!("discovery") view=DiscoveryRoute/>
                    <Route path=path!("lb-units/:id") view=UnitRoute/>
                    <Route path=path!("upstreams/:id") view=UpstreamRoute/>
                    <Route path=path!("discovery-log") view=DiscoveryLogRoute/>
                    <Route path=path!("app-keys") view=AppKeysRoute/>
                    <Route path=path!("images") view=ImagesRoute/>
                    <Route path=path!("images/projects") view=ProjectsRoute/>
                    // Before `:id`, which would take "new": the first route that matches wins.
                    <Route path=path!("images/projects/new") view=NewProjectRoute/>
                    <Route path=path!("images/projects/:id") view=ProjectRoute/>
                    <Route path=path!("images/projects/:id/edit") view=EditProjectRoute/>
                    <Route path=path!("images/builds/:id") view=BuildRoute/>
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
                        <A href="/images">"Images"</A>
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
