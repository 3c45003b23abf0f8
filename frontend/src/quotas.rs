//! Quotas: each template's instance-hours granted, used and left, with an
//! inline editor for the grant.

use dcp_api_types::{PageQuery, QuotaInput, QuotaUsage};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};

use crate::api::{self, ApiError};
use crate::components::{ErrorBanner, Pager};

/// The quota being set: which template, the number typed, the last error.
#[derive(Debug, Clone, Copy)]
struct Setting {
    template_id: i64,
    hours: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

/// Every template's quota and usage.
#[component]
pub(crate) fn QuotasPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::quotas(page.get(), PageQuery::DEFAULT_PER_PAGE)
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let rows = move || current.get().map(|p| p.items).unwrap_or_default();
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    let setting = RwSignal::new(None::<Setting>);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(s) = setting.get_untracked() else {
            return;
        };
        let Ok(quota_hours) = s.hours.get_untracked().trim().parse::<i64>() else {
            return s.error.set(Some(ApiError::invalid(
                "quota_hours",
                "must be a whole number",
            )));
        };
        spawn_local(async move {
            match api::set_quota(s.template_id, &QuotaInput { quota_hours }).await {
                Ok(_) => {
                    setting.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => s.error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="page-head">
            <h1>"Quotas"</h1>
            <p class="subtitle">
                "Instance-hours each template may use. A machine's hours are charged when it is released; "
                "creating machines is refused once a template's credit is used up."
            </p>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="quotas-table" class="table">
            <thead>
                <tr>
                    <th>"Template"</th><th>"Granted (h)"</th><th>"Used (h)"</th><th>"Credit (h)"</th>
                    <th>"Live machines"</th><th>"Released"</th><th class="actions"></th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=rows
                    key=|q| (q.template_id, q.template_name.clone(), q.quota_hours, q.used_hours, q.live_machines, q.released_machines)
                    children=move |q: QuotaUsage| {
                        let id = q.template_id;
                        let exhausted = q.credit_hours <= 0;
                        let editing = move || setting.get().filter(|s| s.template_id == id);
                        let granted = q.quota_hours;
                        view! {
                            <tr data-test="quota-row" data-template=q.template_name data-template-id=id.to_string()
                                class:exhausted=exhausted>
                                <td class="name">{q.template_name.clone()}</td>
                                <td>
                                    {move || match editing() {
                                        Some(s) => {
                                            let message = move || {
                                                s.error.get().map(|e| e.for_field("quota_hours").unwrap_or_else(|| e.message()))
                                            };
                                            view! {
                                                <form class="quota-form" data-test="quota-form" novalidate on:submit=save>
                                                    <input type="number" min="0" data-test="quota-input" id="quota-hours"
                                                        bind:value=s.hours/>
                                                    <button type="submit" class="primary" data-test="quota-save">"Save"</button>
                                                    <button type="button" class="ghost" on:click=move |_| setting.set(None)>"Cancel"</button>
                                                    {move || message().map(|m| view! { <p class="field-error" data-field="quota_hours">{m}</p> })}
                                                </form>
                                            }.into_any()
                                        }
                                        None => view! { <span data-test="quota-granted">{granted.to_string()}</span> }.into_any(),
                                    }}
                                </td>
                                <td data-test="quota-used">{q.used_hours.to_string()}</td>
                                <td data-test="quota-credit" class:credit-exhausted=exhausted>
                                    {q.credit_hours.to_string()}
                                    {exhausted.then(|| view! {
                                        <div class="exhausted-note" data-test="quota-exhausted">"exhausted — creating is refused"</div>
                                    })}
                                </td>
                                <td>{q.live_machines.to_string()}</td>
                                <td>{q.released_machines.to_string()}</td>
                                <td class="actions">
                                    <button class="ghost" data-test="set-quota" on:click=move |_| setting.set(Some(Setting {
                                        template_id: id,
                                        hours: RwSignal::new(granted.to_string()),
                                        error: RwSignal::new(None),
                                    }))>"Set quota"</button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.total == 0)>
            <p class="empty">"No templates yet: each machine template has a quota."</p>
        </Show>
        <Pager page=current current=page noun=("template", "templates")/>
    }
}
