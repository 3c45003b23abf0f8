//! Images: the registry DCP's images live in — whether it serves, how to
//! push to it, its repositories, their tags, and a tag in full (layers,
//! what it runs, its build history), with deleting a tag. The repository
//! and tag shown are in the address (`?repository=shop/web&tag=1.4`), so
//! a tag can be linked to. The projects that build images are in
//! `projects`, in the same area.

use dcp_api_types::{
    Cleanup, DoomedTag, ImageTag, ImageTagDetail, Page, RegistryLogin, RetentionInput,
    RetentionRule,
};
use leptos::{prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_query_map},
};

use crate::{
    api::{self, ApiError},
    components::{Confirm, ErrorBanner, Field, Pager, load_error, short_time, show_form_error},
};

/// Bytes as people read them: `512 B`, `3.2 MB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `sha256:0123456789ab…` → `0123456789ab`.
pub(crate) fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// `/images?repository=…[&tag=…]`, percent-encoded.
pub(crate) fn link(repository: &str, tag: Option<&str>) -> String {
    let enc = |s: &str| {
        js_sys::encode_uri_component(s)
            .as_string()
            .unwrap_or_default()
    };
    match tag {
        Some(tag) => format!("/images?repository={}&tag={}", enc(repository), enc(tag)),
        None => format!("/images?repository={}", enc(repository)),
    }
}

/// The Images area's own navigation: the registry, and the projects that
/// build into it.
#[component]
pub(crate) fn ImagesTabs() -> impl IntoView {
    view! {
        <nav class="tabs" id="images-tabs">
            <A href="/images" exact=true attr:id="tab-registry">"Registry"</A>
            <A href="/images/projects" attr:id="tab-projects">"Projects"</A>
        </nav>
    }
}

/// A tag asked about for deleting.
#[derive(Debug, Clone)]
struct AskedTag {
    repository: String,
    tag: String,
    others: Vec<String>,
}

/// The image registry and its contents.
#[component]
pub(crate) fn ImagesPage() -> impl IntoView {
    let query = use_query_map();
    let repository = Memo::new(move |_| {
        query
            .with(|q| q.get("repository"))
            .filter(|r| !r.is_empty())
    });
    let tag = Memo::new(move |_| query.with(|q| q.get("tag")).filter(|t| !t.is_empty()));
    let reload = RwSignal::new(0_u32);
    let recheck = RwSignal::new(0_u32);
    let status = LocalResource::new(move || {
        reload.track();
        recheck.track();
        api::registry()
    });
    let status_error = load_error(status);
    // A registry that does not serve (starting, restarting after an exit,
    // read-only for a clean-up) is asked again until it does.
    crate::machines::every(3, move || {
        let serving = status.with_untracked(|s| {
            s.as_ref()
                .and_then(|r| r.as_ref().ok())
                .is_some_and(|s| s.serving)
        });
        if !serving {
            recheck.update(|n| *n += 1);
        }
    });
    let repo_page = RwSignal::new(1_u32);
    let repositories = LocalResource::new(move || {
        reload.track();
        api::repositories(repo_page.get())
    });
    let repositories_error = load_error(repositories);
    let login = RwSignal::new(None::<RegistryLogin>);
    let login_error = RwSignal::new(None::<ApiError>);
    let show_login = move |_| {
        spawn_local(async move {
            match api::registry_login().await {
                Ok(l) => {
                    login_error.set(None);
                    login.set(Some(l));
                }
                Err(e) => login_error.set(Some(e)),
            }
        });
    };

    view! {
        <ImagesTabs/>
        <div class="page-head">
            <h1>"Images"</h1>
            <p class="subtitle">
                "The registry services pull their images from. Push a base image into "
                <code>"base/"</code>" with "<code>"docker login"</code>"; delete tags you no longer deploy."
            </p>
        </div>
        <ErrorBanner error=status_error all=true/>
        {move || status.get().and_then(Result::ok).map(|s| {
            let serving = s.serving;
            view! {
                <section class="panel" id="registry-status" data-serving=serving.to_string()>
                    <dl class="facts">
                        <dt>"Registry"</dt><dd><code id="registry-host">{s.host.clone()}</code>" ("{s.url.clone()}")"</dd>
                        <dt>"Run by"</dt><dd>{if s.managed { "DCP (Debian's docker-registry)" } else { "an external registry" }}</dd>
                        <dt>"State"</dt>
                        <dd>{if serving {
                            view! { <span class="badge state-running">"serving"</span> }.into_any()
                        } else {
                            view! { <span class="badge state-failed">"not serving"</span>" "<span id="registry-problem">{s.problem.clone().unwrap_or_default()}</span> }.into_any()
                        }}</dd>
                        {s.storage_bytes.map(|b| view! { <dt>"Storage"</dt><dd id="registry-storage">{human_bytes(b)}</dd> })}
                    </dl>
                    <div class="buttons">
                        <button id="registry-show-login" class="ghost" on:click=show_login>"Show the docker login"</button>
                    </div>
                    <ErrorBanner error=login_error all=true/>
                    {move || login.get().map(|l| view! {
                        <pre class="code" id="registry-login">{format!(
                            "docker login {} -u {} --password-stdin <<< '{}'",
                            l.server, l.username, l.password
                        )}</pre>
                    })}
                </section>
            }
        })}
        <div class="split">
            <section class="panel">
                <h2>"Repositories"</h2>
                <ErrorBanner error=repositories_error all=true/>
                <table id="repositories-table" class="table">
                    <thead><tr><th>"Repository"</th><th>"Tags"</th></tr></thead>
                    <tbody>
                        {move || repositories.get().and_then(Result::ok).map(|p| p.items).unwrap_or_default().into_iter().map(|r| {
                            let chosen = repository.get().as_deref() == Some(r.name.as_str());
                            let (href, label) = (link(&r.name, None), r.name.clone());
                            view! {
                                <tr data-test="repository" data-name=r.name class:selected=chosen>
                                    <td><A href=href>{label}</A></td>
                                    <td>{r.tags}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
                <Show when=move || repositories.get().and_then(Result::ok).is_some_and(|p| p.items.is_empty())>
                    <p class="empty">"No images yet: push one, or build one from a project."</p>
                </Show>
                <Pager page=Signal::derive(move || repositories.get().and_then(Result::ok)) current=repo_page noun=("repository", "repositories")/>
            </section>
            {move || repository.get().map(|name| view! {
                <Tags repository=name tag reload/>
            })}
        </div>
        <Retention reload/>
    }
}

/// A whole number from a form field; none when it is empty.
fn whole(field: &'static str, text: &str) -> Result<Option<u32>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::local(format!(
            "{}: must be a whole number",
            field.replace('_', " ")
        ))
    })
}

