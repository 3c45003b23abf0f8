//! One upstream: its members (added, re-weighted, removed), what each
//! balancer node of its group serves, and its recent changes.

use dcp_api_types::{BackendSpec, ChangeFilter, DiscoveryChange, ErrorCode, MembersInput};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{components::A, hooks::use_params_map};

use crate::{
    api::{self, ApiError, Members},
    components::{Confirm, ErrorBanner, Modal, load_error, short_time},
    discovery::{optional_number, state_badge},
    discovery_log::ChangeTable,
    templates::Labelled,
};

/// Recent changes the page shows.
const RECENT_CHANGES: u32 = 10;

/// The server names the one backend of a change `backends[0].port`; the
/// form's inputs are `port`, `address` and `weight`.
fn place_backend_error(error: ApiError) -> ApiError {
    const PREFIX: &str = "backends[0].";
    let ApiError(mut detail) = error;
    if let Some(field) = detail.field.clone()
        && let Some(to) = field.strip_prefix(PREFIX)
    {
        // The message starts with the field's own name; the input says it.
        detail.message = detail
            .message
            .strip_prefix(field.as_str())
            .and_then(|m| m.strip_prefix(": "))
            .unwrap_or(&detail.message)
            .to_owned();
        detail.field = Some(to.to_owned());
    }
    for other in &mut detail.also {
        if let Some(to) = other.field.strip_prefix(PREFIX) {
            other.field = to.to_owned();
        }
    }
    ApiError(detail)
}

/// `10.0.0.5:8080`.
fn backend_name(b: &BackendSpec) -> String {
    format!("{}:{}", b.address, b.port)
}

/// A backend about to be removed from upstream `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Removal {
    upstream: String,
    backend: BackendSpec,
    /// Why the server refused to remove it without force.
    refusal: Option<String>,
}

fn removal_question(r: &Removal) -> String {
    format!(
        "Remove {} from {}? The balancers stop sending it new requests and let those under way finish.",
        backend_name(&r.backend),
        r.upstream
    )
}

fn force_question(r: &Removal) -> String {
    let why = r.refusal.clone().unwrap_or_else(|| {
        format!(
            "{} is the last backend of {}: without it the upstream is empty.",
            backend_name(&r.backend),
            r.upstream
        )
    });
    format!(
        "{why} Every request through the upstream fails until a backend is added. Remove it anyway?"
    )
}

/// One upstream, by the id in the address.
#[component]
pub(crate) fn UpstreamPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    move || match id() {
        Some(id) => view! { <Upstream id/> }.into_any(),
        None => {
            let error = RwSignal::new(Some(ApiError::local("no such upstream")));
            view! { <ErrorBanner error all=true/> }.into_any()
        }
    }
}

