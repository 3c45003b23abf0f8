//! Machine templates (OpenDCP's 机型模板): what a template's machines are
//! made of, chosen from the account's cloud through cascading look-ups
//! (account → region → zone, VPC, image… → subnet), and their quota.

use dcp_api_types::{
    Choice, CommandGroup, DataDisks, DiskSpec, LookupKind, LookupQuery, MachineTemplate,
    NetworkType, PageQuery, TemplateInput, TemplateSpec,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::components::A;
use serde_json::Value;

use crate::{
    api::{self, ApiError},
    components::{
        ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time, show_form_error,
    },
};

/// A labelled control (`children`) with the server's error for `field`
/// under it, for inputs `Field` does not cover (selects, passwords, numbers).
#[component]
pub(crate) fn Labelled(
    /// The API field whose errors show here, e.g. `spec.zone`.
    field: &'static str,
    /// The control's element id, for the label.
    id: &'static str,
    /// The label shown.
    label: &'static str,
    /// The last error.
    error: RwSignal<Option<ApiError>>,
    /// A hint under the control.
    #[prop(optional)]
    hint: &'static str,
    children: Children,
) -> impl IntoView {
    let message = move || error.get().and_then(|e| e.for_field(field));
    view! {
        <div class="field" class:invalid=move || message().is_some()>
            <label for=id>{label}</label>
            {children()}
            {move || message().map(|m| view! { <p class="field-error" data-field=field>{m}</p> })}
            {(!hint.is_empty()).then(|| view! { <p class="hint">{hint}</p> })}
        </div>
    }
}

/// What a look-up has for its select.
#[derive(Debug, Clone, PartialEq)]
enum Choices {
    /// Not asked: what must be chosen first.
    Waiting(&'static str),
    /// Asked; no answer yet.
    Loading,
    /// The cloud's choices.
    Ready(Vec<Choice>),
    /// The server's message (a 502 names the cloud's code and request id).
    Failed(String),
}

/// One look-up of the form: its choices and a counter that asks again.
#[derive(Debug, Clone, Copy)]
struct Lookup {
    kind: LookupKind,
    choices: RwSignal<Choices>,
    retry: RwSignal<u32>,
}

/// What a look-up asks: the account and the query, or what is missing.
type Wanted = Result<(i64, LookupQuery, u32), &'static str>;

impl Lookup {
    /// Runs `kind` whenever the account or `query` changes; `query` answers
    /// what must be chosen first while it cannot be asked. A late answer to
    /// an older question is dropped.
    fn new<A, Q>(kind: LookupKind, account: A, query: Q) -> Self
    where
        A: Fn() -> Option<i64> + 'static,
        Q: Fn() -> Result<LookupQuery, &'static str> + 'static,
    {
        let choices = RwSignal::new(Choices::Waiting(""));
        let retry = RwSignal::new(0_u32);
        let asked = StoredValue::new(0_u32);
        Effect::new(move |previous: Option<Wanted>| {
            let attempt = retry.get();
            let wanted: Wanted = account()
                .ok_or("choose an account first")
                .and_then(|a| query().map(|q| (a, q, attempt)));
            if previous.as_ref() == Some(&wanted) {
                return wanted;
            }
            asked.update_value(|n| *n += 1);
            let generation = asked.get_value();
            match &wanted {
                Err(why) => choices.set(Choices::Waiting(why)),
                Ok((account, query, _)) => {
                    let (account, query) = (*account, query.clone());
                    choices.set(Choices::Loading);
                    spawn_local(async move {
                        let result = api::lookup(account, kind, &query).await;
                        if asked.try_get_value() == Some(generation) {
                            choices.set(match result {
                                Ok(list) => Choices::Ready(list),
                                Err(e) => Choices::Failed(e.message()),
                            });
                        }
                    });
                }
            }
            wanted
        });
        Self {
            kind,
            choices,
            retry,
        }
    }
}

/// A choice's extra facts as "cpu 2, memory_gib 8".
fn details_text(details: &Value) -> String {
    details
        .as_object()
        .map(|facts| {
            facts
                .iter()
                .filter_map(|(key, value)| match value {
                    Value::String(s) => Some(format!("{key} {s}")),
                    Value::Number(n) => Some(format!("{key} {n}")),
                    Value::Bool(b) => Some(format!("{key} {b}")),
                    Value::Null | Value::Array(_) | Value::Object(_) => None,
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// "name (id)", or the id alone when the name adds nothing; instance types
/// add their facts, which are what one picks them by.
fn choice_label(kind: LookupKind, choice: &Choice) -> String {
    let mut label = if choice.name.is_empty() || choice.name == choice.id {
        choice.id.clone()
    } else {
        format!("{} ({})", choice.name, choice.id)
    };
    if kind == LookupKind::InstanceTypes {
        let facts = details_text(&choice.details);
        if !facts.is_empty() {
            label.push_str(&format!(" — {facts}"));
        }
    }
    label
}

/// "loading…", what to choose first, or the look-up's error with a retry
/// button, beside its select.
#[component]
fn LookupStatus(lookup: Lookup) -> impl IntoView {
    let kind = lookup.kind.as_str();
    move || {
        match lookup.choices.get() {
        Choices::Loading => Some(
            view! { <span class="lookup-status" data-test="lookup-loading" data-lookup=kind>"loading…"</span> }
                .into_any(),
        ),
        Choices::Failed(message) => Some(
            view! {
                <p class="lookup-error" data-test="lookup-error" data-lookup=kind>
                    {message}
                    " "
                    <button type="button" class="ghost retry" data-test="lookup-retry"
                        on:click=move |_| lookup.retry.update(|n| *n += 1)>"Retry"</button>
                </p>
            }
            .into_any(),
        ),
        Choices::Ready(list) if list.is_empty() => Some(
            view! { <span class="lookup-status" data-lookup=kind>"none offered"</span> }.into_any(),
        ),
        Choices::Waiting(_) | Choices::Ready(_) => None,
    }
    }
}

/// A select filled by a look-up. When the look-up fails, a text input
/// takes its place so the id can still be typed.
#[component]
fn LookupSelect(
    /// The API field whose errors show here, e.g. `spec.zone`.
    field: &'static str,
    /// The element id (and `data-test`).
    id: &'static str,
    /// The label shown.
    label: &'static str,
    /// The chosen id, two-way bound.
    value: RwSignal<String>,
    /// Where the choices come from.
    lookup: Lookup,
    /// The last error from the server.
    error: RwSignal<Option<ApiError>>,
    /// Called after the user picks (clears what depends on this choice).
    #[prop(optional)]
    on_pick: Option<Callback<()>>,
    /// The empty choice, for optional fields.
    #[prop(optional)]
    none: Option<&'static str>,
) -> impl IntoView {
    let kind = lookup.kind;
    let message = move || error.get().and_then(|e| e.for_field(field));
    let pick = move |ev| {
        value.set(event_target_value(&ev));
        if let Some(on_pick) = on_pick {
            on_pick.run(());
        }
    };
    let control = move || {
        let state = lookup.choices.get();
        if matches!(state, Choices::Failed(_)) {
            // Taken on change, not per keystroke: what depends on it looks up again.
            return view! {
                <input id=id data-test=id type="text" autocomplete="off" placeholder="type the id"
                    prop:value=move || value.get() on:change=pick/>
            }
            .into_any();
        }
        let waiting = matches!(state, Choices::Waiting(_));
        let first = match &state {
            Choices::Waiting(why) => (*why).to_owned(),
            Choices::Loading => "loading…".to_owned(),
            Choices::Ready(_) | Choices::Failed(_) => none.unwrap_or("Choose…").to_owned(),
        };
        let list = match state {
            Choices::Ready(list) => list,
            Choices::Waiting(_) | Choices::Loading | Choices::Failed(_) => Vec::new(),
        };
        // A stored value the cloud no longer offers (or not yet) stays visible.
        let current = value.get_untracked();
        let missing = (!current.is_empty() && !list.iter().any(|c| c.id == current)).then(|| {
            let shown = current.clone();
            view! { <option value=current.clone() selected=move || value.get() == shown>{current.clone()}</option> }
        });
        view! {
            <select id=id data-test=id disabled=waiting on:change=pick>
                <option value="" selected=move || value.get().is_empty()>{first}</option>
                {missing}
                {list.into_iter().map(|c| {
                    let picked = c.id.clone();
                    view! {
                        <option value=c.id.clone() title=details_text(&c.details)
                            selected=move || value.get() == picked>{choice_label(kind, &c)}</option>
                    }
                }).collect_view()}
            </select>
        }
        .into_any()
    };
    view! {
        <div class="field lookup" class:invalid=move || message().is_some()>
            <label for=id>{label}</label>
            <div class="lookup-control">{control}<LookupStatus lookup/></div>
            {move || message().map(|m| view! { <p class="field-error" data-field=field>{m}</p> })}
        </div>
    }
}

/// The charge-type options of `kind` (`instance` or `internet`) the cloud
/// lists, or the usual ones while it lists none.
fn charge_options(choices: &Choices, kind: &str, usual: &[&str]) -> Vec<(String, String)> {
    let listed: Vec<(String, String)> = match choices {
        Choices::Ready(list) => list
            .iter()
            .filter(|c| c.details.get("kind").and_then(Value::as_str) == Some(kind))
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect(),
        Choices::Waiting(_) | Choices::Loading | Choices::Failed(_) => Vec::new(),
    };
    if listed.is_empty() {
        usual
            .iter()
            .map(|u| ((*u).to_owned(), (*u).to_owned()))
            .collect()
    } else {
        listed
    }
}

/// A charge-type select: the cloud's list, or the usual values meanwhile.
#[component]
fn ChargeSelect(
    field: &'static str,
    id: &'static str,
    label: &'static str,
    value: RwSignal<String>,
    lookup: Lookup,
    /// `instance` or `internet`.
    kind: &'static str,
    usual: &'static [&'static str],
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let message = move || error.get().and_then(|e| e.for_field(field));
    let options = move || {
        let mut options = lookup.choices.with(|c| charge_options(c, kind, usual));
        let current = value.get_untracked();
        if !current.is_empty() && !options.iter().any(|(id, _)| *id == current) {
            options.insert(0, (current.clone(), current));
        }
        options
            .into_iter()
            .map(|(id, name)| {
                let picked = id.clone();
                let text = if name.is_empty() || name == id {
                    id.clone()
                } else {
                    format!("{name} ({id})")
                };
                view! { <option value=id selected=move || value.get() == picked>{text}</option> }
            })
            .collect_view()
    };
    view! {
        <div class="field lookup" class:invalid=move || message().is_some()>
            <label for=id>{label}</label>
            <div class="lookup-control">
                <select id=id data-test=id on:change=move |ev| value.set(event_target_value(&ev))>{options}</select>
                <LookupStatus lookup/>
            </div>
            {move || message().map(|m| view! { <p class="field-error" data-field=field>{m}</p> })}
        </div>
    }
}

/// The template being created (`id: None`) or edited; numbers stay text
/// until sent, so a bad one is reported next to its input.
#[derive(Debug, Clone, Copy)]
struct Editor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    account: RwSignal<String>,
    region: RwSignal<String>,
    zone: RwSignal<String>,
    network: RwSignal<NetworkType>,
    vpc: RwSignal<String>,
    subnet: RwSignal<String>,
    security_group: RwSignal<String>,
    instance_type: RwSignal<String>,
    image: RwSignal<String>,
    system_category: RwSignal<String>,
    system_size: RwSignal<String>,
    data_category: RwSignal<String>,
    data_size: RwSignal<String>,
    data_count: RwSignal<String>,
    internet_charge: RwSignal<String>,
    bandwidth: RwSignal<String>,
    instance_charge: RwSignal<String>,
    login_user: RwSignal<String>,
    init_group: RwSignal<String>,
    init_timeout: RwSignal<String>,
    quota_hours: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

/// The fields the template form shows next to their inputs.
const FORM_FIELDS: [&str; 23] = [
    "name",
    "description",
    "account_id",
    "spec.region",
    "spec.zone",
    "spec.network_type",
    "spec.vpc",
    "spec.subnet",
    "spec.security_group",
    "spec.instance_type",
    "spec.image",
    "spec.system_disk.category",
    "spec.system_disk.size_gb",
    "spec.data_disks.category",
    "spec.data_disks.size_gb",
    "spec.data_disks.count",
    "spec.internet_charge_type",
    "spec.bandwidth_mbps",
    "spec.instance_charge_type",
    "login_user",
    "init_group_id",
    "init_timeout_secs",
    "quota_hours",
];

/// Text as a whole number, or an error on `field`.
pub(crate) fn whole<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::invalid(field, "must be a whole number"))
}

/// Trimmed text, or none when blank.
pub(crate) fn optional(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl Editor {
    fn new(template: Option<&MachineTemplate>) -> Self {
        let text = |f: fn(&MachineTemplate) -> String, default: &str| {
            RwSignal::new(template.map_or_else(|| default.to_owned(), f))
        };
        let spec = |f: fn(&TemplateSpec) -> String, default: &str| {
            RwSignal::new(template.map_or_else(|| default.to_owned(), |t| f(&t.spec)))
        };
        Self {
            id: template.map(|t| t.id),
            name: text(|t| t.name.clone(), ""),
            description: text(|t| t.description.clone(), ""),
            account: text(|t| t.account_id.to_string(), ""),
            region: spec(|s| s.region.clone(), ""),
            zone: spec(|s| s.zone.clone(), ""),
            network: RwSignal::new(template.map(|t| t.spec.network_type).unwrap_or_default()),
            vpc: spec(|s| s.vpc.clone().unwrap_or_default(), ""),
            subnet: spec(|s| s.subnet.clone().unwrap_or_default(), ""),
            security_group: spec(|s| s.security_group.clone().unwrap_or_default(), ""),
            instance_type: spec(|s| s.instance_type.clone(), ""),
            image: spec(|s| s.image.clone(), ""),
            system_category: spec(|s| s.system_disk.category.clone(), ""),
            system_size: spec(|s| s.system_disk.size_gb.to_string(), "40"),
            data_category: spec(
                |s| {
                    s.data_disks
                        .as_ref()
                        .map(|d| d.category.clone())
                        .unwrap_or_default()
                },
                "",
            ),
            data_size: spec(
                |s| {
                    s.data_disks
                        .as_ref()
                        .map_or_else(|| "100".to_owned(), |d| d.size_gb.to_string())
                },
                "100",
            ),
            data_count: spec(
                |s| {
                    s.data_disks
                        .as_ref()
                        .map_or_else(|| "0".to_owned(), |d| d.count.to_string())
                },
                "0",
            ),
            internet_charge: spec(|s| s.internet_charge_type.clone(), "PayByTraffic"),
            bandwidth: spec(|s| s.bandwidth_mbps.to_string(), "5"),
            instance_charge: spec(|s| s.instance_charge_type.clone(), "PostPaid"),
            login_user: text(|t| t.login_user.clone(), "root"),
            init_group: text(
                |t| t.init_group_id.map(|g| g.to_string()).unwrap_or_default(),
                "",
            ),
            init_timeout: text(|t| t.init_timeout_secs.to_string(), "600"),
            quota_hours: text(|t| t.quota_hours.to_string(), "100"),
            error: RwSignal::new(None),
        }
    }

    /// A new account: every cloud choice starts over.
    fn account_changed(&self) {
        self.region.set(String::new());
        self.region_changed();
    }

    /// A new region: what lives in a region starts over.
    fn region_changed(&self) {
        for s in [self.zone, self.vpc, self.image, self.security_group] {
            s.set(String::new());
        }
        self.zone_changed();
    }

    /// A new zone: what depends on the zone starts over.
    fn zone_changed(&self) {
        for s in [
            self.subnet,
            self.instance_type,
            self.system_category,
            self.data_category,
        ] {
            s.set(String::new());
        }
    }

    /// A new VPC: its subnets and security groups start over.
    fn vpc_changed(&self) {
        self.subnet.set(String::new());
        self.security_group.set(String::new());
    }

    fn input(&self) -> Result<TemplateInput, ApiError> {
        let account_id = self
            .account
            .get_untracked()
            .parse::<i64>()
            .map_err(|_| ApiError::invalid("account_id", "choose an account"))?;
        let network_type = self.network.get_untracked();
        let vpc_network = network_type == NetworkType::Vpc;
        let count: u32 = whole("spec.data_disks.count", &self.data_count.get_untracked())?;
        let data_disks = if count == 0 {
            None
        } else {
            Some(DataDisks {
                category: self.data_category.get_untracked(),
                size_gb: whole("spec.data_disks.size_gb", &self.data_size.get_untracked())?,
                count,
            })
        };
        let timeout = self.init_timeout.get_untracked();
        Ok(TemplateInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            account_id,
            spec: TemplateSpec {
                region: self.region.get_untracked().trim().to_owned(),
                zone: self.zone.get_untracked().trim().to_owned(),
                network_type,
                vpc: optional(&self.vpc.get_untracked()).filter(|_| vpc_network),
                subnet: optional(&self.subnet.get_untracked()).filter(|_| vpc_network),
                security_group: optional(&self.security_group.get_untracked()),
                instance_type: self.instance_type.get_untracked().trim().to_owned(),
                image: self.image.get_untracked().trim().to_owned(),
                system_disk: DiskSpec {
                    category: self.system_category.get_untracked(),
                    size_gb: whole(
                        "spec.system_disk.size_gb",
                        &self.system_size.get_untracked(),
                    )?,
                },
                data_disks,
                internet_charge_type: self.internet_charge.get_untracked(),
                bandwidth_mbps: whole("spec.bandwidth_mbps", &self.bandwidth.get_untracked())?,
                instance_charge_type: self.instance_charge.get_untracked(),
            },
            login_user: optional(&self.login_user.get_untracked()),
            init_group_id: self.init_group.get_untracked().parse().ok(),
            init_timeout_secs: if timeout.trim().is_empty() {
                None
            } else {
                Some(whole("init_timeout_secs", &timeout)?)
            },
            quota_hours: whole("quota_hours", &self.quota_hours.get_untracked())?,
        })
    }
}

/// "12 / 100 h".
fn quota_text(t: &MachineTemplate) -> String {
    format!("{} / {} h", t.used_hours, t.quota_hours)
}

/// Lists machine templates and edits them through the REST API.
#[component]
pub(crate) fn TemplatesPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::templates_page(page.get(), PageQuery::DEFAULT_PER_PAGE)
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let rows = move || current.get().map(|p| p.items).unwrap_or_default();
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));

    let editor = RwSignal::new(None::<Editor>);
    let deleting = RwSignal::new(None::<Doomed>);

    view! {
        <div class="page-head">
            <h1>"Machine templates"</h1>
            <p class="subtitle">
                "What machines are made of: an account's region, zone, network, instance type, image and disks, "
                "with the command group that initializes them and a quota of instance-hours."
            </p>
        </div>
        <div class="toolbar">
            <button id="new-template" data-test="new-template" class="primary"
                on:click=move |_| editor.set(Some(Editor::new(None)))>"New template"</button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="templates-table" class="table">
            <thead>
                <tr>
                    <th>"Name"</th><th>"Account"</th><th>"Region / zone"</th><th>"Instance type"</th>
                    <th>"Image"</th><th>"Quota used"</th><th>"Machines"</th><th>"Changed (UTC)"</th>
                    <th class="actions"></th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=rows
                    key=|t| (t.id, t.updated_at.clone(), t.machines, t.used_hours)
                    children=move |t: MachineTemplate| {
                        let (for_edit, for_delete) = (t.clone(), t.clone());
                        view! {
                            <tr data-name=t.name data-test="template-row">
                                <td class="name">
                                    {t.name.clone()}
                                    <div class="muted">{t.description.clone()}</div>
                                </td>
                                <td>{t.account_name.clone()} <span class="badge">{t.provider.clone()}</span></td>
                                <td>{format!("{} / {}", t.spec.region, t.spec.zone)}</td>
                                <td><code>{t.spec.instance_type.clone()}</code></td>
                                <td class="wrap"><code>{t.spec.image.clone()}</code></td>
                                <td>{quota_text(&t)}</td>
                                <td>
                                    <A href=format!("/machines?template_id={}", t.id)>{t.machines.to_string()}</A>
                                </td>
                                <td>{short_time(&t.updated_at)}</td>
                                <td class="actions">
                                    <button class="ghost edit" data-test="template-edit"
                                        on:click=move |_| editor.set(Some(Editor::new(Some(&for_edit))))>"Edit"</button>
                                    <button class="ghost danger delete" data-test="template-delete" on:click=move |_| {
                                        deleting.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }));
                                    }>"Delete"</button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.total == 0)>
            <p class="empty">"No machine templates yet. Create one from a cloud account."</p>
        </Show>
        <Pager page=current current=page noun=("template", "templates")/>

        {move || editor.get().map(|ed| {
            let title = Signal::derive(move || {
                if ed.id.is_some() { "Edit machine template".to_owned() } else { "New machine template".to_owned() }
            });
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <TemplateForm ed
                        on_cancel=Callback::new(move |()| editor.set(None))
                        on_saved=Callback::new(move |()| {
                            editor.set(None);
                            reload.update(|n| *n += 1);
                        })/>
                </Modal>
            }
        })}

        <ConfirmDelete noun="template" target=deleting delete=api::delete_template
            note="Machines made from it must be deleted first."
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>
    }
}

