//! The services page: services with their pools, and the dialogs that make
//! them (a service's image and container spec; a pool's machine template
//! and task templates).

use std::collections::BTreeMap;

use dcp_api_types::{
    Binding, Cluster, ContainerSpec, HealthCheck, HealthProbe, MachineTemplate, PageQuery, Pool,
    PoolInput, PortMapping, PortProtocol, RestartPolicy, Service, ServiceInput, TaskTemplate,
    TemplatePurpose, VolumeMount,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_params_map},
};

use crate::{
    api::{self, ApiError, TaskScope},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, load_error, show_form_error},
    tasks::TaskTable,
    templates::Labelled,
};

/// `8080:80, 5353:53/udp` as port mappings.
fn parse_ports(text: &str) -> Result<Vec<PortMapping>, ApiError> {
    let bad = |p: &str| {
        ApiError::invalid(
            "container.ports",
            format!("{p:?} is not host:container[/udp], e.g. 8080:80"),
        )
    };
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (ports, protocol) = match p.split_once('/') {
                None => (p, PortProtocol::Tcp),
                Some((ports, "tcp")) => (ports, PortProtocol::Tcp),
                Some((ports, "udp")) => (ports, PortProtocol::Udp),
                Some(_) => return Err(bad(p)),
            };
            let (host, container) = match ports.split_once(':') {
                Some((h, c)) => (Some(h.parse().map_err(|_| bad(p))?), c),
                None => (None, ports),
            };
            Ok(PortMapping {
                container_port: container.parse().map_err(|_| bad(p))?,
                host_port: host,
                protocol,
            })
        })
        .collect()
}

fn ports_text(ports: &[PortMapping]) -> String {
    ports
        .iter()
        .map(|p| {
            let udp = if p.protocol == PortProtocol::Udp {
                "/udp"
            } else {
                ""
            };
            match p.host_port {
                Some(h) => format!("{h}:{}{udp}", p.container_port),
                None => format!("{}{udp}", p.container_port),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `/host/path:/container/path[:ro]` lines.
fn parse_volumes(text: &str) -> Result<Vec<VolumeMount>, ApiError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (paths, read_only) = match l.strip_suffix(":ro") {
                Some(paths) => (paths, true),
                None => (l, false),
            };
            paths
                .split_once(':')
                .map(|(host, container)| VolumeMount {
                    host_path: host.to_owned(),
                    container_path: container.to_owned(),
                    read_only,
                })
                .ok_or_else(|| {
                    ApiError::invalid(
                        "container.volumes",
                        format!("{l:?} is not /host/path:/container/path[:ro]"),
                    )
                })
        })
        .collect()
}

fn volumes_text(volumes: &[VolumeMount]) -> String {
    volumes
        .iter()
        .map(|v| {
            let ro = if v.read_only { ":ro" } else { "" };
            format!("{}:{}{ro}\n", v.host_path, v.container_path)
        })
        .collect()
}

/// `KEY=value` lines.
fn parse_env(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    ApiError::invalid("container.env", format!("{l:?} is not KEY=value"))
                })
        })
        .collect()
}

fn restart_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::No => "no",
        RestartPolicy::Always => "always",
        RestartPolicy::UnlessStopped => "unless-stopped",
        RestartPolicy::OnFailure => "on-failure",
    }
}

/// The service being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct ServiceEditor {
    id: Option<i64>,
    cluster: RwSignal<String>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    service_type: RwSignal<String>,
    image: RwSignal<String>,
    ports: RwSignal<String>,
    env: RwSignal<String>,
    volumes: RwSignal<String>,
    restart: RwSignal<String>,
    cpu: RwSignal<String>,
    memory: RwSignal<String>,
    command: RwSignal<String>,
    args: RwSignal<String>,
    health: HealthEditor,
    error: RwSignal<Option<ApiError>>,
}

/// A service's health check in the form: `kind` is `none`, `http` or `exec`.
#[derive(Debug, Clone, Copy)]
struct HealthEditor {
    kind: RwSignal<String>,
    path: RwSignal<String>,
    port: RwSignal<String>,
    command: RwSignal<String>,
    interval: RwSignal<String>,
    timeout: RwSignal<String>,
    retries: RwSignal<String>,
    start: RwSignal<String>,
}

