//! The plugins page: versions with their status, capabilities and call
//! metrics; upload; approve, activate, roll back, delete; and a "try it"
//! form rendered from the plugin's own configuration schema.

use dcp_api_types::{
    PluginCapabilities, PluginLimits, PluginTestResult, PluginUpload, PluginVersion,
};
use leptos::{ev::SubmitEvent, html, prelude::*, task::spawn_local};
use serde_json::{Map, Value};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Modal, short_time},
};

fn capability_lines(c: &PluginCapabilities) -> Vec<String> {
    let mut lines: Vec<String> = c.http.iter().map(|o| format!("http {o}")).collect();
    lines.extend(c.secrets.iter().map(|s| format!("secret {s}")));
    if c.ssh {
        lines.push("ssh".into());
    }
    lines
}

fn capability_text(c: &PluginCapabilities) -> String {
    let lines = capability_lines(c);
    if lines.is_empty() {
        "none".to_owned()
    } else {
        lines.join(", ")
    }
}

fn limits_text(l: &PluginLimits) -> String {
    let v = |x: Option<u64>| x.unwrap_or_default();
    format!(
        "{} s, {} MiB memory, {} log lines / {} KiB, {} MiB HTTP responses, {} KiB SSH output",
        v(l.timeout_secs),
        v(l.memory_mib),
        v(l.log_lines),
        v(l.log_kib),
        v(l.http_response_mib),
        v(l.ssh_output_kib)
    )
}

fn latency(p: &PluginVersion) -> String {
    match (p.latency_p50_ms, p.latency_p99_ms) {
        (Some(p50), Some(p99)) => format!("{p50:.2} / {p99:.2} ms"),
        _ => "—".into(),
    }
}