/// The template form, its selects filled from the chosen account's cloud.
#[component]
fn TemplateForm(ed: Editor, on_cancel: Callback<()>, on_saved: Callback<()>) -> impl IntoView {
    let accounts = LocalResource::new(api::accounts);
    let groups = LocalResource::new(|| async {
        api::groups(1, PageQuery::MAX_PER_PAGE, "")
            .await
            .map(|p| p.items)
            .unwrap_or_default()
    });

    let account = move || ed.account.get().parse::<i64>().ok();
    let region = move || {
        let region = ed.region.get();
        if region.is_empty() {
            Err("choose a region first")
        } else {
            Ok(LookupQuery {
                region: Some(region),
                ..LookupQuery::default()
            })
        }
    };
    let zone = move || {
        let mut query = region()?;
        let zone = ed.zone.get();
        if zone.is_empty() {
            return Err("choose a zone first");
        }
        query.zone = Some(zone);
        Ok(query)
    };
    let vpc_network = move || ed.network.get() == NetworkType::Vpc;
    let regions = Lookup::new(LookupKind::Regions, account, || Ok(LookupQuery::default()));
    let charges = Lookup::new(LookupKind::ChargeTypes, account, || {
        Ok(LookupQuery::default())
    });
    let zones = Lookup::new(LookupKind::Zones, account, region);
    let images = Lookup::new(LookupKind::Images, account, region);
    let vpcs = Lookup::new(LookupKind::Vpcs, account, move || {
        if vpc_network() {
            region()
        } else {
            Err("classic network: no VPC")
        }
    });
    let security_groups = Lookup::new(LookupKind::SecurityGroups, account, move || {
        let mut query = region()?;
        if vpc_network() {
            let vpc = ed.vpc.get();
            if vpc.is_empty() {
                return Err("choose a VPC first");
            }
            query.vpc = Some(vpc);
        }
        Ok(query)
    });
    let subnets = Lookup::new(LookupKind::Subnets, account, move || {
        if !vpc_network() {
            return Err("classic network: no subnet");
        }
        let mut query = zone()?;
        let vpc = ed.vpc.get();
        if vpc.is_empty() {
            return Err("choose a VPC first");
        }
        query.vpc = Some(vpc);
        Ok(query)
    });
    let instance_types = Lookup::new(LookupKind::InstanceTypes, account, zone);
    let disks = Lookup::new(LookupKind::DiskCategories, account, zone);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return show_form_error(ed.error, e),
        };
        spawn_local(async move {
            match api::save_template(ed.id, &input).await {
                Ok(_) => on_saved.run(()),
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    let shown: Vec<String> = FORM_FIELDS.map(str::to_owned).into();
    let has_data_disks = move || ed.data_count.get() != "0";

    view! {
        <form id="template-form" class="wide" novalidate on:submit=save>
            <ErrorBanner error=ed.error all=true shown/>
            <div class="row">
                <Field field="name" id_prefix="template" label="Name" value=ed.name error=ed.error
                    hint="1–64 characters: a-z, 0-9, - and _"/>
                <Field field="description" id_prefix="template" label="Description" value=ed.description error=ed.error/>
            </div>
            <fieldset class="group">
                <legend>"Where"</legend>
                <div class="row">
                    <Labelled field="account_id" id="template-account" label="Cloud account" error=ed.error>
                        <select id="template-account" data-test="template-account" on:change=move |ev| {
                            ed.account.set(event_target_value(&ev));
                            ed.account_changed();
                        }>
                            <option value="" selected=move || ed.account.get().is_empty()>"Choose…"</option>
                            {move || accounts.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|a| {
                                let id = a.id.to_string();
                                let picked = id.clone();
                                view! {
                                    <option value=id selected=move || ed.account.get() == picked>
                                        {format!("{} ({})", a.name, a.provider)}
                                    </option>
                                }
                            }).collect_view()}
                        </select>
                        {move || accounts.get().and_then(Result::ok).is_some_and(|a| a.is_empty()).then(|| view! {
                            <p class="hint">"No cloud account yet: " <A href="/accounts">"add one"</A> " first."</p>
                        })}
                    </Labelled>
                    <LookupSelect field="spec.region" id="template-region" label="Region" value=ed.region
                        lookup=regions error=ed.error on_pick=Callback::new(move |()| ed.region_changed())/>
                </div>
                <div class="row">
                    <LookupSelect field="spec.zone" id="template-zone" label="Zone" value=ed.zone
                        lookup=zones error=ed.error on_pick=Callback::new(move |()| ed.zone_changed())/>
                    <Labelled field="spec.network_type" id="template-network" label="Network type" error=ed.error>
                        <div class="segmented" id="template-network" role="radiogroup">
                            {[(NetworkType::Vpc, "vpc"), (NetworkType::Classic, "classic")].into_iter().map(|(n, name)| view! {
                                <button type="button" id=format!("network-{name}") data-test=format!("network-{name}")
                                    class:selected=move || ed.network.get() == n
                                    on:click=move |_| {
                                        if ed.network.get_untracked() != n {
                                            ed.network.set(n);
                                            ed.vpc_changed();
                                        }
                                    }>{name}</button>
                            }).collect_view()}
                        </div>
                    </Labelled>
                </div>
                <Show when=vpc_network>
                    <div class="row">
                        <LookupSelect field="spec.vpc" id="template-vpc" label="VPC" value=ed.vpc
                            lookup=vpcs error=ed.error on_pick=Callback::new(move |()| ed.vpc_changed())/>
                        <LookupSelect field="spec.subnet" id="template-subnet" label="Subnet (vswitch)" value=ed.subnet
                            lookup=subnets error=ed.error/>
                    </div>
                </Show>
                <LookupSelect field="spec.security_group" id="template-security-group" label="Security group"
                    value=ed.security_group lookup=security_groups error=ed.error none="None"/>
            </fieldset>
            <fieldset class="group">
                <legend>"What"</legend>
                <div class="row">
                    <LookupSelect field="spec.instance_type" id="template-instance-type" label="Instance type"
                        value=ed.instance_type lookup=instance_types error=ed.error/>
                    <LookupSelect field="spec.image" id="template-image" label="Image" value=ed.image
                        lookup=images error=ed.error/>
                </div>
                <div class="row">
                    <LookupSelect field="spec.system_disk.category" id="template-system-disk-category"
                        label="System disk category" value=ed.system_category lookup=disks error=ed.error/>
                    <Labelled field="spec.system_disk.size_gb" id="template-system-disk-size" label="System disk size (GiB)" error=ed.error>
                        <input id="template-system-disk-size" data-test="template-system-disk-size" type="number"
                            min="1" bind:value=ed.system_size/>
                    </Labelled>
                </div>
                <div class="row3">
                    <Labelled field="spec.data_disks.count" id="template-data-disk-count" label="Data disks" error=ed.error
                        hint="0 = none">
                        <select id="template-data-disk-count" data-test="template-data-disk-count"
                            on:change=move |ev| ed.data_count.set(event_target_value(&ev))>
                            {(0..=4).map(|n| {
                                let n = n.to_string();
                                let picked = n.clone();
                                view! { <option value=n selected=move || ed.data_count.get() == picked>{n.clone()}</option> }
                            }).collect_view()}
                        </select>
                    </Labelled>
                    <Show when=has_data_disks>
                        <LookupSelect field="spec.data_disks.category" id="template-data-disk-category"
                            label="Data disk category" value=ed.data_category lookup=disks error=ed.error/>
                        <Labelled field="spec.data_disks.size_gb" id="template-data-disk-size" label="Size of each (GiB)" error=ed.error>
                            <input id="template-data-disk-size" data-test="template-data-disk-size" type="number"
                                min="1" bind:value=ed.data_size/>
                        </Labelled>
                    </Show>
                </div>
            </fieldset>
            <fieldset class="group">
                <legend>"Billing"</legend>
                <div class="row3">
                    <ChargeSelect field="spec.internet_charge_type" id="template-internet-charge-type"
                        label="Internet charge type" value=ed.internet_charge lookup=charges kind="internet"
                        usual=&["PayByTraffic", "PayByBandwidth"] error=ed.error/>
                    <Labelled field="spec.bandwidth_mbps" id="template-bandwidth" label="Bandwidth (Mbit/s)" error=ed.error
                        hint="1–100 by traffic, 0–100 by bandwidth">
                        <input id="template-bandwidth" data-test="template-bandwidth" type="number" min="0" max="100"
                            bind:value=ed.bandwidth/>
                    </Labelled>
                    <ChargeSelect field="spec.instance_charge_type" id="template-instance-charge-type"
                        label="Instance charge type" value=ed.instance_charge lookup=charges kind="instance"
                        usual=&["PostPaid", "PrePaid"] error=ed.error/>
                </div>
            </fieldset>
            <fieldset class="group">
                <legend>"Initialization and quota"</legend>
                <div class="row">
                    <Labelled field="login_user" id="template-login-user" label="Login user" error=ed.error>
                        <input id="template-login-user" data-test="template-login-user" type="text" autocomplete="off"
                            bind:value=ed.login_user/>
                    </Labelled>
                    <Labelled field="init_group_id" id="template-init-group" label="Init command group" error=ed.error
                        hint="Run over SSH on each new machine.">
                        <select id="template-init-group" data-test="template-init-group"
                            on:change=move |ev| ed.init_group.set(event_target_value(&ev))>
                            <option value="" selected=move || ed.init_group.get().is_empty()>"Server default"</option>
                            {move || groups.get().unwrap_or_default().into_iter().map(|g: CommandGroup| {
                                let id = g.id.to_string();
                                let picked = id.clone();
                                view! { <option value=id selected=move || ed.init_group.get() == picked>{g.name}</option> }
                            }).collect_view()}
                        </select>
                    </Labelled>
                </div>
                <div class="row">
                    <Labelled field="init_timeout_secs" id="template-init-timeout" label="Init timeout (s)" error=ed.error
                        hint="At most 7200.">
                        <input id="template-init-timeout" data-test="template-init-timeout" type="number" min="1" max="7200"
                            bind:value=ed.init_timeout/>
                    </Labelled>
                    <Labelled field="quota_hours" id="template-quota-hours" label="Quota (instance-hours)" error=ed.error>
                        <input id="template-quota-hours" data-test="template-quota-hours" type="number" min="0"
                            bind:value=ed.quota_hours/>
                    </Labelled>
                </div>
            </fieldset>
            <div class="buttons">
                <button type="button" class="ghost cancel" on:click=move |_| on_cancel.run(())>"Cancel"</button>
                <button id="template-save" data-test="template-save" type="submit" class="primary">"Save"</button>
            </div>
        </form>
    }
}