impl HealthEditor {
    fn new(check: Option<&HealthCheck>) -> Self {
        let number = |f: fn(&HealthCheck) -> u32, default: u32| {
            RwSignal::new(check.map_or(default, f).to_string())
        };
        let (kind, path, port, command) = match check.map(|c| &c.probe) {
            None => ("none", "/", String::new(), String::new()),
            Some(HealthProbe::Http { path, port }) => {
                ("http", path.as_str(), port.to_string(), String::new())
            }
            Some(HealthProbe::Exec { command }) => ("exec", "/", String::new(), command.join(" ")),
        };
        Self {
            kind: RwSignal::new(kind.to_owned()),
            path: RwSignal::new(path.to_owned()),
            port: RwSignal::new(port),
            command: RwSignal::new(command),
            interval: number(|c| c.interval_secs, 5),
            timeout: number(|c| c.timeout_secs, 3),
            retries: number(|c| c.retries, 3),
            start: number(|c| c.start_period_secs, 0),
        }
    }

    /// The check, or every field that is not a number at once.
    fn input(&self, ports: &[PortMapping]) -> Result<Option<HealthCheck>, ApiError> {
        let probe = match self.kind.get_untracked().as_str() {
            "http" => {
                let port = self.port.get_untracked().trim().to_owned();
                // Empty: the first published TCP port.
                let port = if port.is_empty() {
                    ports
                        .iter()
                        .find(|p| p.protocol == PortProtocol::Tcp)
                        .map(|p| p.container_port)
                        .unwrap_or(0)
                } else {
                    port.parse().unwrap_or(0)
                };
                HealthProbe::Http {
                    path: self.path.get_untracked().trim().to_owned(),
                    port,
                }
            }
            "exec" => HealthProbe::Exec {
                command: self
                    .command
                    .get_untracked()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
            },
            _ => return Ok(None),
        };
        let number = |field: &str, s: RwSignal<String>| {
            s.get_untracked().trim().parse::<u32>().map_err(|_| {
                ApiError::invalid(
                    &format!("container.health_check.{field}"),
                    "must be a whole number",
                )
            })
        };
        Ok(Some(HealthCheck {
            probe,
            interval_secs: number("interval_secs", self.interval)?,
            timeout_secs: number("timeout_secs", self.timeout)?,
            retries: number("retries", self.retries)?,
            start_period_secs: number("start_period_secs", self.start)?,
        }))
    }
}