/// Upstream `id`'s page.
#[component]
fn Upstream(id: i64) -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let loaded = LocalResource::new(move || {
        reload.track();
        async move {
            let upstream = api::upstream(id).await?;
            let filter = ChangeFilter {
                upstream_id: Some(id),
                ..ChangeFilter::default()
            };
            let changes = api::discovery_changes(&filter, 1, RECENT_CHANGES)
                .await?
                .items;
            Ok::<_, ApiError>((upstream, changes))
        }
    });
    let groups = LocalResource::new(api::lb_groups);
    let error = load_error(loaded);
    let data = move || loaded.get().and_then(Result::ok);
    // Tasks and other systems change members too: read them again now and then.
    crate::machines::every(5, move || reload.update(|n| *n += 1));
    let bump = move || reload.update(|n| *n += 1);

    // What the last change made here did, node by node.
    let last = RwSignal::new(None::<DiscoveryChange>);
    let apply = move |how: Members, backend: BackendSpec, force: bool| async move {
        let input = MembersInput {
            backends: vec![backend],
            force,
        };
        let change = api::change_members(id, how, &input).await?;
        last.set(Some(change));
        bump();
        Ok::<_, ApiError>(())
    };

    let address = RwSignal::new(String::new());
    let port = RwSignal::new(String::new());
    let weight = RwSignal::new(String::new());
    let add_error = RwSignal::new(None::<ApiError>);
    let add = move |ev: SubmitEvent| {
        ev.prevent_default();
        let backend = (|| {
            Ok::<_, ApiError>(BackendSpec {
                address: address.get_untracked().trim().to_owned(),
                port: port
                    .get_untracked()
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ApiError::invalid("port", "must be 1–65535"))?,
                weight: optional_number(
                    "weight",
                    &weight.get_untracked(),
                    "must be a whole number, 0–100",
                )?,
            })
        })();
        let backend = match backend {
            Ok(b) => b,
            Err(e) => return add_error.set(Some(e)),
        };
        spawn_local(async move {
            match apply(Members::Register, backend, false).await {
                Ok(()) => {
                    add_error.set(None);
                    address.set(String::new());
                    port.set(String::new());
                    weight.set(String::new());
                }
                Err(e) => add_error.set(Some(place_backend_error(e))),
            }
        });
    };

    // Re-weighting registers the backend again with its new weight: the
    // server changes that one member, so a backend a task registered
    // meanwhile is not lost as a replaced list would lose it.
    let reweighing = RwSignal::new(None::<BackendSpec>);
    let new_weight = RwSignal::new(String::new());
    let weight_error = RwSignal::new(None::<ApiError>);
    let save_weight = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(backend) = reweighing.get_untracked() else {
            return;
        };
        let Ok(weight) = new_weight.get_untracked().trim().parse::<u32>() else {
            return weight_error.set(Some(ApiError::invalid(
                "weight",
                "must be a whole number, 0–100",
            )));
        };
        spawn_local(async move {
            let backend = BackendSpec {
                weight: Some(weight),
                ..backend
            };
            match apply(Members::Register, backend, false).await {
                Ok(()) => reweighing.set(None),
                Err(e) => weight_error.set(Some(place_backend_error(e))),
            }
        });
    };

    let removing = RwSignal::new(None::<Removal>);
    let forcing = RwSignal::new(None::<Removal>);
    let ask_remove = move |backend: BackendSpec| {
        let Some(Ok((upstream, _))) = loaded.get_untracked() else {
            return;
        };
        let removal = Removal {
            upstream: upstream.name.clone(),
            backend,
            refusal: None,
        };
        if upstream.backends.len() <= 1 {
            forcing.set(Some(removal));
        } else {
            removing.set(Some(removal));
        }
    };

    view! {
        <ErrorBanner error all=true/>
        {move || data().map(|(u, _)| {
            let group = groups.get().and_then(Result::ok).and_then(|gs| gs.into_iter().find(|g| g.id == u.group_id))
                .map_or_else(|| format!("group #{}", u.group_id), |g| format!("group {}", g.name));
            view! {
                <div class="page-head">
                    <h1 id="upstream-name">{u.name.clone()}</h1>
                    <p class="subtitle">
                        <A href="/discovery">"Service discovery"</A>
                        {format!(" · {group} · revision {} · members changed {}", u.revision, short_time(&u.updated_at))}
                    </p>
                </div>
            }
        })}
        {move || last.get().map(|c| {
            let tone = match c.state.as_str() {
                "succeeded" => "banner success",
                "partial" => "banner warning",
                _ => "banner error",
            };
            view! {
                <div id="upstream-change" class=tone data-state=c.state.clone()>
                    <p>{format!("{} · revision {} · ", c.action, c.revision.map(|r| r.to_string()).unwrap_or_default())}
                        {state_badge(&c.state)}
                        <button class="ghost" on:click=move |_| last.set(None)>"Dismiss"</button></p>
                    <pre class="code">{c.message.clone()}</pre>
                </div>
            }
        })}

        <h2>"Members"</h2>
        <form id="upstream-add-form" class="inline-form" novalidate on:submit=add>
            <Labelled field="address" id="upstream-add-address" label="Address" error=add_error>
                <input id="upstream-add-address" type="text" autocomplete="off" placeholder="10.0.0.5" bind:value=address/>
            </Labelled>
            <Labelled field="port" id="upstream-add-port" label="Port" error=add_error>
                <input id="upstream-add-port" type="number" min="1" max="65535" bind:value=port/>
            </Labelled>
            <Labelled field="weight" id="upstream-add-weight" label="Weight" error=add_error>
                <input id="upstream-add-weight" type="number" min="0" max="100" placeholder="10" bind:value=weight/>
            </Labelled>
            <button id="upstream-add" type="submit" class="primary">"Add backend"</button>
        </form>
        <ErrorBanner error=add_error all=true shown=vec!["address".into(), "port".into(), "weight".into()]/>
        <table id="members-table" class="table">
            <thead><tr><th>"Address"</th><th>"Port"</th><th>"Weight"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || data().map(|(u, _)| u.backends.into_iter().map(|b| {
                    let (for_weight, for_remove) = (b.clone(), b.clone());
                    view! {
                        <tr data-test="member" data-address=b.address.clone() data-port=b.port.to_string()>
                            <td class="name"><code>{b.address.clone()}</code></td>
                            <td>{b.port.to_string()}</td>
                            <td class="weight">{b.weight.map(|w| w.to_string()).unwrap_or_default()}</td>
                            <td class="actions">
                                <button class="ghost edit-weight" on:click=move |_| {
                                    weight_error.set(None);
                                    new_weight.set(for_weight.weight.map(|w| w.to_string()).unwrap_or_default());
                                    reweighing.set(Some(for_weight.clone()));
                                }>"Weight"</button>
                                <button class="ghost danger remove-member" on:click=move |_| ask_remove(for_remove.clone())>"Remove"</button>
                            </td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || data().is_some_and(|d| d.0.backends.is_empty())>
            <p class="empty">"No backends: every request through this upstream fails (502)."</p>
        </Show>

        <h2>"Balancer nodes"</h2>
        <table id="upstream-nodes" class="table">
            <thead><tr><th>"Node"</th><th>"Serves revision"</th><th>"Sync"</th><th>"Last push failed with"</th></tr></thead>
            <tbody>
                {move || data().map(|(u, _)| u.nodes.into_iter().map(|n| view! {
                    <tr data-test="upstream-node" data-node=n.node_id.to_string() data-in-sync=n.in_sync.to_string()>
                        <td class="name"><code>{n.label.clone()}</code></td>
                        <td>{n.revision.map_or_else(|| "none yet".to_owned(), |r| r.to_string())}</td>
                        <td>{if n.in_sync {
                            view! { <span class="badge in-sync">"in sync"</span> }.into_any()
                        } else {
                            view! { <span class="badge drift">"behind"</span> }.into_any()
                        }}</td>
                        <td class="error-text">{n.error.clone()}</td>
                    </tr>
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || data().is_some_and(|d| d.0.nodes.is_empty())>
            <p class="empty">"The group has no balancer nodes yet: add some to a unit of the group."</p>
        </Show>

        <div class="section-head">
            <h2>"Recent changes"</h2>
            <span class="spacer"></span>
            <A href=format!("/discovery-log?upstream_id={id}") attr:id="upstream-log">"Whole log"</A>
        </div>
        <ChangeTable id="upstream-changes" changes=Signal::derive(move || data().map(|d| d.1).unwrap_or_default())/>

        {move || reweighing.get().map(|b| view! {
            <Modal title=Signal::derive(move || "Change the weight".to_owned()) on_close=Callback::new(move |()| reweighing.set(None))>
                <form id="member-weight-form" novalidate on:submit=save_weight>
                    <p>{format!("The share of new requests {} gets, against the other backends' weights.", backend_name(&b))}</p>
                    <ErrorBanner error=weight_error all=true shown=vec!["weight".into()]/>
                    <Labelled field="weight" id="member-weight" label="Weight" error=weight_error hint="0–100; 0: listed, sent no new requests">
                        <input id="member-weight" type="number" min="0" max="100" bind:value=new_weight/>
                    </Labelled>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| reweighing.set(None)>"Cancel"</button>
                        <button id="member-weight-save" type="submit" class="primary">"Save"</button>
                    </div>
                </form>
            </Modal>
        })}

        <Confirm title="Remove a backend" target=removing question=removal_question
            action="Remove" id="member-remove-confirm" danger=true
            run=move |r: Removal| async move {
                match apply(Members::Unregister, r.backend.clone(), false).await {
                    // Others removed the rest meanwhile: this is the last one now.
                    Err(e) if e.0.code == ErrorCode::Conflict && e.0.field.as_deref() == Some("backends") => {
                        forcing.set(Some(Removal { refusal: Some(e.message()), ..r }));
                        Ok(())
                    }
                    done => done,
                }
            }
            on_done=Callback::new(|()| ())/>
        <Confirm title="Remove the last backend" target=forcing question=force_question
            action="Remove anyway" id="member-remove-force" danger=true
            run=move |r: Removal| apply(Members::Unregister, r.backend, true)
            on_done=Callback::new(|()| ())/>
    }
}

#[cfg(test)]
mod tests {
    use dcp_api_types::{ErrorDetail, FieldError};

    use super::*;

    #[test]
    fn the_one_backends_errors_land_on_the_forms_inputs() {
        let error = ApiError(ErrorDetail {
            code: ErrorCode::ValidationFailed,
            message: "backends[0].port: must be between 1 and 65535".into(),
            field: Some("backends[0].port".into()),
            request_id: None,
            also: vec![FieldError {
                field: "backends[0].weight".into(),
                message: "must be between 0 and 100".into(),
            }],
        });
        let placed = place_backend_error(error);
        assert_eq!(
            placed.for_field("port").as_deref(),
            Some("must be between 1 and 65535")
        );
        assert_eq!(
            placed.for_field("weight").as_deref(),
            Some("must be between 0 and 100")
        );
        // An error about the upstream stays as it is.
        let other = ApiError::invalid("backends", "an upstream has at most 5000 backends");
        assert_eq!(place_backend_error(other.clone()), other);
    }

    #[test]
    fn removing_the_last_backend_says_what_it_costs() {
        let r = Removal {
            upstream: "web".into(),
            backend: BackendSpec {
                address: "10.0.0.5".into(),
                port: 80,
                weight: None,
            },
            refusal: None,
        };
        assert!(force_question(&r).starts_with("10.0.0.5:80 is the last backend of web"));
        assert!(removal_question(&r).starts_with("Remove 10.0.0.5:80 from web?"));
    }
}