/// Retention rules, what a clean-up would delete, running one, and the
/// clean-ups so far.
#[component]
fn Retention(reload: RwSignal<u32>) -> impl IntoView {
    let rules_page = RwSignal::new(1_u32);
    let rules = LocalResource::new(move || {
        reload.track();
        api::retention_rules(rules_page.get())
    });
    let history_page = RwSignal::new(1_u32);
    let history = LocalResource::new(move || {
        reload.track();
        api::cleanups(history_page.get())
    });
    let rules_error = load_error(rules);
    let repository = RwSignal::new(String::new());
    let keep_last = RwSignal::new(String::new());
    let keep_days = RwSignal::new(String::new());
    let form_error = RwSignal::new(None::<ApiError>);
    let plan = RwSignal::new(None::<Page<DoomedTag>>);
    let action_error = RwSignal::new(None::<ApiError>);
    let running = RwSignal::new(false);
    let last = RwSignal::new(None::<Cleanup>);
    let removing = RwSignal::new(None::<RetentionRule>);
    let bump = move || reload.update(|n| *n += 1);
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let input = match (
            whole("keep_last", &keep_last.get_untracked()),
            whole("keep_days", &keep_days.get_untracked()),
        ) {
            (Ok(keep_last), Ok(keep_days)) => RetentionInput {
                keep_last,
                keep_days,
            },
            (Err(e), _) | (_, Err(e)) => return form_error.set(Some(e)),
        };
        let name = repository.get_untracked().trim().to_owned();
        spawn_local(async move {
            match api::set_retention(&name, &input).await {
                Ok(_) => {
                    form_error.set(None);
                    plan.set(None);
                    bump();
                }
                Err(e) => show_form_error(form_error, e),
            }
        });
    };
    let preview = move |_| {
        spawn_local(async move {
            match api::cleanup_plan().await {
                Ok(p) => {
                    action_error.set(None);
                    plan.set(Some(p));
                }
                Err(e) => action_error.set(Some(e)),
            }
        });
    };
    let run = move |_| {
        running.set(true);
        spawn_local(async move {
            match api::clean_up().await {
                Ok(done) => {
                    action_error.set(None);
                    plan.set(None);
                    last.set(Some(done));
                    bump();
                }
                Err(e) => action_error.set(Some(e)),
            }
            running.set(false);
        });
    };
    view! {
        <section class="panel" id="retention">
            <h2>"Retention and clean-up"</h2>
            <p class="hint">
                "A clean-up deletes the tags a repository's rule does not keep — newest first by build time, a tag stays when it is among the newest N or was built in the last D days — then frees their layers' space. "
                "Repositories without a rule are left alone. While the space is freed, pulls work and pushes wait."
            </p>
            <ErrorBanner error=rules_error all=true/>
            <table id="retention-table" class="table">
                <thead><tr><th>"Repository"</th><th>"Keep newest"</th><th>"Keep days"</th><th>"Set"</th><th class="actions"></th></tr></thead>
                <tbody>
                    {move || rules.get().and_then(Result::ok).map(|p| p.items).unwrap_or_default().into_iter().map(|r| {
                        let doomed = r.clone();
                        let name = r.repository.clone();
                        view! {
                            <tr data-test="retention-rule" data-repository=r.repository>
                                <td>{name}</td>
                                <td>{r.keep_last.map(|n| n.to_string()).unwrap_or_default()}</td>
                                <td>{r.keep_days.map(|n| n.to_string()).unwrap_or_default()}</td>
                                <td>{format!("{} by {}", short_time(&r.updated_at), r.updated_by)}</td>
                                <td class="actions"><button class="ghost danger remove" on:click=move |_| removing.set(Some(doomed.clone()))>"Remove"</button></td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <Pager page=Signal::derive(move || rules.get().and_then(Result::ok)) current=rules_page noun=("rule", "rules")/>
            <form id="retention-form" class="inline-form" novalidate on:submit=save>
                <ErrorBanner error=form_error all=true shown=vec!["repository".into(), "keep_last".into(), "keep_days".into()]/>
                <Field field="repository" id_prefix="retention" label="Repository" value=repository error=form_error hint="e.g. shop/web"/>
                <Field field="keep_last" id_prefix="retention" label="Keep the newest" value=keep_last error=form_error hint="tags (empty: no count)"/>
                <Field field="keep_days" id_prefix="retention" label="Keep the last" value=keep_days error=form_error hint="days (empty: no age)"/>
                <div class="buttons"><button id="retention-save" type="submit" class="primary">"Set rule"</button></div>
            </form>
            <ErrorBanner error=action_error all=true/>
            <div class="buttons">
                <button id="cleanup-preview" class="ghost" on:click=preview>"Preview"</button>
                <button id="cleanup-run" class="primary" disabled=move || running.get() on:click=run>
                    {move || if running.get() { "Cleaning up…" } else { "Clean up now" }}
                </button>
            </div>
            {move || plan.get().map(|p| if p.total == 0 {
                view! { <p class="empty" id="cleanup-plan" data-count="0">"Nothing to delete: every tag is kept by its rule."</p> }.into_any()
            } else {
                let count = p.total;
                let more = count.saturating_sub(p.items.len() as u64);
                view! {
                    <div id="cleanup-plan" data-count=count.to_string()>
                        <p>{format!("A clean-up now deletes {count} tag(s):")}</p>
                        <ul>{p.items.into_iter().map(|d| view! {
                            <li data-test="doomed-tag"><code>{format!("{}:{}", d.repository, d.tag)}</code>" "
                                <span class="hint">{d.created.as_deref().map(short_time).unwrap_or_default()}</span></li>
                        }).collect_view()}</ul>
                        {(more > 0).then(|| view! { <p class="hint">{format!("and {more} more")}</p> })}
                    </div>
                }.into_any()
            })}
            {move || last.get().map(|c| {
                let said = if c.state == "succeeded" {
                    format!("Deleted {} tag(s), freed {}. {}", c.deleted.len(), human_bytes(c.freed_bytes), c.message)
                } else {
                    format!("The clean-up failed after deleting {} tag(s): {}", c.deleted.len(), c.message)
                };
                view! { <p class="banner" id="cleanup-result" data-state=c.state>{said.trim_end().to_owned()}</p> }
            })}
            <h3>"Clean-ups"</h3>
            <table id="cleanups-table" class="table">
                <thead><tr><th>"Started"</th><th>"By"</th><th>"State"</th><th>"Tags deleted"</th><th>"Freed"</th></tr></thead>
                <tbody>
                    {move || history.get().and_then(Result::ok).map(|p| p.items).unwrap_or_default().into_iter().map(|c| view! {
                        <tr data-test="cleanup" data-state=c.state.clone()>
                            <td>{short_time(&c.started_at)}</td>
                            <td>{c.actor.clone()}</td>
                            <td><span class=format!("badge state-{}", c.state)>{c.state.clone()}</span>
                                {(!c.message.is_empty()).then(|| view! { " "<span class="hint">{c.message.clone()}</span> })}</td>
                            <td>{c.deleted.iter().map(|d| format!("{}:{}", d.repository, d.tag)).collect::<Vec<_>>().join(", ")}</td>
                            <td>{human_bytes(c.freed_bytes)}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
            <Pager page=Signal::derive(move || history.get().and_then(Result::ok)) current=history_page noun=("clean-up", "clean-ups")/>
        </section>
        <Confirm title="Remove a retention rule" target=removing
            question=|r: &RetentionRule| format!("Remove the rule of {}? Clean-ups leave its tags alone from now on.", r.repository)
            action="Remove" id="retention-remove-confirm" danger=true
            run=|r: RetentionRule| async move { api::delete_retention(&r.repository).await }
            on_done=Callback::new(move |()| bump())/>
    }
}

/// The tags of one repository, and the chosen tag in full.
#[component]
fn Tags(repository: String, tag: Memo<Option<String>>, reload: RwSignal<u32>) -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let name = StoredValue::new(repository.clone());
    let tags = LocalResource::new(move || {
        reload.track();
        let repository = name.get_value();
        let page = page.get();
        async move { api::image_tags(&repository, page).await }
    });
    let error = load_error(tags);
    let doomed = RwSignal::new(None::<AskedTag>);
    let deleted = RwSignal::new(None::<String>);
    let navigate = StoredValue::new_local(use_navigate());
    let listed = Signal::derive(move || tags.get().and_then(Result::ok));
    view! {
        <section class="panel" id="repository" data-name=repository>
            <h2>{name.get_value()}</h2>
            <ErrorBanner error all=true/>
            {move || deleted.get().map(|text| view! { <p class="banner" id="tag-deleted">{text}</p> })}
            <table id="tags-table" class="table">
                <thead><tr><th>"Tag"</th><th>"Digest"</th><th>"Size"</th><th>"Built"</th><th class="actions"></th></tr></thead>
                <tbody>
                    {move || listed.get().map(|p: Page<ImageTag>| p.items).unwrap_or_default().into_iter().map(|t| {
                        let chosen = tag.get().as_deref() == Some(t.tag.as_str());
                        let href = link(&name.get_value(), Some(&t.tag));
                        let (label, short, title) = (t.tag.clone(), short_digest(&t.digest), t.digest.clone());
                        view! {
                            <tr data-test="image-tag" data-tag=t.tag.clone() data-digest=t.digest class:selected=chosen>
                                <td><A href=href>{label}</A></td>
                                <td><code title=title>{short}</code></td>
                                <td>{t.size.map_or_else(|| t.platforms.join(", "), human_bytes)}</td>
                                <td>{t.created.as_deref().map(short_time).unwrap_or_default()}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <Show when=move || listed.get().is_some_and(|p| p.items.is_empty())>
                <p class="empty">"No tags left: every one was deleted."</p>
            </Show>
            <Pager page=listed current=page noun=("tag", "tags")/>
            {move || tag.get().map(|t| view! {
                <TagDetailPanel repository=name.get_value() tag=t doomed/>
            })}
        </section>
        <Confirm title="Delete a tag" target=doomed
            question=|d: &AskedTag| if d.others.is_empty() {
                format!("Delete {}:{}? Nodes can no longer pull it. Its layers' space is freed by the registry's clean-up.", d.repository, d.tag)
            } else {
                format!("Delete {}:{}? The same image stays under {}.", d.repository, d.tag, d.others.join(", "))
            }
            action="Delete" id="tag-delete-confirm" danger=true
            run=move |d: AskedTag| async move {
                let done = api::delete_image_tag(&d.repository, &d.tag).await?;
                deleted.set(Some(if done.kept.is_empty() {
                    format!("Deleted {}:{}.", done.repository, done.tag)
                } else {
                    format!("Deleted {}:{}; kept {} on the same image.", done.repository, done.tag, done.kept.join(", "))
                }));
                navigate.with_value(|go| go(&link(&done.repository, None), Default::default()));
                Ok(())
            }
            on_done=Callback::new(move |()| reload.update(|n| *n += 1))/>
    }
}

/// One tag: how to pull it, what it runs, its layers and history.
#[component]
fn TagDetailPanel(
    repository: String,
    tag: String,
    doomed: RwSignal<Option<AskedTag>>,
) -> impl IntoView {
    let (r, t) = (repository, tag);
    let detail = LocalResource::new(move || {
        let (r, t) = (r.clone(), t.clone());
        async move { api::image_tag(&r, &t).await }
    });
    let error = load_error(detail);
    view! {
        <ErrorBanner error all=true/>
        {move || detail.get().and_then(Result::ok).map(|d: ImageTagDetail| {
            let ask = AskedTag {
                repository: d.repository.clone(),
                tag: d.tag.tag.clone(),
                others: d.also_tagged.clone(),
            };
            view! {
                <div id="tag-detail" data-tag=d.tag.tag.clone() data-layers=d.layers.len().to_string()>
                    <h3>{format!("{}:{}", d.repository, d.tag.tag)}</h3>
                    <dl class="facts">
                        <dt>"Pull"</dt><dd><code id="tag-pull">{d.pull.clone()}</code></dd>
                        <dt>"Digest"</dt><dd><code>{d.tag.digest.clone()}</code></dd>
                        <dt>"Type"</dt><dd>{d.tag.media_type.clone()}</dd>
                        {d.tag.size.map(|s| view! { <dt>"Size"</dt><dd>{format!("{} compressed", human_bytes(s))}</dd> })}
                        {(!d.also_tagged.is_empty()).then(|| view! {
                            <dt>"Also tagged"</dt><dd id="tag-also">{d.also_tagged.join(", ")}</dd>
                        })}
                        {d.runs.clone().map(|run| view! {
                            <dt>"Platform"</dt><dd>{format!("{}/{}", run.os, run.architecture)}</dd>
                            <dt>"Runs"</dt><dd><code>{[run.entrypoint.join(" "), run.cmd.join(" ")].join(" ").trim().to_owned()}</code></dd>
                            {(!run.exposed_ports.is_empty()).then(|| view! { <dt>"Exposes"</dt><dd>{run.exposed_ports.join(", ")}</dd> })}
                            {(!run.env.is_empty()).then(|| view! { <dt>"Environment"</dt><dd><code>{run.env.join(" ")}</code></dd> })}
                        })}
                    </dl>
                    {(!d.manifests.is_empty()).then(|| view! {
                        <h4>"Platforms"</h4>
                        <table class="table"><tbody>
                            {d.manifests.iter().map(|m| view! {
                                <tr><td>{m.platform.clone()}</td><td><code>{short_digest(&m.digest)}</code></td></tr>
                            }).collect_view()}
                        </tbody></table>
                    })}
                    {(!d.layers.is_empty()).then(|| view! {
                        <h4>"Layers"</h4>
                        <table id="tag-layers" class="table">
                            <thead><tr><th>"Digest"</th><th>"Size"</th><th>"Made by"</th></tr></thead>
                            <tbody>
                                {d.layers.iter().map(|l| view! {
                                    <tr data-test="layer"><td><code>{short_digest(&l.digest)}</code></td><td>{human_bytes(l.size)}</td>
                                        <td><code>{l.created_by.clone().unwrap_or_default()}</code></td></tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    })}
                    {(!d.history.is_empty()).then(|| view! {
                        <h4>"History"</h4>
                        <ol id="tag-history" class="history">
                            {d.history.iter().map(|h| view! {
                                <li class:empty-layer=h.empty_layer><code>{h.created_by.clone().unwrap_or_default()}</code>
                                    " "<span class="hint">{h.created.as_deref().map(short_time).unwrap_or_default()}</span></li>
                            }).collect_view()}
                        </ol>
                    })}
                    <div class="buttons">
                        <button id="tag-delete" class="ghost danger" on:click=move |_| doomed.set(Some(ask.clone()))>"Delete tag"</button>
                    </div>
                </div>
            }
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_read_short() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3_200_000), "3.2 MB");
        assert_eq!(
            short_digest(&format!("sha256:{}", "ab".repeat(32))),
            "abababababab"
        );
    }
}