/// Lists plugin versions and manages them through the REST API.
#[component]
pub(crate) fn PluginsPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::plugins(1, 200)
    });
    let error = RwSignal::new(None::<ApiError>);
    let uploaded = RwSignal::new(None::<PluginUpload>);
    let detail = RwSignal::new(None::<PluginVersion>);
    let component_input = NodeRef::<html::Input>::new();
    let manifest_input = NodeRef::<html::Input>::new();

    let upload = move |ev: SubmitEvent| {
        ev.prevent_default();
        let file = |input: NodeRef<html::Input>| {
            input.get().and_then(|i| i.files()).and_then(|f| f.get(0))
        };
        let (Some(component), Some(manifest)) = (file(component_input), file(manifest_input))
        else {
            error.set(Some(ApiError::local(
                "choose the component (.wasm) and its plugin.toml",
            )));
            return;
        };
        spawn_local(async move {
            match api::upload_plugin(component, manifest).await {
                Ok(result) => {
                    error.set(None);
                    uploaded.set(Some(result));
                    reload.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let act = move |id: i64, action: &'static str| {
        spawn_local(async move {
            let result = if action == "delete" {
                api::delete_plugin(id).await.map(|()| None)
            } else {
                api::plugin_action(id, action).await.map(Some)
            };
            match result {
                Ok(_) => {
                    error.set(None);
                    uploaded.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let rows = move || match listing.get() {
        Some(Ok(page)) => page.items,
        _ => Vec::new(),
    };

    view! {
        <div class="page-head">
            <h1>"Plugins"</h1>
            <p class="subtitle">
                "WebAssembly components that provide clouds, load balancers and remote-command modules. "
                "Each runs sandboxed, with only the capabilities you approve."
            </p>
        </div>
        <form id="plugin-upload" class="inline-form" on:submit=upload>
            <div class="field">
                <label for="plugin-component">"Component (.wasm)"</label>
                <input id="plugin-component" type="file" accept=".wasm" node_ref=component_input/>
            </div>
            <div class="field">
                <label for="plugin-manifest">"Manifest (plugin.toml)"</label>
                <input id="plugin-manifest" type="file" accept=".toml" node_ref=manifest_input/>
            </div>
            <button id="plugin-upload-submit" type="submit" class="primary">"Upload"</button>
        </form>
        <ErrorBanner error all=true/>
        {move || uploaded.get().map(|u| {
            let id = u.plugin.id;
            view! {
                <div class="banner success" id="upload-result">
                    <p>
                        <strong>{format!("{}@{}", u.plugin.name, u.plugin.version)}</strong>
                        {if u.created { " uploaded; it waits for approval." } else { " was uploaded before; nothing changed." }}
                    </p>
                    <CapabilityDiffView added=u.capability_diff.added removed=u.capability_diff.removed/>
                    <button class="primary approve" on:click=move |_| act(id, "approve")>"Approve capabilities"</button>
                </div>
            }
        })}
        <table id="plugins-table" class="table">
            <thead>
                <tr>
                    <th>"Plugin"</th><th>"World"</th><th>"Status"</th><th>"Capabilities"</th>
                    <th>"Calls / errors"</th><th>"p50 / p99"</th><th class="actions"></th>
                </tr>
            </thead>
            <tbody>
                <For each=rows key=|p| (p.id, p.status.clone(), p.calls) children=move |p: PluginVersion| {
                    let id = p.id;
                    let status = p.status.clone();
                    let caps = capability_text(p.granted.as_ref().unwrap_or(&p.requested));
                    let shown = p.clone();
                    view! {
                        <tr data-name=format!("{}@{}", p.name, p.version)>
                            <td class="name">
                                <a href="#" class="details" on:click=move |ev| { ev.prevent_default(); detail.set(Some(shown.clone())); }>
                                    {format!("{} {}", p.name, p.version)}
                                </a>
                                {p.builtin.then(|| view! { <span class="badge">"built in"</span> })}
                                <div class="muted"><code>{p.digest.chars().take(12).collect::<String>()}</code></div>
                            </td>
                            <td>{p.world.clone()}</td>
                            <td><span class=format!("status {status}")>{status.clone()}</span></td>
                            <td class="description">{caps}</td>
                            <td>{format!("{} / {}", p.calls, p.errors)}</td>
                            <td>{latency(&p)}</td>
                            <td class="actions">
                                {(status == "pending").then(|| view! {
                                    <button class="ghost approve" on:click=move |_| act(id, "approve")>"Approve"</button>
                                })}
                                {(status == "approved" || status == "inactive").then(|| view! {
                                    <button class="ghost activate" on:click=move |_| act(id, "activate")>"Activate"</button>
                                })}
                                {p.rollback_to.clone().map(|to| view! {
                                    <button class="ghost rollback" on:click=move |_| act(id, "rollback")>{format!("Roll back to {to}")}</button>
                                })}
                                {(status != "active" && !p.builtin).then(|| view! {
                                    <button class="ghost danger delete" on:click=move |_| act(id, "delete")>"Delete"</button>
                                })}
                            </td>
                        </tr>
                    }
                }/>
            </tbody>
        </table>
        {move || detail.get().map(|p| view! {
            <Modal title=Signal::derive({ let t = format!("{} {}", p.name, p.version); move || t.clone() })
                on_close=Callback::new(move |()| detail.set(None))>
                <PluginDetail plugin=p/>
            </Modal>
        })}
    }
}

/// The lines an upgrade adds (green) and drops (struck through).
#[component]
fn CapabilityDiffView(added: Vec<String>, removed: Vec<String>) -> impl IntoView {
    let nothing = added.is_empty() && removed.is_empty();
    view! {
        <ul class="diff">
            {added.into_iter().map(|l| view! { <li class="added">{format!("+ {l}")}</li> }).collect_view()}
            {removed.into_iter().map(|l| view! { <li class="removed">{format!("− {l}")}</li> }).collect_view()}
            {nothing.then(|| view! { <li class="muted">"No change in capabilities."</li> })}
        </ul>
    }
}

/// One field of a configuration form, from a JSON Schema property.
#[derive(Debug, Clone)]
struct FormField {
    key: String,
    title: String,
    kind: String,
    value: RwSignal<String>,
}

fn form_fields(schema: &Value) -> Vec<FormField> {
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(key, prop)| FormField {
                    key: key.clone(),
                    title: prop["title"].as_str().unwrap_or(key).to_owned(),
                    kind: prop["type"].as_str().unwrap_or("string").to_owned(),
                    value: RwSignal::new(match &prop["default"] {
                        Value::Null => String::new(),
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn form_config(fields: &[FormField]) -> Result<Value, String> {
    let mut config = Map::new();
    for f in fields {
        let raw = f.value.get_untracked();
        if raw.trim().is_empty() {
            continue;
        }
        let value = match f.kind.as_str() {
            "string" => Value::String(raw),
            _ => serde_json::from_str(&raw).map_err(|e| format!("{}: {e}", f.title))?,
        };
        config.insert(f.key.clone(), value);
    }
    Ok(Value::Object(config))
}

/// The operator's limit overrides as form inputs; an empty input means the default.
#[derive(Debug, Clone, Copy)]
struct LimitFields([(&'static str, &'static str, RwSignal<String>); 6]);

impl LimitFields {
    fn new(current: &PluginLimits) -> Self {
        let text = |v: Option<u64>| RwSignal::new(v.map(|v| v.to_string()).unwrap_or_default());
        Self([
            ("timeout_secs", "Timeout (s)", text(current.timeout_secs)),
            ("memory_mib", "Memory (MiB)", text(current.memory_mib)),
            ("log_lines", "Log lines", text(current.log_lines)),
            ("log_kib", "Log KiB", text(current.log_kib)),
            (
                "http_response_mib",
                "HTTP response MiB",
                text(current.http_response_mib),
            ),
            (
                "ssh_output_kib",
                "SSH output KiB",
                text(current.ssh_output_kib),
            ),
        ])
    }

    /// The overrides typed in; the server checks their ranges.
    fn read(&self) -> Result<PluginLimits, String> {
        let mut object = Map::new();
        for (key, label, value) in self.0 {
            let text = value.get_untracked();
            if text.trim().is_empty() {
                continue;
            }
            let number: u64 = text
                .trim()
                .parse()
                .map_err(|_| format!("{label}: not a whole number"))?;
            object.insert(key.to_owned(), Value::from(number));
        }
        serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
    }

    fn view(self) -> impl IntoView {
        self.0
            .into_iter()
            .map(|(key, label, value)| {
                let id = format!("limit-{key}");
                view! {
                    <div class="field">
                        <label for=id.clone()>{label}</label>
                        <input id=id type="text" inputmode="numeric" placeholder="default" bind:value=value/>
                    </div>
                }
            })
            .collect_view()
    }
}

/// Capabilities, manifest facts and a "try it" form for one version.
#[component]
fn PluginDetail(plugin: PluginVersion) -> impl IntoView {
    let id = plugin.id;
    let granted = plugin.granted.is_some();
    let schema_fields = RwSignal::new(None::<Vec<FormField>>);
    let result = RwSignal::new(None::<PluginTestResult>);
    let error = RwSignal::new(None::<ApiError>);
    if granted {
        // An empty configuration is enough to learn the schema.
        spawn_local(async move {
            match api::test_plugin(id, Value::Object(Map::new())).await {
                Ok(r) => schema_fields.set(Some(form_fields(&r.config_schema))),
                Err(e) => error.set(Some(e)),
            }
        });
    }
    let limits = RwSignal::new(plugin.limits.clone());
    let overrides = LimitFields::new(&plugin.limit_overrides);
    let save_limits = move |ev: SubmitEvent| {
        ev.prevent_default();
        let wanted = match overrides.read() {
            Ok(wanted) => wanted,
            Err(e) => return error.set(Some(ApiError::local(e))),
        };
        spawn_local(async move {
            match api::set_plugin_limits(id, &wanted).await {
                Ok(saved) => {
                    error.set(None);
                    limits.set(saved.limits);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let run = move |ev: SubmitEvent| {
        ev.prevent_default();
        let fields = schema_fields.get_untracked().unwrap_or_default();
        let config = match form_config(&fields) {
            Ok(config) => config,
            Err(e) => return error.set(Some(ApiError::local(e))),
        };
        spawn_local(async move {
            match api::test_plugin(id, config).await {
                Ok(r) => {
                    error.set(None);
                    result.set(Some(r));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <dl class="facts">
            <dt>"World"</dt><dd>{plugin.world.clone()}</dd>
            <dt>"Status"</dt><dd>{plugin.status.clone()}</dd>
            <dt>"Digest"</dt><dd><code class="wrap">{plugin.digest.clone()}</code></dd>
            <dt>"Size"</dt><dd>{format!("{} KiB", plugin.size_bytes / 1024)}</dd>
            <dt>"Uploaded"</dt><dd>{short_time(&plugin.created_at)}</dd>
            <dt>"Requested"</dt><dd>{capability_text(&plugin.requested)}</dd>
            <dt>"Granted"</dt><dd>{plugin.granted.as_ref().map_or_else(|| "not yet approved".to_owned(), capability_text)}</dd>
            <dt>"Limits"</dt><dd id="plugin-limits">{move || limits_text(&limits.get())}</dd>
            <dt>"Calls"</dt><dd>{format!("{} ({} failed), p50 / p99 {}", plugin.calls, plugin.errors, latency(&plugin))}</dd>
            {plugin.last_error.map(|e| view! { <dt>"Last error"</dt><dd class="error-text">{e}</dd> })}
        </dl>
        <ErrorBanner error all=true/>
        <h3>"Limits per call"</h3>
        <form id="plugin-limits-form" class="limits" on:submit=save_limits>
            {overrides.view()}
            <div class="buttons"><button id="plugin-limits-save" type="submit" class="ghost">"Save limits"</button></div>
        </form>
        <Show when=move || granted fallback=|| view! { <p class="muted">"Approve this version to try it."</p> }>
            <h3>"Try it"</h3>
            <form id="plugin-try" on:submit=run>
                {move || schema_fields.get().unwrap_or_default().into_iter().map(|f| {
                    let id = format!("config-{}", f.key);
                    let input = if matches!(f.kind.as_str(), "array" | "object") {
                        view! { <textarea id=id.clone() rows="3" placeholder="JSON" bind:value=f.value></textarea> }.into_any()
                    } else {
                        view! { <input id=id.clone() type="text" bind:value=f.value/> }.into_any()
                    };
                    view! { <div class="field"><label for=id>{f.title}</label>{input}</div> }
                }).collect_view()}
                <div class="buttons"><button id="plugin-try-run" type="submit" class="primary">"Run"</button></div>
            </form>
            {move || result.get().map(|r| view! {
                <div class="try-result" id="plugin-try-result">
                    {r.config_error.clone().map(|e| view! { <p class="error-text">{format!("Configuration: {e}")}</p> })}
                    {r.sample_error.clone().map(|e| view! { <p class="error-text">{e}</p> })}
                    <p>{format!("{} {} answered: {}", r.name, r.version, if r.sample.is_empty() { "nothing".to_owned() } else { r.sample.join(", ") })}</p>
                </div>
            })}
        </Show>
    }
}