impl ServiceEditor {
    fn new(service: Option<&Service>) -> Self {
        let text = |f: fn(&Service) -> String| RwSignal::new(service.map(f).unwrap_or_default());
        Self {
            id: service.map(|s| s.id),
            cluster: text(|s| s.cluster_id.to_string()),
            name: text(|s| s.name.clone()),
            description: text(|s| s.description.clone()),
            service_type: text(|s| s.service_type.clone()),
            image: text(|s| s.image.clone()),
            ports: text(|s| ports_text(&s.container.ports)),
            volumes: text(|s| volumes_text(&s.container.volumes)),
            env: text(|s| {
                s.container
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect()
            }),
            restart: RwSignal::new(
                restart_name(
                    service
                        .map(|s| s.container.restart_policy)
                        .unwrap_or_default(),
                )
                .to_owned(),
            ),
            cpu: text(|s| {
                s.container
                    .cpu_limit
                    .map(|c| c.to_string())
                    .unwrap_or_default()
            }),
            memory: text(|s| {
                s.container
                    .memory_limit_mb
                    .map(|m| m.to_string())
                    .unwrap_or_default()
            }),
            command: text(|s| s.container.command.join(" ")),
            args: text(|s| s.container.args.join(" ")),
            health: HealthEditor::new(service.and_then(|s| s.container.health_check.as_ref())),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<ServiceInput, ApiError> {
        let given = |s: RwSignal<String>| {
            let text = s.get_untracked().trim().to_owned();
            (!text.is_empty()).then_some(text)
        };
        let cpu = given(self.cpu)
            .map(|c| {
                c.parse::<f64>().map_err(|_| {
                    ApiError::invalid("container.cpu_limit", "must be a number of cores, e.g. 0.5")
                })
            })
            .transpose()?;
        let memory = given(self.memory)
            .map(|m| {
                m.parse::<u64>().map_err(|_| {
                    ApiError::invalid("container.memory_limit_mb", "must be whole MiB")
                })
            })
            .transpose()?;
        let words = |s: String| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let ports = parse_ports(&self.ports.get_untracked())?;
        let health_check = self.health.input(&ports)?;
        Ok(ServiceInput {
            cluster_id: self
                .cluster
                .get_untracked()
                .parse()
                .map_err(|_| ApiError::invalid("cluster_id", "choose a cluster"))?,
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            service_type: self.service_type.get_untracked().trim().to_owned(),
            image: self.image.get_untracked().trim().to_owned(),
            container: ContainerSpec {
                ports,
                env: parse_env(&self.env.get_untracked())?,
                volumes: parse_volumes(&self.volumes.get_untracked())?,
                restart_policy: serde_json::from_value(serde_json::Value::String(
                    self.restart.get_untracked(),
                ))
                .unwrap_or_default(),
                cpu_limit: cpu,
                memory_limit_mb: memory,
                command: words(self.command.get_untracked()),
                args: words(self.args.get_untracked()),
                health_check,
            },
        })
    }
}

/// The pool being created or edited.
#[derive(Debug, Clone, Copy)]
struct PoolEditor {
    id: Option<i64>,
    service_id: i64,
    name: RwSignal<String>,
    description: RwSignal<String>,
    template: RwSignal<String>,
    expand: RwSignal<String>,
    shrink: RwSignal<String>,
    deploy: RwSignal<String>,
    binding: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl PoolEditor {
    fn new(service_id: i64, pool: Option<&Pool>) -> Self {
        let text = |f: fn(&Pool) -> String| RwSignal::new(pool.map(f).unwrap_or_default());
        Self {
            id: pool.map(|p| p.id),
            service_id,
            name: text(|p| p.name.clone()),
            description: text(|p| p.description.clone()),
            template: text(|p| p.template_id.map(|t| t.to_string()).unwrap_or_default()),
            expand: text(|p| p.expand_template_id.to_string()),
            shrink: text(|p| p.shrink_template_id.to_string()),
            deploy: text(|p| p.deploy_template_id.to_string()),
            binding: text(|p| p.binding_id.map(|b| b.to_string()).unwrap_or_default()),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> PoolInput {
        let id = |s: RwSignal<String>| s.get_untracked().parse().ok();
        PoolInput {
            service_id: self.service_id,
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            template_id: id(self.template),
            expand_template_id: id(self.expand),
            shrink_template_id: id(self.shrink),
            deploy_template_id: id(self.deploy),
            binding_id: id(self.binding),
        }
    }
}

/// A select of the task templates for `purpose`; "" = DCP's seeded default.
#[component]
fn TaskTemplateSelect(
    field: &'static str,
    label: &'static str,
    purpose: TemplatePurpose,
    value: RwSignal<String>,
    templates: Signal<Vec<TaskTemplate>>,
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let id = match purpose {
        TemplatePurpose::Expand => "pool-expand-template",
        TemplatePurpose::Shrink => "pool-shrink-template",
        TemplatePurpose::Deploy | TemplatePurpose::Adhoc => "pool-deploy-template",
    };
    view! {
        <Labelled field id label error>
            <select id=id data-test=id on:change=move |ev| value.set(event_target_value(&ev))>
                <option value="" selected=move || value.get().is_empty()>"Seeded default"</option>
                {move || templates.get().into_iter().filter(|t| t.purpose == purpose).map(|t| {
                    let picked = t.id.to_string();
                    view! { <option value=t.id.to_string() selected=move || value.get() == picked>{t.name.clone()}</option> }
                }).collect_view()}
            </select>
        </Labelled>
    }
}

/// A select of the discovery bindings a pool can register its nodes with;
/// "" = none.
#[component]
pub(crate) fn BindingSelect(
    /// The chosen binding's id, "" for none.
    value: RwSignal<String>,
    /// The choices.
    bindings: Signal<Vec<Binding>>,
    /// The last error; `binding_id`'s shows under the select.
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    view! {
        <Labelled field="binding_id" id="pool-binding" label="Discovery binding" error
            hint="with one, the seeded templates register nodes in its upstream once healthy and drain them before they stop">
            <select id="pool-binding" on:change=move |ev| value.set(event_target_value(&ev))>
                <option value="" selected=move || value.get().is_empty()>"None (not behind a balancer)"</option>
                {move || bindings.get().into_iter().map(|b| {
                    let picked = b.id.to_string();
                    view! { <option value=b.id.to_string() selected=move || value.get() == picked>{b.name.clone()}</option> }
                }).collect_view()}
            </select>
        </Labelled>
    }
}

/// Services and their pools.
#[component]
pub(crate) fn ServicesPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let load_error = RwSignal::new(None::<ApiError>);
    let listing = LocalResource::new(move || {
        reload.track();
        async move {
            let services = api::services(None).await?;
            let pools = api::pools(None).await?;
            let clusters = api::clusters(1, PageQuery::MAX_PER_PAGE, "").await?;
            Ok::<_, ApiError>((services.items, pools.items, clusters.items))
        }
    });
    let machine_templates = LocalResource::new(api::templates);
    let task_templates = LocalResource::new(api::task_templates);
    let bindings = LocalResource::new(api::bindings);
    let task_list = Signal::derive(move || {
        task_templates
            .get()
            .and_then(Result::ok)
            .unwrap_or_default()
    });
    Effect::new(move || {
        load_error.set(match listing.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    let data = move || listing.get().and_then(Result::ok);
    let clusters = Signal::derive(move || data().map(|d| d.2).unwrap_or_default());
    let service_editor = RwSignal::new(None::<ServiceEditor>);
    // The images projects built, offered by the service form; read when
    // it opens.
    let project_images = LocalResource::new(move || {
        let editing = service_editor.with(Option::is_some);
        async move {
            if editing {
                api::project_images().await
            } else {
                Vec::new()
            }
        }
    });
    let pool_editor = RwSignal::new(None::<PoolEditor>);
    let deleting_service = RwSignal::new(None::<Doomed>);
    let deleting_pool = RwSignal::new(None::<Doomed>);
    let bump = move || reload.update(|n| *n += 1);
    let rolling_back = RwSignal::new(None::<Rollback>);

    let save_service = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = service_editor.get_untracked() else {
            return;
        };
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return show_form_error(ed.error, e),
        };
        spawn_local(async move {
            match api::save_service(ed.id, &input).await {
                Ok(_) => {
                    service_editor.set(None);
                    bump();
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    let save_pool = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = pool_editor.get_untracked() else {
            return;
        };
        spawn_local(async move {
            match api::save_pool(ed.id, &ed.input()).await {
                Ok(_) => {
                    pool_editor.set(None);
                    bump();
                }
                Err(e) => ed.error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="page-head">
            <h1>"Services"</h1>
            <p class="subtitle">"A service is an image with its container spec; its pools are the servers that run it."</p>
        </div>
        <div class="toolbar">
            <button id="new-service" class="primary" on:click=move |_| service_editor.set(Some(ServiceEditor::new(None)))>
                "New service"
            </button>
            <A href="/tasks">"Tasks"</A>
            <A href="/task-templates">"Task templates"</A>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="services-table" class="table">
            <thead><tr><th>"Service"</th><th>"Cluster"</th><th>"Image"</th><th>"Ports"</th><th>"Pools"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || data().map(|(services, pools, clusters)| services.into_iter().map(|s| {
                    let cluster = clusters.iter().find(|c| c.id == s.cluster_id).map(|c| c.name.clone()).unwrap_or_default();
                    let mine: Vec<Pool> = pools.iter().filter(|p| p.service_id == s.id).cloned().collect();
                    let (for_edit, for_delete, sid) = (s.clone(), s.clone(), s.id);
                    let link_name = s.name.clone();
                    let service_name = s.name.clone();
                    view! {
                        <tr data-name=s.name data-test="service-row">
                            <td class="name"><A href=format!("/services/{}", s.id) attr:data-test="service-link">{link_name}</A><div class="muted">{s.description.clone()}</div></td>
                            <td>{cluster}</td>
                            <td><code>{s.image.clone()}</code></td>
                            <td>{ports_text(&s.container.ports)}</td>
                            <td class="pools">
                                {mine.into_iter().map(|p| view! {
                                    <A href=format!("/pools/{}", p.id) attr:data-test="pool-link" attr:data-name=p.name>
                                        {format!("{} ({} nodes)", p.name, p.nodes)}
                                    </A>
                                    " "
                                }).collect_view()}
                            </td>
                            <td class="actions">
                                <button class="ghost new-pool" data-test="new-pool"
                                    on:click=move |_| pool_editor.set(Some(PoolEditor::new(sid, None)))>"New pool"</button>
                                {s.rollback_tag.clone().map(|tag| {
                                    let label = format!("Roll back to {tag}");
                                    let name = service_name.clone();
                                    view! {
                                        <button class="ghost rollback" data-test="rollback"
                                            title="Deploy this tag on every pool of the service"
                                            on:click=move |_| rolling_back.set(Some(Rollback { id: sid, name: name.clone(), tag: tag.clone() }))>{label}</button>
                                    }
                                })}
                                <button class="ghost edit" on:click=move |_| service_editor.set(Some(ServiceEditor::new(Some(&for_edit))))>"Edit"</button>
                                <button class="ghost danger delete" on:click=move |_| {
                                    deleting_service.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }));
                                }>"Delete"</button>
                            </td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || data().is_some_and(|d| d.0.is_empty())>
            <p class="empty">"No services yet. Make a cluster first, then a service in it."</p>
        </Show>

        {move || service_editor.get().map(|ed| {
            let title = Signal::derive(move || if ed.id.is_some() { "Edit service".to_owned() } else { "New service".to_owned() });
            view! {
                <Modal title on_close=Callback::new(move |()| service_editor.set(None))>
                    <form id="service-form" class="wide" novalidate on:submit=save_service>
                        <ErrorBanner error=ed.error all=true shown=vec!["cluster_id".into(), "name".into(), "image".into(), "description".into(), "service_type".into(), "container.ports".into(), "container.env".into(), "container.volumes".into()]/>
                        <Labelled field="cluster_id" id="service-cluster" label="Cluster" error=ed.error>
                            <select id="service-cluster" on:change=move |ev| ed.cluster.set(event_target_value(&ev))>
                                <option value="" selected=move || ed.cluster.get().is_empty()>"Choose…"</option>
                                {move || clusters.get().into_iter().map(|c: Cluster| {
                                    let picked = c.id.to_string();
                                    view! { <option value=c.id.to_string() selected=move || ed.cluster.get() == picked>{c.name.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <Field field="name" id_prefix="service" label="Name" value=ed.name error=ed.error hint="a-z, 0-9, - and _"/>
                        <Labelled field="image" id="service-image" label="Image" error=ed.error hint="registry/repository:tag, or an image a project built">
                            <input id="service-image" name="image" type="text" autocomplete="off" list="project-images" bind:value=ed.image/>
                            <datalist id="project-images">
                                {move || project_images.get().unwrap_or_default().into_iter().map(|image| view! { <option value=image/> }).collect_view()}
                            </datalist>
                        </Labelled>
                        <Field field="service_type" id_prefix="service" label="Type" value=ed.service_type error=ed.error hint="e.g. web, worker"/>
                        <Field field="description" id_prefix="service" label="Description" value=ed.description error=ed.error/>
                        <Labelled field="container.ports" id="service-ports" label="Ports" error=ed.error hint="host:container, comma-separated; /udp for UDP">
                            <input id="service-ports" type="text" autocomplete="off" bind:value=ed.ports/>
                        </Labelled>
                        <Labelled field="container.env" id="service-env" label="Environment" error=ed.error hint="KEY=value, one per line">
                            <textarea id="service-env" class="code" rows="3" bind:value=ed.env></textarea>
                        </Labelled>
                        <Labelled field="container.volumes" id="service-volumes" label="Volumes" error=ed.error hint="/host/path:/container/path, :ro for read-only; one per line">
                            <textarea id="service-volumes" class="code" rows="2" bind:value=ed.volumes></textarea>
                        </Labelled>
                        <Labelled field="container.restart_policy" id="service-restart" label="Restart" error=ed.error>
                            <select id="service-restart" on:change=move |ev| ed.restart.set(event_target_value(&ev))>
                                {["unless-stopped", "always", "on-failure", "no"].into_iter().map(|p| view! {
                                    <option value=p selected=move || ed.restart.get() == p>{p}</option>
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <Labelled field="container.cpu_limit" id="service-cpu" label="CPU cores" error=ed.error>
                            <input id="service-cpu" type="text" inputmode="decimal" bind:value=ed.cpu/>
                        </Labelled>
                        <Labelled field="container.memory_limit_mb" id="service-memory" label="Memory (MiB)" error=ed.error>
                            <input id="service-memory" type="number" min="6" bind:value=ed.memory/>
                        </Labelled>
                        <Labelled field="container.command" id="service-command" label="Command" error=ed.error hint="replaces the entrypoint; split on spaces">
                            <input id="service-command" type="text" autocomplete="off" bind:value=ed.command/>
                        </Labelled>
                        <Labelled field="container.args" id="service-args" label="Arguments" error=ed.error hint="split on spaces">
                            <input id="service-args" type="text" autocomplete="off" bind:value=ed.args/>
                        </Labelled>
                        <Labelled field="container.health_check" id="service-health" label="Health check" error=ed.error
                            hint="start_service waits until the new container passes it; a deploy stops at the first one that does not">
                            <select id="service-health" on:change=move |ev| ed.health.kind.set(event_target_value(&ev))>
                                {[("none", "None"), ("http", "HTTP GET on the node"), ("exec", "Command in the container")].into_iter().map(|(k, label)| view! {
                                    <option value=k selected=move || ed.health.kind.get() == k>{label}</option>
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <Show when=move || ed.health.kind.get() == "http">
                            <Labelled field="container.health_check.probe.http.path" id="service-health-path" label="Path" error=ed.error hint="2xx or 3xx is healthy">
                                <input id="service-health-path" type="text" autocomplete="off" bind:value=ed.health.path/>
                            </Labelled>
                            <Labelled field="container.health_check.probe.http.port" id="service-health-port" label="Container port" error=ed.error hint="a published TCP port; empty: the first">
                                <input id="service-health-port" type="number" min="1" max="65535" bind:value=ed.health.port/>
                            </Labelled>
                        </Show>
                        <Show when=move || ed.health.kind.get() == "exec">
                            <Labelled field="container.health_check.probe.exec.command" id="service-health-command" label="Command" error=ed.error hint="run with docker exec, no shell; exit 0 is healthy; split on spaces">
                                <input id="service-health-command" type="text" autocomplete="off" bind:value=ed.health.command/>
                            </Labelled>
                        </Show>
                        <Show when=move || ed.health.kind.get() != "none">
                            <div class="row">
                                <Labelled field="container.health_check.interval_secs" id="service-health-interval" label="Every (s)" error=ed.error>
                                    <input id="service-health-interval" type="number" min="1" max="300" bind:value=ed.health.interval/>
                                </Labelled>
                                <Labelled field="container.health_check.timeout_secs" id="service-health-timeout" label="Timeout (s)" error=ed.error>
                                    <input id="service-health-timeout" type="number" min="1" max="60" bind:value=ed.health.timeout/>
                                </Labelled>
                                <Labelled field="container.health_check.retries" id="service-health-retries" label="Failures" error=ed.error hint="in a row">
                                    <input id="service-health-retries" type="number" min="1" max="100" bind:value=ed.health.retries/>
                                </Labelled>
                                <Labelled field="container.health_check.start_period_secs" id="service-health-start" label="Start period (s)" error=ed.error>
                                    <input id="service-health-start" type="number" min="0" max="3600" bind:value=ed.health.start/>
                                </Labelled>
                            </div>
                        </Show>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| service_editor.set(None)>"Cancel"</button>
                            <button id="service-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        {move || pool_editor.get().map(|ed| {
            let title = Signal::derive(move || if ed.id.is_some() { "Edit pool".to_owned() } else { "New pool".to_owned() });
            view! {
                <Modal title on_close=Callback::new(move |()| pool_editor.set(None))>
                    <form id="pool-form" novalidate on:submit=save_pool>
                        <ErrorBanner error=ed.error all=true shown=vec!["name".into(), "template_id".into(), "expand_template_id".into(), "shrink_template_id".into(), "deploy_template_id".into(), "binding_id".into()]/>
                        <Field field="name" id_prefix="pool" label="Name" value=ed.name error=ed.error/>
                        <Field field="description" id_prefix="pool" label="Description" value=ed.description error=ed.error/>
                        <Labelled field="template_id" id="pool-template" label="Machine template" error=ed.error hint="what expand makes new nodes from">
                            <select id="pool-template" on:change=move |ev| ed.template.set(event_target_value(&ev))>
                                <option value="" selected=move || ed.template.get().is_empty()>"None (nodes added by address)"</option>
                                {move || machine_templates.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|t: MachineTemplate| {
                                    let picked = t.id.to_string();
                                    view! { <option value=t.id.to_string() selected=move || ed.template.get() == picked>{t.name.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <BindingSelect value=ed.binding bindings=Signal::derive(move || bindings.get().and_then(Result::ok).unwrap_or_default()) error=ed.error/>
                        <TaskTemplateSelect field="expand_template_id" label="Expand runs" purpose=TemplatePurpose::Expand value=ed.expand templates=task_list error=ed.error/>
                        <TaskTemplateSelect field="shrink_template_id" label="Shrink runs" purpose=TemplatePurpose::Shrink value=ed.shrink templates=task_list error=ed.error/>
                        <TaskTemplateSelect field="deploy_template_id" label="Deploy runs" purpose=TemplatePurpose::Deploy value=ed.deploy templates=task_list error=ed.error/>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| pool_editor.set(None)>"Cancel"</button>
                            <button id="pool-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <RollbackDialog target=rolling_back/>

        <ConfirmDelete noun="service" target=deleting_service delete=api::delete_service
            on_deleted=Callback::new(move |()| bump())/>
        <ConfirmDelete noun="pool" target=deleting_pool delete=api::delete_pool
            on_deleted=Callback::new(move |()| bump())/>
    }
}

/// A rollback being confirmed: of service `id` (`name`) to `tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rollback {
    id: i64,
    name: String,
    tag: String,
}

/// Asks before rolling a service back, then opens the first deploy's page.
#[component]
fn RollbackDialog(target: RwSignal<Option<Rollback>>) -> impl IntoView {
    let error = RwSignal::new(None::<ApiError>);
    let navigate = StoredValue::new_local(use_navigate());
    let close = move || {
        target.set(None);
        error.set(None);
    };
    let confirm = move |_| {
        let Some(r) = target.get_untracked() else {
            return;
        };
        spawn_local(async move {
            match api::rollback_service(r.id, &r.tag).await {
                Ok(done) => {
                    close();
                    if let Some(task) = done.tasks.first() {
                        navigate.with_value(|go| {
                            go(&format!("/tasks/{}", task.id), Default::default())
                        });
                    }
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    move || {
        target.get().map(|r| view! {
            <Modal title=Signal::derive(|| "Roll back".to_owned()) on_close=Callback::new(move |()| close())>
                <div id="rollback-dialog">
                    <ErrorBanner error all=true/>
                    <p>{format!(
                        "Deploy tag {} of {} again on every pool of the service, one node at a time. \
                         Nodes that run it already are checked and left alone.", r.tag, r.name
                    )}</p>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| close()>"Cancel"</button>
                        <button id="rollback-confirm" type="button" class="primary" on:click=confirm>
                            {format!("Roll back to {}", r.tag)}
                        </button>
                    </div>
                </div>
            </Modal>
        })
    }
}

/// One service: its image, its pools with every node's tag, its recent
/// tasks, and a rollback when there is a version to go back to.
#[component]
pub(crate) fn ServicePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let loaded = LocalResource::new(move || {
        let id = id();
        async move {
            let id = id.ok_or_else(|| ApiError::local("no such service"))?;
            let service = api::service(id).await?;
            let pools = api::pools(Some(id)).await?.items;
            let mut nodes = Vec::with_capacity(pools.len());
            for pool in &pools {
                nodes.push(api::pool_nodes(pool.id, 1, PageQuery::MAX_PER_PAGE).await?);
            }
            let tasks = api::tasks(1, TaskScope::Service(id)).await?.items;
            Ok::<_, ApiError>((service, pools, nodes, tasks))
        }
    });
    let error = load_error(loaded);
    let data = move || loaded.get().and_then(Result::ok);
    let rolling_back = RwSignal::new(None::<Rollback>);
    view! {
        <ErrorBanner error all=true/>
        {move || data().map(|(service, pools, nodes, _)| {
            let rollback = service.rollback_tag.clone().map(|tag| {
                let r = Rollback { id: service.id, name: service.name.clone(), tag: tag.clone() };
                view! {
                    <button id="service-rollback" class="ghost" on:click=move |_| rolling_back.set(Some(r.clone()))>
                        {format!("Roll back to {tag}")}
                    </button>
                }
            });
            view! {
                <div class="page-head">
                    <h1 id="service-name">{service.name.clone()}</h1>
                    <p class="subtitle">
                        <A href="/services">"Services"</A>" · "
                        <A href=format!("/clusters/{}", service.cluster_id)>"its cluster"</A>
                        {format!(" · {} · {} pools", service.image, service.pools)}
                    </p>
                </div>
                <div class="toolbar">{rollback}</div>
                {pools.into_iter().zip(nodes).map(|(pool, nodes)| {
                    let link_name = pool.name.clone();
                    view! {
                    <h2><A href=format!("/pools/{}", pool.id)>{link_name}</A>
                        <span class="muted">{format!(" · {} nodes", pool.nodes)}</span></h2>
                    <table class="table" data-test="service-pool" data-name=pool.name>
                        <thead><tr><th>"Node"</th><th>"State"</th><th>"Tag"</th></tr></thead>
                        <tbody>
                            {nodes.items.into_iter().map(|n| view! {
                                <tr data-test="service-node" data-address=n.address>
                                    <td><code>{n.address.clone()}</code></td>
                                    <td><span class="badge">{format!("{:?}", n.state).to_lowercase()}</span></td>
                                    <td class="tag"><code>{n.tag.clone().unwrap_or_else(|| "—".to_owned())}</code></td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }}).collect_view()}
            }
        })}
        <h2>"Recent tasks"</h2>
        <TaskTable tasks=Signal::derive(move || data().map(|d| d.3).unwrap_or_default())/>
        <RollbackDialog target=rolling_back/>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_read_and_print_alike() {
        let ports = parse_ports("8080:80, 53/udp").unwrap();
        assert_eq!(ports[0].host_port, Some(8080));
        assert_eq!(ports[1].protocol, PortProtocol::Udp);
        assert_eq!(ports_text(&ports), "8080:80, 53/udp");
        assert!(parse_ports("http").is_err());
    }

    #[test]
    fn volumes_read_and_print_alike() {
        let volumes = parse_volumes("/srv/data:/data\n/etc/app:/etc/app:ro\n").unwrap();
        assert!(!volumes[0].read_only && volumes[1].read_only);
        assert_eq!(
            volumes_text(&volumes),
            "/srv/data:/data\n/etc/app:/etc/app:ro\n"
        );
        assert!(parse_volumes("/only-one").is_err());
    }
}
